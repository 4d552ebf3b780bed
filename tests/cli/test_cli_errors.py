"""Bad invocations: each must print exactly one line naming the problem, exit with status 2, and write no log."""
import json
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
    (["--calibration_dataset", "nope", "--prune_method", "angular", "--prune_n", "1"],
     "argument --calibration_dataset: invalid choice: 'nope'"),
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
    (["--num_speculations", "3"], "--num_speculations only applies to --generation_strategy"),
    (["--prune_method", "lowrank", "--compression_rank", "4", "--save_pruned_model", "/tmp/x"], "--save_pruned_model"),
    (["--linear_kernel", "nope"], "argument --linear_kernel: invalid choice: 'nope'"),
    (["--attention_backend", "nope"], "argument --attention_backend: invalid choice: 'nope'"),
    (["--cuda_graphs", "maybe"], "argument --cuda_graphs: invalid choice: 'maybe'"),
    (["--exact", "maybe"], "argument --exact: invalid choice: 'maybe'"),
    (["--compile", "yes"], "argument --compile: invalid choice: 'yes'"),
    (["--prune_method", "gated", "--exact", "on"], "--exact on needs the same layers at every decode step"),
    (["--prune_method", "gated", "--compile", "on"], "--compile on needs the same layers at every decode step"),
    (["--reference", "/nonexistent/run.json"], "--reference /nonexistent/run.json: no such run JSON"),
    (["--stand_in", "mlp", "--prune_method", "angular", "--prune_n", "2"], "argument --stand_in: invalid choice: 'mlp'"),
    (["--stand_in", "linear", "--prune_method", "lowrank", "--compression_rank", "4"],
     "--stand_in only applies to --prune_method angular or random"),
    (["--prune_method", "angular", "--prune_n", "2", "--stand_in", "linear", "--save_pruned_model", "/tmp/x"],
     "--save_pruned_model"),
    (["--exit_adapter", "mlp", "--exit_layer", "3"], "argument --exit_adapter: invalid choice: 'mlp'"),
    (["--exit_adapter", "linear"], "--exit_adapter needs an exit layer"),
    (SPEC + ["--exit_layer", "3", "--num_speculations", "2", "--draft_confidence", "1.5"], "--draft_confidence"),
    (["--draft_confidence", "0.5"], "--draft_confidence"),
    (["--bootstrap_resamples", "0"], "--bootstrap_resamples must be in [1, 100000], got 0"),
    (["--bootstrap_resamples", "1000001"], "--bootstrap_resamples"),
    (["--bootstrap_resamples", "ten"], "--bootstrap_resamples"),
    # issue 21: each of these was a traceback, a late failure or silently accepted
    (["--template", "{input} {other}"], "error: --template: unknown field {other}; only {input} is replaced"),
    (["--model", TINY, "--exit_layer", "6", "--exit_adapter", "linear"],
     "error: --exit_adapter linear needs --exit_layer below the model's 6 layers"),
    (["--save_pruned_model", "{file}"], "error: --save_pruned_model {file}: is a file"),
    (["--save_pruned_model", "{file}/sub/dir"], "error: --save_pruned_model {file}/sub/dir: {file} is a file"),
    (["--output_dir", "{file}/sub"], "error: --output_dir {file}/sub: {file} is a file"),
    (["--sample", "True", "--temperature", "nan"], "error: argument --temperature: must be a finite number, got nan"),
    (["--sample", "True", "--temperature", "inf"], "error: argument --temperature: must be a finite number, got inf"),
    (["--sample", "True", "--temperature", "-0.5"], "error: --temperature must be > 0 when sampling, got -0.5"),
    (["--seed", "99999999999999999999"], "error: --seed must be in [0, 2**32 - 1], got 99999999999999999999"),
    (["--seed", "-1"], "error: --seed must be in [0, 2**32 - 1], got -1"),
    (["--prune_n", "2"], "error: --prune_n only applies to --prune_method angular or block_influence, not base"),
    (["--prune_method", "angular", "--prune_n", "2", "--compression_rank", "4"],
     "error: --compression_rank only applies to --prune_method lowrank, not angular"),
    (["--prune_method", "lowrank", "--compression_rank", "4", "--compression_ratio", "0.5"],
     "error: --compression_rank and --compression_ratio are alternatives; give one"),
    (["--data_path", "{file}"], "error: --data_path only applies to --dataset custom_jsonl, not aclsum_summarization"),
    (["--dataset", "human_eval", "--execute_code", "True", "--execution_timeout", "nan"],
     "error: argument --execution_timeout: must be a finite number, got nan"),
    (["--exit_layer", "-5"], "error: --exit_layer must be -1 (none) or a layer >= 1, got -5"),
    (["--exit_layer", "0"], "error: --exit_layer must be -1 (none) or a layer >= 1, got 0"),
    (["--model", TINY, "--stop_token_ids", "2", "999999"],
     "error: --stop_token_ids 999999 is outside the model's vocabulary of 49152 tokens"),
    (["--stop_token_ids", "-2"], "error: --stop_token_ids must be >= 0, got -2"),
    (["--model", TINY] + SPEC + ["--exit_layer", "3", "--num_speculations", "2", "--draft_vocabulary", "100000",
                                 "--calibration_samples", "2"],
     "error: --draft_vocabulary 100000 exceeds the 258 distinct tokens of the calibration text"),
    (["--n_shot", "1000"], "error: --n_shot 1000 exceeds the 100 samples of aclsum_summarization's train split"),
    # 1200 words and the tokenizer's chat template
    (["--model", TINY, "--dataset", "custom_jsonl", "--data_path", "{long_prompt}", "--num_samples", "2"],
     "error: sample long: its prompt has 1231 tokens, the model's context is 512"),
    (["--dataset", "custom_jsonl", "--data_path", "{null_reference}"],
     "error: --data_path {null_reference}: line 2 field 'response' is null, not a string"),
    (["--model", TINY, "--max_steps", "1000000000"],
     "error: --max_steps 1000000000 exceeds the model's context of 512 tokens"),
    (["--cuda_graphs", "on", "--device", "cpu"], "error: --cuda_graphs on needs a CUDA device, not --device cpu"),
    (["--model", "{empty_dir}"], "error: --model {empty_dir}: not a complete model folder; missing config.json, "
                                 "weights (*.safetensors or pytorch_model*.bin), tokenizer files"),
    (["--model", "{config_only}"], "error: --model {config_only}: not a complete model folder; missing weights "
                                   "(*.safetensors or pytorch_model*.bin), tokenizer files"),
    (["--max_memory", "0=1GiB"], "error: --max_memory only applies with --device_map"),
    (["--device_map", '{"model": "gpu"}'], "is not a device"),
    (["--device_map", '{"": "disk"}'], "offloaded to disk"),
    # issue 29: each of these was a traceback, or accepted and meaningless
    (["--dataset", "human_eval", "--execute_code", "True", "--execution_timeout", "1e12"],
     "error: --execution_timeout must be in (0, 3600] seconds, got 1e+12"),
    (["--temperature", "0.7"], "error: --temperature only applies with --sample True; decoding is greedy without it"),
    (["--top_k", "5"], "error: --top_k only applies with --sample True"),
    (["--top_p", "0.9"], "error: --top_p only applies with --sample True"),  # given, even at its default
    (["--calibration_samples", "4"], "error: --calibration_samples only applies when something reads calibration "
                                     "text (a --prune_method that calibrates, --stand_in, --exit_adapter, "
                                     "--draft_vocabulary, --draft_skip); --prune_method base with these flags "
                                     "reads none"),
    (["--prune_method", "random", "--dropout_threshold", "0.1", "--calibration_dataset", "aclsum_summarization"],
     "error: --calibration_dataset only applies when something reads calibration text"),
    (["--prune_method", "lowrank", "--compression_rank", "4", "--no_calibration_cache"],
     "error: --no_calibration_cache only applies when something reads calibration text"),
    (["--prune_method", "gated", "--calibration_max_length", "64"],
     "error: --calibration_max_length only applies when something reads calibration text"),
    (["--attention_backend", "flash", "--device", "cpu"],
     "error: --attention_backend flash chooses CUDA's SDPA kernels; it does not apply to --device cpu"),
    (["--stop_words", "END", ""], "error: --stop_words: an empty stop word would end every generation"),
    (["--dataset", "custom_jsonl", "--data_path", "{null_reference}", "--split", "test"],
     "error: --split does not apply to --dataset custom_jsonl: the --data_path file is its one split"),
    (["--save_pruned_model", ""], "error: --save_pruned_model must name a folder, got ''"),
    (["--output_dir", " "], "error: --output_dir must name a folder, got ' '"),
    (["--output_dir", "/proc/layerbench_test/sub"],
     "error: --output_dir /proc/layerbench_test/sub: cannot create a folder in /proc"),
    (["--save_pruned_model", "/proc/layerbench_test"],
     "error: --save_pruned_model /proc/layerbench_test: cannot create a folder in /proc"),
    (["--device_map", "auto", "--max_memory", "0=abc"],
     "error: --max_memory 0=abc: not a size; give bytes or a number with a unit, e.g. 20GiB, 500MB"),
    (["--device_map", '{"model": "cuda:x"}'], "error: --device_map: model -> 'cuda:x' is not a device"),
    (["--verify_cache", "--model", TINY],
     "error: --verify_cache checks the embedded model's converted cache; a --model is loaded as it is"),
    (["--dataset", "custom_jsonl", "--data_path", "{surrogate}"],
     "error: --data_path {surrogate}: line 2 field 'prompt' is not valid Unicode text ('\\ud800' at character 1)"),
    (["--dataset", "custom_jsonl", "--data_path", "{surrogate_reference}"],
     "error: --data_path {surrogate_reference}: line 1 field 'response' is not valid Unicode text"),
    (["--dataset", "custom_jsonl", "--data_path", "{empty_prompt}"],
     "error: --data_path {empty_prompt}: line 1 field 'prompt' is empty; a prompt must have text"),
]


def _jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def _placeholders(tiny, tmp_path) -> dict[str, str]:
    """Files and folders the cases name: a plain file, two custom_jsonl files, an empty and a config-only folder."""
    (tmp_path / "file").write_text("x")
    _jsonl(tmp_path / "long.jsonl", [{"id": "short", "prompt": "hi", "response": "ok"},
                                     {"id": "long", "prompt": "word " * 1200, "response": "ok"}])
    _jsonl(tmp_path / "null.jsonl", [{"prompt": "a", "response": "b"}, {"prompt": "c", "response": None}])
    (tmp_path / "surrogate.jsonl").write_text('{"prompt": "ok", "response": "x"}\n'
                                              '{"prompt": "a\\ud800b", "response": "x"}\n')
    (tmp_path / "surrogate_reference.jsonl").write_text('{"prompt": "ok", "response": "\\udc80"}\n')
    _jsonl(tmp_path / "empty_prompt.jsonl", [{"prompt": "", "response": "x"}])
    (tmp_path / "empty_model").mkdir()
    (tmp_path / "config_only").mkdir()
    (tmp_path / "config_only" / "config.json").write_text("{}")
    return {TINY: tiny, "{tmp}": str(tmp_path), "{file}": str(tmp_path / "file"),
            "{long_prompt}": str(tmp_path / "long.jsonl"), "{null_reference}": str(tmp_path / "null.jsonl"),
            "{empty_dir}": str(tmp_path / "empty_model"), "{config_only}": str(tmp_path / "config_only"),
            "{surrogate}": str(tmp_path / "surrogate.jsonl"),
            "{surrogate_reference}": str(tmp_path / "surrogate_reference.jsonl"),
            "{empty_prompt}": str(tmp_path / "empty_prompt.jsonl")}


def _fill(text: str, named: dict[str, str]) -> str:
    for key, value in named.items():
        text = text.replace(key, value)
    return text


def error_lines(err: str) -> list[str]:
    """stderr without the status lines (`loading <model> ... 1.2 s`, `calibration: <product> cached | 1.2 s`)."""
    return [line for line in err.strip().splitlines() if not line.startswith(("loading ", "calibration: "))]


@pytest.mark.parametrize("argv,flag", CASES, ids=[" ".join(c[0]) for c in CASES])
def test_bad_invocation(argv, flag, tmp_path, tiny_model_dir, capsys):
    named = _placeholders(tiny_model_dir, tmp_path)
    args = ["--output_dir", str(tmp_path / "out")] + [_fill(a, named) for a in argv]
    assert benchmark.main(args) == 2
    err = error_lines(capsys.readouterr().err)
    assert len(err) == 1, err
    assert _fill(flag, named) in err[0] and err[0].startswith("error: ")
    assert not (tmp_path / "out").exists()  # a refused run leaves no output folder behind


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


@pytest.mark.skipif(torch.cuda.is_available(), reason="only meaningful without CUDA")
@pytest.mark.parametrize("argv,expected", [
    (["--device_map", '{"": 0}'], "error: --device_map '' -> 0: there is no CUDA device on this machine"),
    (["--device_map", "auto", "--max_memory", "0=1GiB,cpu=4GiB"],
     "error: --max_memory 0=...: there is no CUDA device on this machine"),
    (["--attention_backend", "efficient"], "error: --attention_backend efficient chooses among CUDA's SDPA kernels; "
                                           "this run computes on the CPU (no CUDA device here)"),
])
def test_gpu_flags_without_cuda_are_refused_before_loading(argv, expected, tmp_path, tiny_model_dir, capsys):
    assert benchmark.main(["--model", tiny_model_dir, "--output_dir", str(tmp_path / "out"), *argv]) == 2
    assert capsys.readouterr().err.splitlines() == [expected]  # no `loading ...` line: refused before it
    assert not (tmp_path / "out").exists()


def test_given_flags_that_apply_are_accepted(tmp_path):
    """The refusals above are about flags the configuration would ignore; where they apply they are taken."""
    from layerbench.runs.plan import make_plan
    from layerbench.runs.ranks import DistInfo
    plan = make_plan(["--sample", "--temperature", "0.7", "--top_k", "5", "--top_p", "0.5", "--prune_method",
                      "angular", "--prune_n", "1", "--calibration_samples", "4", "--no_calibration_cache",
                      "--output_dir", str(tmp_path)], DistInfo())
    g, p = plan.args.generation, plan.args.prune
    assert (g.temperature, g.top_k, g.top_p, p.calibration_samples, p.no_calibration_cache) == (0.7, 5, 0.5, 4, True)
    assert plan.args.explicit == {"sample", "temperature", "top_k", "top_p", "prune_method", "prune_n",
                                  "calibration_samples", "no_calibration_cache", "output_dir"}
    for argv in (["--exit_layer", "3", "--exit_adapter", "linear"], ["--prune_method", "lowrank", "--lowrank_method",
                 "asvd", "--compression_rank", "4"], ["--prune_method", "angular", "--prune_n", "1", "--stand_in",
                 "linear"]):
        make_plan([*argv, "--calibration_samples", "4", "--output_dir", str(tmp_path)], DistInfo())
    assert make_plan(["--output_dir", str(tmp_path)], DistInfo()).args.explicit == {"output_dir"}


@pytest.mark.dist
@pytest.mark.slow
def test_every_rank_prints_its_refusal_under_torchrun(tmp_path):
    env = {**os.environ, "PATH": os.path.dirname(sys.executable) + os.pathsep + os.environ["PATH"]}
    proc = subprocess.run(["torchrun", "--standalone", "--nproc_per_node", "2", "benchmark.py", "--temperature",
                           "0.7", "--output_dir", str(tmp_path / "out")], cwd=ROOT, capture_output=True, text=True,
                          timeout=300, env=env)
    assert proc.returncode != 0
    lines = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert lines == ["error: --temperature only applies with --sample True; decoding is greedy without it"] * 2
    assert not (tmp_path / "out").exists()


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
    ("analyze_logs.py", ["results/sweep", "--out", ""], "error: argument --out: must name a folder, got ''"),
    ("analyze_logs.py", ["results/sweep", "--seed", "-1"], "error: argument --seed: must be >= 0, got -1"),
    ("analyze_logs.py", ["--seed", str(2**32)], "error: argument --seed: must be in [0, 2**32 - 1], got 4294967296"),
    ("bench/speed.py", ["--samples", "0"], "error: argument --samples: must be >= 1, got 0"),
    ("bench/linear_kernels.py", ["--rows", "1", "x"], "error: argument --rows: invalid int value: 'x'"),
    ("bench/speed.py", ["--draft_vocabulary", "-1"], "error: argument --draft_vocabulary: must be >= 0, got -1"),
    ("bench/lm_eval_speed.py", ["--rounds", "0"], "error: argument --rounds: must be >= 1, got 0"),
])
@pytest.mark.dist
@pytest.mark.slow
def test_other_scripts_reject_bad_flags_in_one_line(script, argv, expected):
    proc = subprocess.run([sys.executable, script, *argv], cwd=ROOT, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": ROOT})  # this checkout's layerbench, not an installed one
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(expected), lines


@pytest.mark.parametrize("flag", ["--save_pruned_model", "--output_dir"])
def test_unwritable_place_is_refused_before_loading(flag, tmp_path, monkeypatch, capsys):
    """(As root every folder is writable, so the permission answer is what is faked here.)"""
    locked = tmp_path / "locked"
    locked.mkdir()
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda path, mode: False if str(path) == str(locked) else real_access(path, mode))
    argv = ["--output_dir", str(tmp_path / "out"), flag, str(locked / "sub")]
    assert benchmark.main(argv) == 2
    assert capsys.readouterr().err.splitlines() == [f"error: {flag} {locked}/sub: {locked} is not writable"]
    assert not (tmp_path / "out").exists() and not (locked / "sub").exists()
