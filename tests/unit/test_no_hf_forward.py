"""Our engine never calls Hugging Face's module forwards, for any supported family: with the forward of every
module class in each family's modeling file (decoder layers, attention, MLPs, norms, rotary embeddings, the
model and the LM wrapper) and HF's caches made to raise, greedy, early-exit and self-speculative decoding still
run and give the tokens they give without the spy."""
import importlib
import inspect

import pytest
from torch import nn
from transformers import cache_utils

from tests.helpers import greedy, prompt_ids, speculative
from tests.unit.test_families import CONFIGS, build

MODELING = {"llama": "llama", "mistral": "mistral", "qwen2": "qwen2", "qwen3": "qwen3", "phi3": "phi3",
            "gemma2": "gemma2", "gpt2": "gpt2"}


def _module_classes(model_type: str) -> list[type]:
    module = importlib.import_module(f"transformers.models.{MODELING[model_type]}.modeling_{MODELING[model_type]}")
    return [c for _, c in inspect.getmembers(module, inspect.isclass)
            if issubclass(c, nn.Module) and c.__module__ == module.__name__ and "forward" in vars(c)]


def _outputs(model):
    prompt = prompt_ids(3, 12, model.config.vocab_size)
    return (greedy(model, prompt, 12).token_ids, greedy(model, prompt, 8, exit_layer=2).token_ids,
            speculative(model, prompt, 12, 2, 2).token_ids)


@pytest.mark.parametrize("name", ["llama", "mistral_window", "qwen2", "qwen3", "phi3", "gemma2_window_softcap",
                                  "gpt2"])
def test_no_hf_module_forward_runs(name, monkeypatch):
    model = build(name)
    expected = _outputs(model)
    classes = _module_classes(CONFIGS[name]().model_type)
    assert any("DecoderLayer" in c.__name__ or c.__name__ == "GPT2Block" for c in classes)
    assert any("Attention" in c.__name__ for c in classes)

    def boom(*a, **k):
        raise AssertionError("Hugging Face's own forward was called")
    for cls in classes:
        monkeypatch.setattr(cls, "forward", boom)
    for cache in (cache_utils.DynamicCache, cache_utils.StaticCache):
        monkeypatch.setattr(cache, "__init__", boom)
    with pytest.raises(AssertionError, match="own forward"):
        model(prompt_ids(3, 4, model.config.vocab_size))  # the spy is armed
    assert _outputs(model) == expected
