"""Seed B's example (examples/layer_compression_example.py and run_layer_compression.sh) on a tiny saved model."""
import importlib.util
import os
import subprocess
import sys

import pytest

from layerbench.models.loading import ModelLoadError
from tests.conftest import ROOT

MAX_NEW = 5
# the tiny Llama of tests/helpers.py (hidden 64, 4 heads of 16, 2 KV heads, MLP 128): its seven matrices per layer
DENSE_PER_LAYER = 2 * 64 * 64 + 2 * 32 * 64 + 3 * 128 * 64
RANK_2_PER_LAYER = 2 * ((64 + 64) * 2 + (64 + 32) * 2 + (64 + 128) * 3)


def _example():
    spec = importlib.util.spec_from_file_location("layer_compression_example",
                                                  os.path.join(ROOT, "examples", "layer_compression_example.py"))
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def _table(out: str) -> dict[str, list[str]]:
    rows = [line.strip("|").split("|") for line in out.splitlines() if line.startswith("| ")]
    return {cells[0].strip(): [c.strip() for c in cells[1:]] for cells in rows}


def test_example_factorizes_gates_and_reports_before_and_after(tiny_model_dir, capsys):
    # compute 0.5 of 6 layers leaves a budget of 3 = the hot path {0, 1, 5}: every cold layer is skipped,
    # whatever the temperatures, and the rank becomes round(0.5 * 4) = 2
    assert _example().main(["--model", tiny_model_dir, "--rank", "4", "--threshold", "0.4", "--compute", "0.5",
                            "--max_new_tokens", str(MAX_NEW), "--num_texts", "2"]) == 0
    out = capsys.readouterr().out
    table = _table(out)
    before, after = (int(v) for v in table["parameters"])
    assert before - after == 3 * (DENSE_PER_LAYER - RANK_2_PER_LAYER)
    assert table["layers run (generation)"] == [f"{6 * MAX_NEW}/{6 * MAX_NEW}", f"{3 * MAX_NEW}/{6 * MAX_NEW}"]
    assert "'rank': 2" in out and "skip_ratio: 0.5" in out and f"layers_skipped: {3 * MAX_NEW}" in out
    assert all(float(v) > 0 for v in table["tok/s"] + table["perplexity (2 aclsum refs)"])


@pytest.mark.parametrize("argv, message", [
    (["--compute", "0"], "error: argument --compute: must be in (0, 1], got 0.0"),
    (["--threshold", "2"], "error: argument --threshold: must be in [0, 1], got 2.0"),
    (["--rank", "0"], "error: argument --rank: must be >= 1, got 0"),
])
def test_example_refuses_bad_flags_in_one_line(argv, message, capsys):
    with pytest.raises(SystemExit) as exc:
        _example().main(argv)
    assert exc.value.code == 2 and capsys.readouterr().err.strip() == message


def test_example_unknown_model_is_a_load_error(tmp_path):
    with pytest.raises(ModelLoadError, match="no such directory"):
        _example().main(["--model", str(tmp_path / "missing")])


@pytest.mark.slow
@pytest.mark.dist
def test_shell_script_offline_hub_id_fails_in_one_line():
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHON": sys.executable}
    proc = subprocess.run([os.path.join(ROOT, "run_layer_compression.sh"), "--model", "gpt2", "--rank", "4",
                           "--threshold", "0.4", "--compute", "0.3"], capture_output=True, text=True, env=env,
                          timeout=300)
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.count("\n") == 1 and proc.stderr.startswith("error: --model gpt2: cannot load")


@pytest.mark.slow
@pytest.mark.dist
def test_shell_script_runs_on_a_saved_model(tiny_model_dir):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHON": sys.executable}
    proc = subprocess.run([os.path.join(ROOT, "run_layer_compression.sh"), "--model", tiny_model_dir, "--rank", "4",
                           "--threshold", "0.4", "--compute", "0.3", "--max_new_tokens", "4"],
                          capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert _table(proc.stdout)["layers run (generation)"][0] == "24/24"
