import os
import sys

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import pytest  # noqa: E402
import torch  # noqa: E402
from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM  # noqa: E402

VOCAB = 101


def tiny_llama(num_layers: int = 6, vocab: int = VOCAB, seed: int = 0, **kw) -> LlamaForCausalLM:
    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=vocab, hidden_size=64, intermediate_size=128, num_hidden_layers=num_layers,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512, **kw)
    return LlamaForCausalLM(cfg).eval()


def tiny_gpt2(num_layers: int = 6, vocab: int = VOCAB, seed: int = 0) -> GPT2LMHeadModel:
    torch.manual_seed(seed)
    cfg = GPT2Config(vocab_size=vocab, n_embd=64, n_layer=num_layers, n_head=4, n_positions=512,
                     bos_token_id=0, eos_token_id=0)
    model = GPT2LMHeadModel(cfg).eval()
    # GPT-2's default init keeps every block close to identity; widen it so layers disagree like a real model
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 2:
                p.normal_(0, 0.2)
    return model


@pytest.fixture(scope="session")
def embedded():
    """The real embedded SmolLM2-135M-Instruct (loaded once per test session)."""
    from model_loading import load_model
    return load_model(None, dtype="float32", device="cpu")


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory, embedded):
    """A tiny random Llama with the real SmolLM2 tokenizer, saved as a normal HF checkpoint (fast CLI runs)."""
    path = tmp_path_factory.mktemp("tiny_llama")
    model = tiny_llama(num_layers=6, vocab=len(embedded.tokenizer))
    model.save_pretrained(path)
    embedded.tokenizer.save_pretrained(path)
    return str(path)
