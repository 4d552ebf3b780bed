import os

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest  # noqa: E402

from tests.helpers import tiny_llama  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="session")
def embedded():
    """The real embedded SmolLM2-135M-Instruct (loaded once per test session)."""
    from layerbench.models.loading import load_model
    return load_model(None, dtype="float32", device="cpu")


@pytest.fixture(scope="session")
def embedded_tokenizer():
    """The embedded model's tokenizer alone (from the converted cache)."""
    from transformers import AutoTokenizer

    from layerbench.models.loading import embedded_model_source
    return AutoTokenizer.from_pretrained(embedded_model_source()[0])


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory, embedded_tokenizer):
    """A tiny random Llama with the real SmolLM2 tokenizer, saved as a normal HF checkpoint (fast CLI runs)."""
    path = tmp_path_factory.mktemp("tiny_llama")
    model = tiny_llama(num_layers=6, vocab=len(embedded_tokenizer))
    model.save_pretrained(path)
    embedded_tokenizer.save_pretrained(path)
    return str(path)
