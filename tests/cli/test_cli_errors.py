"""Bad invocations: each must print exactly one line naming the problem, exit with status 2, and write no log."""
import glob
import os
import subprocess
import sys

import pytest
import torch

import benchmark
from tests.conftest import ROOT

TINY = "{tiny}"  # replaced by the tiny model fixture (6 layers)
SPEC = ["--generation_strategy", "self_speculative"]

CASES = [
    (["--dataset", "nope"], "--dataset"),
    (["--generation_strategy", "nope"], "--generation_strategy"),
    (SPEC, "--exit_layer"),
    (SPEC + ["--exit_layer", "3", "--num_speculations", "0"], "--num_speculations"),
    (["--sample", "True", "--temperature", "0"], "--temperature"),
    (["--sample", "True", "--top_p", "1.5"], "--top_p"),
    (["--sample", "True", "--top_p", "0"], "--top_p"),
    (["--sample", "True", "--top_k", "-1"], "--top_k"),
    (["--dataset", "custom_jsonl"], "--data_path"),
    (["--dataset", "custom_jsonl", "--data_path", "/nonexistent/file.jsonl"], "--data_path"),
    (["--model", "/nonexistent/model_dir"], "--model"),
    (["--model", "some-org/model-not-in-any-cache"], "--model some-org/model-not-in-any-cache: cannot load"),
    (["--num_samples", "0"], "--num_samples"),
    (["--num_samples", "101"], "--num_samples"),
    (["--num_samples", "-3"], "--num_samples"),
    (["--max_steps", "0"], "--max_steps"),
    (["--max_steps", "abc"], "--max_steps"),
    (["--prune_method", "nope"], "--prune_method"),
    (["--prune_method", "angular"], "--prune_n"),
    (["--model", TINY, "--prune_method", "angular", "--prune_n", "6"], "--prune_n"),
    (["--prune_method", "random", "--dropout_threshold", "1.0"], "--dropout_threshold"),
    (["--prune_method", "random", "--dropout_threshold", "-0.5"], "--dropout_threshold"),
    (["--model", TINY, "--prune_method", "random", "--dropout_threshold", "0.1", "--protected_layers", "99"],
     "--protected_layers"),
    (["--dtype", "float64"], "--dtype"),
    (["--model", TINY] + SPEC + ["--exit_layer", "10", "--num_speculations", "2"], "--exit_layer"),
    (["--model", TINY] + SPEC + ["--exit_layer", "6", "--num_speculations", "2"], "--exit_layer"),
    (["--model", TINY, "--exit_layer", "9"], "--exit_layer"),
    (["--template", "no placeholder here"], "--template"),
    (["--n_shot", "-1"], "--n_shot"),
    (["--n_shot", "1", "--dataset", "human_eval"], "--n_shot"),
    (["--unknown_flag", "1"], "--unknown_flag"),
    (["--split", "dev"], "--split"),
    (["--calibration_dataset", "nope", "--prune_method", "angular", "--prune_n", "1"], "--calibration_dataset 'nope'"),
    (["--calibration_samples", "0"], "--calibration_samples"),
    (["--no_repeat_ngram_size", "0"], "--no_repeat_ngram_size"),
    (["--chat_template", "maybe"], "--chat_template"),
    (["--dataset", "cnn_dm_summarization"], "offline datasets"),
    (["--prune_method", "lowrank"], "--compression_rank"),
    (["--prune_method", "lowrank", "--compression_rank", "0"], "--compression_rank"),
    (["--prune_method", "lowrank", "--compression_ratio", "1.5"], "--compression_ratio"),
    (["--prune_method", "lowrank", "--compression_ratio", "0"], "--compression_ratio"),
    (["--prune_method", "gated", "--skip_threshold", "2"], "--skip_threshold"),
    (["--prune_method", "gated", "--available_compute", "0"], "--available_compute"),
    (["--prune_method", "gated", "--available_compute", "1.5"], "--available_compute"),
    (["--model", TINY, "--prune_method", "gated", "--hot_path", "0", "9"], "--hot_path"),
    (["--prune_method", "gated"] + SPEC + ["--exit_layer", "3", "--num_speculations", "2"], "--prune_method gated"),
    (["--lowrank_method", "qr"], "--lowrank_method"),
    (["--execute_code", "True"], "--execute_code"),
    (["--execution_timeout", "0", "--dataset", "human_eval"], "--execution_timeout"),
    (["--resume", "/nonexistent/run.json"], "--resume"),
    (["--resume", "{tmp}"], "is a directory"),
    (["--num_speculations", "3"], "--num_speculations 3 only applies"),
    (["--prune_method", "lowrank", "--compression_rank", "4", "--save_pruned_model", "/tmp/x"], "--save_pruned_model"),
    (["--linear_kernel", "nope"], "--linear_kernel 'nope' unknown"),
    (["--attention_backend", "nope"], "--attention_backend 'nope' unknown"),
    (["--cuda_graphs", "maybe"], "--cuda_graphs 'maybe' unknown"),
    (["--stand_in", "mlp", "--prune_method", "angular", "--prune_n", "2"], "--stand_in 'mlp' unknown"),
    (["--stand_in", "linear", "--prune_method", "lowrank", "--compression_rank", "4"], "--stand_in linear only applies"),
    (["--prune_method", "angular", "--prune_n", "2", "--stand_in", "linear", "--save_pruned_model", "/tmp/x"],
     "--save_pruned_model"),
    (["--exit_adapter", "mlp", "--exit_layer", "3"], "--exit_adapter 'mlp' unknown"),
    (["--exit_adapter", "linear"], "--exit_adapter needs an exit layer"),
    (SPEC + ["--exit_layer", "3", "--num_speculations", "2", "--draft_confidence", "1.5"], "--draft_confidence"),
    (["--draft_confidence", "0.5"], "--draft_confidence"),
    (["--bootstrap_resamples", "0"], "--bootstrap_resamples must be in [1, 100000], got 0"),
    (["--bootstrap_resamples", "1000001"], "--bootstrap_resamples"),
    (["--bootstrap_resamples", "ten"], "--bootstrap_resamples"),
]


def _materialize(argv, tiny, tmp_path):
    named = {TINY: tiny, "{tmp}": str(tmp_path)}
    return [named.get(a, a) for a in argv] + ["--output_dir", str(tmp_path / "out")]


@pytest.mark.parametrize("argv,flag", CASES, ids=[" ".join(c[0]) for c in CASES])
def test_bad_invocation(argv, flag, tmp_path, tiny_model_dir, capsys):
    args = _materialize(argv, tiny_model_dir, tmp_path)
    assert benchmark.main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert flag in err[0] and err[0].startswith("error: ")
    assert not glob.glob(str(tmp_path / "out" / "benchmark_*"))


def test_empty_custom_dataset(tmp_path, capsys):
    path = tmp_path / "empty.jsonl"
    path.write_text("")
    assert benchmark.main(["--dataset", "custom_jsonl", "--data_path", str(path), "--output_dir", str(tmp_path)]) == 2
    assert "empty" in capsys.readouterr().err


def test_unwritable_output_dir(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert benchmark.main(["--output_dir", str(blocker / "sub")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--output_dir" in err[0]


@pytest.mark.skipif(torch.cuda.is_available(), reason="only meaningful without CUDA")
def test_cuda_requested_without_cuda(tmp_path, tiny_model_dir, capsys):
    assert benchmark.main(["--device", "cuda", "--output_dir", str(tmp_path)]) == 2
    assert "--device cuda" in capsys.readouterr().err
    assert benchmark.main(["--model", tiny_model_dir, "--cuda_graphs", "on", "--output_dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["error: --cuda_graphs on needs a CUDA device"]


@pytest.mark.dist
@pytest.mark.slow
def test_subprocess_error_has_no_traceback(tmp_path):
    proc = subprocess.run([sys.executable, "benchmark.py", "--prune_method", "random", "--dropout_threshold", "2",
                           "--output_dir", str(tmp_path)], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "error: --dropout_threshold must be in [0, 1) for --prune_method random, got 2.0"]
    assert not os.listdir(tmp_path)


@pytest.mark.parametrize("script,argv,expected", [
    ("analyze_logs.py", ["--format", "xyz"], "error: argument --format: invalid choice: 'xyz'"),
    ("analyze_logs.py", ["--bootstrap_resamples", "0"], "error: argument --bootstrap_resamples: must be >= 1, got 0"),
    ("analyze_logs.py", ["results/sweep", "--out", "README.md"], "error: --out README.md: is a file, not a folder"),
    ("bench/speed.py", ["--samples", "0"], "error: argument --samples: must be >= 1, got 0"),
    ("bench/linear_kernels.py", ["--rows", "1", "x"], "error: argument --rows: invalid int value: 'x'"),
    ("bench/lm_eval_speed.py", ["--rounds", "0"], "error: argument --rounds: must be >= 1, got 0"),
])
@pytest.mark.dist
@pytest.mark.slow
def test_other_scripts_reject_bad_flags_in_one_line(script, argv, expected):
    proc = subprocess.run([sys.executable, script, *argv], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(expected), lines
