"""Loading: `--dtype auto` is the checkpoint's stored dtype (as transformers' dtype="auto"; float16 on CPU runs
in float32 with one warning), and a damaged converted-model cache entry (checked against the digests recorded at
conversion) is converted again with one warning."""
import json
import os

import pytest
import torch

import benchmark
from layerbench.models import cache_entry, loading
from layerbench.models.cache_entry import MARKER, file_sha256
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


def _overwrite(path: str, offset: int, data: bytes, keep_mtime: bool = False) -> None:
    """Damage a file in place without changing its size (optionally restoring its mtime, as a careless copy
    tool might)."""
    st = os.stat(path)
    with open(path, "r+b") as f:
        f.seek(offset)
        f.write(data)
    if keep_mtime:
        os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))


def _marker(target: str) -> dict:
    with open(os.path.join(target, MARKER)) as f:
        return json.load(f)


def test_the_conversion_records_every_files_digest_size_and_mtime(fake_gguf):
    target, how = loading.embedded_model_source()
    assert how == "converted from GGUF"
    marker = _marker(target)
    assert marker["version"] == 2
    assert set(marker["files"]) == set(os.listdir(target)) - {MARKER}
    assert {"model.safetensors", "config.json", "tokenizer.json"} <= set(marker["files"])
    for name, recorded in marker["files"].items():
        path = os.path.join(target, name)
        assert recorded == {"size": os.path.getsize(path), "mtime_ns": os.stat(path).st_mtime_ns,
                            "sha256": file_sha256(path)}
    assert loading.embedded_model_source() == (target, "cache") and len(fake_gguf) == 1


@pytest.mark.parametrize("name,offset", [("model.safetensors", -64), ("config.json", 2), ("tokenizer.json", 10)])
def test_same_size_damage_is_rebuilt_with_one_warning(fake_gguf, capsys, name, offset):
    """Bytes overwritten inside the weights (perplexity nan before) or a same-size damaged config or tokenizer
    file (every later run failed before): the changed mtime sends the file to its digest."""
    target, _ = loading.embedded_model_source()
    path = os.path.join(target, name)
    _overwrite(path, offset % os.path.getsize(path), b"\x7f" * 8)
    capsys.readouterr()
    assert loading.embedded_model_source() == (target, "converted from GGUF") and len(fake_gguf) == 2
    assert _warnings(capsys) == [f"warning: the converted embedded model in {target} is damaged or out of date "
                                 f"({name} differs from its SHA-256 at conversion); converting it again"]
    assert loading.embedded_model_source() == (target, "cache")


def test_damage_behind_an_unchanged_mtime_takes_verify_cache(fake_gguf, capsys):
    """The fast path trusts size and mtime; --verify_cache hashes every file."""
    target, _ = loading.embedded_model_source()
    weights = os.path.join(target, "model.safetensors")
    _overwrite(weights, os.path.getsize(weights) - 64, b"\x7f" * 8, keep_mtime=True)
    capsys.readouterr()
    assert loading.embedded_model_source() == (target, "cache") and _warnings(capsys) == []
    assert loading.embedded_model_source(verify=True) == (target, "converted from GGUF") and len(fake_gguf) == 2
    [warning] = _warnings(capsys)
    assert "(model.safetensors differs from its SHA-256 at conversion)" in warning
    assert loading.embedded_model_source(verify=True) == (target, "cache") and len(fake_gguf) == 2


def test_a_touched_file_is_hashed_once_and_its_new_mtime_recorded(fake_gguf, capsys, monkeypatch):
    target, _ = loading.embedded_model_source()
    config = os.path.join(target, "config.json")
    os.utime(config, ns=(0, 10**18))
    hashed = []
    real = cache_entry.file_sha256
    monkeypatch.setattr(cache_entry, "file_sha256", lambda path: hashed.append(os.path.basename(path)) or real(path))
    capsys.readouterr()
    assert loading.embedded_model_source() == (target, "cache") and hashed == ["config.json"]
    assert _marker(target)["files"]["config.json"]["mtime_ns"] == 10**18 and _warnings(capsys) == []
    assert loading.embedded_model_source() == (target, "cache") and hashed == ["config.json"]  # fast path again


@pytest.mark.parametrize("change,problem", [
    (lambda t: os.remove(os.path.join(t, "tokenizer.json")), "tokenizer.json is missing"),
    (lambda t: open(os.path.join(t, "extra.json"), "w").write("{}"), "extra.json was not written by the conversion"),
    (lambda t: os.remove(os.path.join(t, MARKER)), "no completion marker"),
    (lambda t: open(os.path.join(t, MARKER), "w").write('{"files": {"config.json": 2}}'),
     "written before file digests were recorded"),
    (lambda t: os.truncate(os.path.join(t, "model.safetensors"), 100),
     "model.safetensors differs from its SHA-256 at conversion"),
])
def test_a_missing_extra_or_unrecorded_file_means_a_new_conversion(fake_gguf, capsys, change, problem):
    target, _ = loading.embedded_model_source()
    change(target)
    capsys.readouterr()
    assert loading.embedded_model_source() == (target, "converted from GGUF") and len(fake_gguf) == 2
    [warning] = _warnings(capsys)
    assert f"is damaged or out of date ({problem}); converting it again" in warning


def test_a_damaged_entry_that_cannot_be_replaced_is_one_line(fake_gguf, monkeypatch):
    target, _ = loading.embedded_model_source()
    _overwrite(os.path.join(target, "config.json"), 2, b"#")
    monkeypatch.setattr(loading, "discard", lambda d: (_ for _ in ()).throw(PermissionError(13, "Permission denied")))
    with pytest.raises(loading.ModelLoadError, match=r"^the converted embedded model in .* is damaged \(config.json "
                                                     r"differs from its SHA-256 at conversion\) and cannot be removed "
                                                     r"\(Permission denied\); delete it, or set LAYERBENCH_CACHE"):
        loading.embedded_model_source()


def test_verify_cache_runs_through_benchmark(fake_gguf, tmp_path, capsys):
    """--verify_cache reaches the embedded model's cache check; the run converts the damaged entry again and
    goes on."""
    target, _ = loading.embedded_model_source()
    weights = os.path.join(target, "model.safetensors")
    _overwrite(weights, os.path.getsize(weights) - 64, b"\x7f" * 8, keep_mtime=True)
    capsys.readouterr()
    out = tmp_path / "logs"
    assert benchmark.main(["--verify_cache", "--num_samples", "1", "--max_steps", "2", "--perplexity", "False",
                           "--warmup", "False", "--linear_kernel", "torch", "--output_dir", str(out)]) == 0
    assert _warnings(capsys) == [f"warning: the converted embedded model in {target} is damaged or out of date "
                                 f"(model.safetensors differs from its SHA-256 at conversion); converting it again"]
    assert len(fake_gguf) == 2
    [log] = [p for p in os.listdir(out) if p.endswith(".json")]
    with open(out / log) as f:
        doc = json.load(f)
    assert doc["model"]["loaded_from"] == "converted from GGUF" and doc["args"]["verify_cache"] is True


def test_a_truncated_checkpoint_of_ones_own_is_a_one_line_load_error(checkpoint):
    path = checkpoint(torch.float32)
    weights = os.path.join(path, "model.safetensors")
    with open(weights, "r+b") as f:
        f.truncate(os.path.getsize(weights) // 2)
    with pytest.raises(loading.ModelLoadError, match=f"--model {path}: cannot load"):
        loading.load_model(path, "auto", "cpu")
