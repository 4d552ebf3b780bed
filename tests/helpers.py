"""Tiny random models built in-process, and short ways to run the generation strategies in tests."""
from __future__ import annotations

import torch
from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

from layerbench.decoding import STRATEGIES, GenerationConfig, GenerationResult
from layerbench.decoding.sampling import SamplingConfig, StopCondition, TokenChooser
from layerbench.engine.engine import Engine

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


def prompt_ids(seed: int = 1, n: int = 17, vocab: int = VOCAB) -> torch.Tensor:
    return torch.randint(0, vocab, (1, n), generator=torch.Generator().manual_seed(seed))


def engine_of(model_or_engine) -> Engine:
    return model_or_engine if isinstance(model_or_engine, Engine) else Engine(model_or_engine)


def greedy(model_or_engine, prompt: torch.Tensor, max_steps: int, stop: StopCondition | None = None,
           chooser: TokenChooser | None = None, exit_layer: int = -1) -> GenerationResult:
    """Autoregressive decoding (early exit when exit_layer > 0)."""
    return STRATEGIES["autoregressive"].generate(
        engine_of(model_or_engine), prompt, GenerationConfig(max_steps=max_steps, exit_block=exit_layer),
        chooser or TokenChooser(SamplingConfig()), stop or StopCondition())


def speculative(model_or_engine, prompt: torch.Tensor, max_steps: int, exit_layer: int, num_speculations: int,
                stop: StopCondition | None = None, chooser: TokenChooser | None = None,
                draft_confidence: float | None = None) -> GenerationResult:
    config = GenerationConfig(max_steps=max_steps, exit_block=exit_layer, num_speculations=num_speculations,
                              draft_confidence=draft_confidence)
    return STRATEGIES["self_speculative"].generate(engine_of(model_or_engine), prompt, config,
                                                   chooser or TokenChooser(SamplingConfig()), stop or StopCondition())


def hf_greedy(model, prompt: torch.Tensor, max_new_tokens: int, **kw) -> list[int]:
    out = model.generate(prompt, max_new_tokens=max_new_tokens, min_new_tokens=max_new_tokens, do_sample=False,
                         pad_token_id=0, **kw)
    return out[0, prompt.shape[1]:].tolist()
