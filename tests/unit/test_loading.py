"""Loading: `--dtype auto` is the checkpoint's stored dtype (as transformers' dtype="auto"; float16 on CPU runs
in float32 with one warning), and a damaged converted-model cache entry is converted again with one warning."""
import json
import os

import pytest
import torch

import benchmark
from layerbench.models import loading
from layerbench.models.cache_entry import MARKER
from tests.helpers import tiny_llama


@pytest.fixture
def checkpoint(tmp_path, embedded_tokenizer):
    """Save a tiny Llama (with the real tokenizer) in a given dtype; returns its folder."""
    def save(dtype: torch.dtype) -> str:
        path = tmp_path / str(dtype).removeprefix("torch.")
        tiny_llama(num_layers=2, vocab=len(embedded_tokenizer)).to(dtype).save_pretrained(path)
        embedded_tokenizer.save_pretrained(path)
        return str(path)
    return save


def _warnings(capsys) -> list[str]:
    return [line for line in capsys.readouterr().err.splitlines() if line.startswith("warning:")]


def test_auto_uses_the_stored_bfloat16_on_cpu(checkpoint, capsys):
    path = checkpoint(torch.bfloat16)
    capsys.readouterr()
    loaded = loading.load_model(path, "auto", "cpu")
    assert loaded.model.dtype == torch.bfloat16 and loaded.stored_dtype == "bfloat16"
    assert _warnings(capsys) == []
    explicit = loading.load_model(path, "float32", "cpu")
    assert explicit.model.dtype == torch.float32 and explicit.stored_dtype == "bfloat16"


def test_auto_turns_stored_float16_into_float32_on_cpu_with_one_warning(checkpoint, capsys):
    path = checkpoint(torch.float16)
    capsys.readouterr()
    loaded = loading.load_model(path, "auto", "cpu")
    assert loaded.model.dtype == torch.float32 and loaded.stored_dtype == "float16"
    [warning] = _warnings(capsys)
    assert "stored in float16" in warning and "using float32" in warning


def test_the_run_log_records_stored_and_used_dtype(checkpoint, tmp_path):
    path = checkpoint(torch.bfloat16)
    out = tmp_path / "logs"
    assert benchmark.main(["--model", path, "--num_samples", "1", "--max_steps", "2", "--perplexity", "False",
                           "--warmup", "False", "--linear_kernel", "torch", "--output_dir", str(out)]) == 0
    [log] = [p for p in os.listdir(out) if p.endswith(".json")]
    with open(out / log) as f:
        model = json.load(f)["model"]
    assert model["dtype"] == "torch.bfloat16" and model["stored_dtype"] == "bfloat16"


@pytest.fixture
def fake_gguf(tmp_path, monkeypatch, embedded_tokenizer):
    """The embedded-model cache over a stand-in GGUF: the real conversion path, with dequantization replaced by
    a tiny model (counted)."""
    monkeypatch.setenv("LAYERBENCH_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(loading, "embedded_model_dir", lambda: str(tmp_path))
    (tmp_path / loading.EMBEDDED_FILE).write_bytes(b"not really a gguf")
    calls = []

    def dequantize(gguf_dir):
        calls.append(gguf_dir)
        return tiny_llama(num_layers=2, vocab=len(embedded_tokenizer)), embedded_tokenizer
    monkeypatch.setattr(loading, "_dequantize", dequantize)
    return calls


def test_a_truncated_converted_model_is_converted_again_with_one_warning(fake_gguf, capsys):
    target, how = loading.embedded_model_source()
    assert how == "converted from GGUF" and os.path.isfile(os.path.join(target, MARKER))
    assert loading.embedded_model_source() == (target, "cache") and len(fake_gguf) == 1
    weights = os.path.join(target, "model.safetensors")
    with open(weights, "r+b") as f:
        f.truncate(os.path.getsize(weights) // 2)
    capsys.readouterr()
    assert loading.embedded_model_source() == (target, "converted from GGUF") and len(fake_gguf) == 2
    [warning] = _warnings(capsys)
    assert "is damaged (model.safetensors holds" in warning and warning.endswith("converting it again")
    assert loading.load_model(None, "auto", "cpu").model.dtype == torch.float32  # loads, in float32
    assert len(fake_gguf) == 2


def test_an_entry_missing_a_file_or_its_marker_contents_is_damaged(fake_gguf, capsys):
    target, _ = loading.embedded_model_source()
    os.remove(os.path.join(target, "tokenizer.json"))
    capsys.readouterr()
    loading.embedded_model_source()
    [warning] = _warnings(capsys)
    assert "tokenizer.json is missing or changed size" in warning and len(fake_gguf) == 2


def test_an_entry_from_before_the_marker_is_accepted_when_whole_and_then_marked(fake_gguf, capsys):
    target, _ = loading.embedded_model_source()
    os.remove(os.path.join(target, MARKER))
    capsys.readouterr()
    assert loading.embedded_model_source() == (target, "cache") and len(fake_gguf) == 1
    assert os.path.isfile(os.path.join(target, MARKER)) and _warnings(capsys) == []


def test_a_truncated_checkpoint_of_ones_own_is_a_one_line_load_error(checkpoint):
    path = checkpoint(torch.float32)
    weights = os.path.join(path, "model.safetensors")
    with open(weights, "r+b") as f:
        f.truncate(os.path.getsize(weights) // 2)
    with pytest.raises(loading.ModelLoadError, match=f"--model {path}: cannot load"):
        loading.load_model(path, "auto", "cpu")
