import os

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest  # noqa: E402

from tests.helpers import tiny_llama  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="session", autouse=True)
def isolated_cache(tmp_path_factory):
    """Tests keep calibration products and file digests in a cache folder of their own (subprocesses inherit
    it); the converted embedded model is shared with the user's cache through a link, so it is converted once."""
    from layerbench.models.loading import cache_root
    user, previous = cache_root(), os.environ.get("LAYERBENCH_CACHE")
    root = tmp_path_factory.mktemp("layerbench_cache")
    os.makedirs(os.path.join(user, "embedded"), exist_ok=True)
    os.symlink(os.path.join(user, "embedded"), root / "embedded")
    os.environ["LAYERBENCH_CACHE"] = str(root)
    yield str(root)
    if previous is None:
        del os.environ["LAYERBENCH_CACHE"]
    else:
        os.environ["LAYERBENCH_CACHE"] = previous


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
