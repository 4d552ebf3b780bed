import glob
import json
import os
import signal
import subprocess
import sys
import time

import pytest

import benchmark
from layerbench.evaluation import datasets as data
from layerbench.evaluation.code_execution import execute
from tests.conftest import ROOT
from tests.helpers import tiny_gpt2

ENV = {**os.environ, "PATH": os.path.dirname(sys.executable) + os.pathsep + os.environ["PATH"]}


def _doc(out_dir):
    [path] = [p for p in glob.glob(os.path.join(out_dir, "benchmark_*.json"))]
    return path, json.load(open(path))


def _records(out_dir, doc):
    with open(os.path.join(out_dir, doc["samples_file"])) as f:
        return [json.loads(line) for line in f]


SAMPLED = ["--sample", "True", "--temperature", "1.0"]
FAST = ["--linear_kernel", "torch", "--warmup", "False"]  # no kernel timing, no warm-up: in-process runs stay quick


@pytest.mark.dist
@pytest.mark.slow
@pytest.mark.parametrize("decoding", [[], SAMPLED], ids=["greedy", "sampled"])
def test_torchrun_two_ranks_equal_single_process(tmp_path, tiny_model_dir, decoding):
    """Sampled too: a sample's random stream depends on the seed and its id, not on the rank that runs it."""
    args = ["--model", tiny_model_dir, "--num_samples", "5", "--max_steps", "12", *decoding]
    assert benchmark.main(args + ["--output_dir", str(tmp_path / "single")]) == 0
    proc = subprocess.run(["torchrun", "--standalone", "--nproc_per_node", "2", "benchmark.py", *args,
                           "--output_dir", str(tmp_path / "ddp")], cwd=ROOT, capture_output=True, text=True,
                          timeout=300, env=ENV)
    assert proc.returncode == 0, proc.stderr[-3000:]
    _, single = _doc(tmp_path / "single")
    _, ddp = _doc(tmp_path / "ddp")
    assert ddp["complete"] and ddp["environment"]["world_size"] == 2
    assert ddp["dataset"]["sample_ids"] == single["dataset"]["sample_ids"]
    s_rec, d_rec = _records(tmp_path / "single", single), _records(tmp_path / "ddp", ddp)
    assert [r["sample_id"] for r in d_rec] == single["dataset"]["sample_ids"]  # every sample once, in order
    assert [r["prediction"] for r in d_rec] == [r["prediction"] for r in s_rec]
    for key in ("rouge1", "rouge2", "rougeL", "rougeLsum", "corpus_bleu", "exact_match", "edit_distance", "num_tokens",
                "perplexity"):
        assert ddp["metrics"][key] == single["metrics"][key]
    per_rank = ddp["throughput"]["per_rank"]
    assert [t["samples"] for t in per_rank] == [3, 2]
    assert ddp["throughput"]["aggregate_samples_per_second"] > 0
    assert not glob.glob(str(tmp_path / "ddp" / "*rank*"))  # part files merged away


@pytest.mark.dist
@pytest.mark.slow
@pytest.mark.parametrize("decoding", [[], SAMPLED], ids=["greedy", "sampled"])
def test_sigkill_then_resume_equals_uninterrupted_run(tmp_path, tiny_model_dir, decoding, capsys):
    """Also: a second --resume while the run is still going is refused (it holds its lock); the lock file a killed
    run leaves is taken over, and removed when the run ends."""
    args = ["--model", tiny_model_dir, "--num_samples", "6", "--max_steps", "150", "--perplexity", "False", *decoding]
    assert benchmark.main(args + ["--output_dir", str(tmp_path / "full")]) == 0
    _, full = _doc(tmp_path / "full")
    out = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, "benchmark.py", *args, "--output_dir", str(out)], cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=ENV)
    deadline = time.time() + 240
    samples_file = None
    while time.time() < deadline:
        files = glob.glob(str(out / "*_samples.jsonl"))
        if files and sum(1 for _ in open(files[0])) >= 2:
            samples_file = files[0]
            break
        time.sleep(0.005)
    json_path = samples_file[: -len("_samples.jsonl")] + ".json" if samples_file else None
    capsys.readouterr()
    refused = samples_file and benchmark.main(["--resume", json_path] + args) == 2
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert samples_file, "the run never wrote two samples"
    run_id = os.path.basename(json_path)[len("benchmark_"):-len(".json")]
    assert refused and capsys.readouterr().err.splitlines() == [
        f"error: --resume {json_path}: run {run_id} is in use by another process (pid {proc.pid}); one process per "
        f"run at a time"]
    assert os.path.exists(out / f".benchmark_{run_id}.lock")  # left by the killed run, its flock gone with it
    done_before = sum(1 for _ in open(samples_file))
    assert 2 <= done_before < 6, "the run must be killed mid-way"
    with open(samples_file, "a") as f:  # what a kill in the middle of a write leaves behind
        f.write('{"sample_id": "torn')
    json_path, killed = _doc(out)
    assert killed["complete"] is False
    assert benchmark.main(["--resume", json_path] + args + ["--output_dir", str(out)]) == 0
    _, resumed = _doc(out)
    records = _records(out, resumed)
    assert resumed["complete"] and resumed["run_id"] == killed["run_id"]
    assert [r["sample_id"] for r in records] == full["dataset"]["sample_ids"]
    assert [r["prediction"] for r in records] == [r["prediction"] for r in _records(tmp_path / "full", full)]
    for key in ("rouge1", "rouge2", "rougeL", "corpus_bleu", "exact_match", "edit_distance", "num_tokens", "perplexity"):
        assert resumed["metrics"][key] == full["metrics"][key]
    assert resumed["throughput"]["per_rank"][0]["samples"] == 6 - done_before
    assert not os.path.exists(out / f".benchmark_{run_id}.lock")


def test_a_sampled_resume_equals_the_uninterrupted_run(tmp_path, tiny_model_dir):
    """The samples a resumed run still has to do come first in its process; each draws from its own stream (seed,
    sample id), so they draw what they drew in the uninterrupted run."""
    args = ["--model", tiny_model_dir, "--num_samples", "3", "--max_steps", "10", "--perplexity", "False", *FAST,
            *SAMPLED]
    assert benchmark.main(args + ["--output_dir", str(tmp_path / "full")]) == 0
    _, full = _doc(tmp_path / "full")
    expected = [r["prediction"] for r in _records(tmp_path / "full", full)]
    assert len(set(expected)) == 3
    out = tmp_path / "cut"
    assert benchmark.main(args + ["--output_dir", str(out)]) == 0
    json_path, doc = _doc(out)
    samples = out / doc["samples_file"]
    samples.write_text("".join(samples.read_text().splitlines(keepends=True)[:2]))  # as if killed after two
    doc["complete"] = False
    with open(json_path, "w") as f:
        json.dump(doc, f)
    assert benchmark.main(["--resume", json_path] + args) == 0
    _, resumed = _doc(out)
    assert [r["prediction"] for r in _records(out, resumed)] == expected
    assert resumed["throughput"]["per_rank"][0]["samples"] == 1


def test_sample_seeds_depend_on_seed_and_sample_id_only():
    from layerbench.runs.generate import sample_seed
    seeds = {sample_seed(s, i) for s in (0, 42) for i in ("HumanEval/0", "HumanEval/1", "0", "1")}
    assert len(seeds) == 8 and all(0 <= x < 2**63 for x in seeds)
    assert sample_seed(42, "HumanEval/0") == sample_seed(42, "HumanEval/0")


def test_a_second_resume_of_a_run_in_use_is_refused(tmp_path, tiny_model_dir, capsys):
    from layerbench.runs.run_lock import acquire
    args = ["--model", tiny_model_dir, "--num_samples", "2", "--max_steps", "4", *FAST, "--output_dir", str(tmp_path)]
    assert benchmark.main(args) == 0
    json_path, doc = _doc(tmp_path)
    # the run's lock went with it
    assert sorted(os.listdir(tmp_path)) == sorted([os.path.basename(json_path), doc["samples_file"]])
    held = acquire(str(tmp_path), doc["run_id"], "test")  # another process's lock (flock: one per open file)
    capsys.readouterr()
    assert benchmark.main(["--resume", json_path, *args]) == 2
    assert capsys.readouterr().err.splitlines() == [
        f"error: --resume {json_path}: run {doc['run_id']} is in use by another process (pid {os.getpid()}); one "
        f"process per run at a time"]
    held.release()
    assert benchmark.main(["--resume", json_path, *args]) == 0


def test_a_stale_lock_is_taken_over(tmp_path):
    from layerbench.runs.run_lock import acquire, lock_path
    with open(lock_path(str(tmp_path), "r1"), "w") as f:
        f.write("999999999\n")  # a killed run's pid; the kernel dropped its flock
    lock = acquire(str(tmp_path), "r1", "--resume")
    with open(lock.path) as f:
        assert f.read() == f"{os.getpid()}\n"
    lock.release()
    assert os.listdir(tmp_path) == []


def test_resume_into_another_output_dir_is_refused(tmp_path, tiny_model_dir, capsys):
    args = ["--model", tiny_model_dir, "--num_samples", "2", "--max_steps", "4", *FAST]
    assert benchmark.main(args + ["--output_dir", str(tmp_path / "run")]) == 0
    json_path, _ = _doc(tmp_path / "run")
    capsys.readouterr()
    assert benchmark.main(["--resume", json_path, *args, "--output_dir", str(tmp_path / "other")]) == 2
    assert capsys.readouterr().err.splitlines() == [
        f"error: --output_dir {tmp_path / 'other'}: --resume continues the run in its own folder {tmp_path / 'run'}; "
        f"leave --output_dir out or give that folder"]
    assert not (tmp_path / "other").exists()
    assert benchmark.main(["--resume", json_path, *args]) == 0  # without --output_dir: in its own folder


def test_resume_with_different_configuration_is_refused(tmp_path, tiny_model_dir, capsys):
    args = ["--model", tiny_model_dir, "--num_samples", "2", "--max_steps", "4", "--output_dir", str(tmp_path)]
    assert benchmark.main(args) == 0
    json_path, _ = _doc(tmp_path)
    capsys.readouterr()
    assert benchmark.main(["--resume", json_path, *args[:-2], "--max_steps", "5", "--output_dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--max_steps (4 -> 5)" in err[0]
    assert benchmark.main(["--resume", str(tmp_path / "nope.json")] + args) == 2


def test_human_eval_checker_passes_canonical_solution_and_fails_junk():
    _, problems = data.load_split("human_eval", None, data.DatasetOptions())
    assert execute(problems[0], problems[0].reference, 5.0)["passed"] is True
    assert execute(problems[0], "    return None\n", 5.0)["passed"] is False


def test_execute_code_reports_pass_at_1(tmp_path, tiny_model_dir, capsys):
    assert benchmark.main(["--model", tiny_model_dir, "--dataset", "human_eval", "--num_samples", "2",
                           "--max_steps", "8", "--execute_code", "True", "--output_dir", str(tmp_path)]) == 0
    [line] = [line for line in capsys.readouterr().err.splitlines() if "--execute_code" in line]
    _, doc = _doc(tmp_path)
    isolation = doc["code_execution"]["sandbox"]
    if isolation["own_network"] and isolation["read_only"] and isolation["counted"]:
        assert line.startswith("--execute_code: model-written code runs sandboxed (network: none (own network ")
    else:
        assert line.startswith("warning: --execute_code: the sandbox is weaker on this machine (network: ")
    assert isolation["environment"] == "empty" and isolation["limits"]["cpu_seconds"] == 4  # ceil(3.0) + 1
    records = _records(tmp_path, doc)
    assert all("passed" in r and "execution_result" in r for r in records)
    assert doc["metrics"]["pass@1"] == sum(r["passed"] for r in records) / 2


@pytest.mark.dist
@pytest.mark.slow
def test_ctrl_c_writes_what_finished_as_incomplete(tmp_path, tiny_model_dir):
    out = tmp_path / "interrupted"
    proc = subprocess.Popen([sys.executable, "benchmark.py", "--model", tiny_model_dir, "--num_samples", "7",
                             "--max_steps", "200", "--perplexity", "False", "--output_dir", str(out)], cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=ENV, text=True)
    deadline = time.time() + 240
    while time.time() < deadline:
        files = glob.glob(str(out / "*_samples.jsonl"))
        if files and sum(1 for _ in open(files[0])) >= 2:
            break
        time.sleep(0.005)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err[-2000:]
    _, doc = _doc(out)
    records = _records(out, doc)
    assert doc["complete"] is False
    assert 2 <= doc["metrics"]["num_samples"] == len(records) < 7
    assert doc["metrics"]["num_tokens"] == sum(r["num_tokens"] for r in records)


@pytest.fixture(scope="module")
def tiny_gpt2_dir(tmp_path_factory, embedded_tokenizer):
    """GPT-2 with only 64 positions: a prompt that fits but whose generation runs past position 63 makes its rank
    fail (position embedding out of range; a prompt longer than the context is refused before generation)."""
    path = tmp_path_factory.mktemp("tiny_gpt2")
    model = tiny_gpt2(num_layers=2, vocab=len(embedded_tokenizer))
    model.config.n_positions = 64
    model.transformer.wpe = type(model.transformer.wpe)(64, model.config.n_embd)
    model.save_pretrained(path)
    embedded_tokenizer.save_pretrained(path)
    return str(path)


@pytest.mark.dist
@pytest.mark.slow
def test_a_failing_rank_fails_the_run_and_is_named(tmp_path, tiny_gpt2_dir):
    rows = [{"prompt": "short prompt", "response": "x"}, {"prompt": "long " * 60, "response": "y"},
            {"prompt": "short again", "response": "z"}, {"prompt": "fine", "response": "w"}]
    path = tmp_path / "d.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows))
    proc = subprocess.run(["torchrun", "--standalone", "--nproc_per_node", "2", "benchmark.py", "--model", tiny_gpt2_dir,
                           "--dataset", "custom_jsonl", "--data_path", str(path), "--random_shuffle", "False",
                           "--num_samples", "4", "--max_steps", "8", "--chat_template", "off", "--warmup", "False",
                           "--output_dir", str(tmp_path / "out")], cwd=ROOT, capture_output=True, text=True,
                          timeout=300, env=ENV)
    assert proc.returncode != 0
    assert "error: rank 1 failed: IndexError" in proc.stderr
    _, doc = _doc(tmp_path / "out")
    assert doc["complete"] is False
    assert [r["sample_id"] for r in _records(tmp_path / "out", doc)] == ["0", "2"]  # rank 0's samples survive
