"""The end of a benchmark run: the run JSON's `uncertainty` section, the results table with its change against a
matching base run in the same folder, and the one-line summary kept as the last line."""
import copy
import glob
import json
import os

import pytest

import benchmark
from layerbench.analysis.uncertainty import BootstrapConfig
from layerbench.runs.results_table import base_runs, results_table
from layerbench.runs.summary import aggregate, uncertainty

FLAGS = ["--num_samples", "3", "--max_steps", "4", "--bootstrap_resamples", "200", "--seed", "5"]


def _run(capsys, tiny_model_dir, out, *extra):
    assert benchmark.main(["--model", tiny_model_dir, "--output_dir", str(out), *FLAGS, *extra]) == 0
    return capsys.readouterr().out.strip().splitlines()


def _rows(lines):
    return {c[0]: c for c in ([x.strip() for x in line.strip("|").split("|")] for line in lines if line.startswith("| "))}


def test_run_json_uncertainty_and_end_of_run_table(capsys, tiny_model_dir, tmp_path):
    base_lines = _run(capsys, tiny_model_dir, tmp_path)
    [path] = glob.glob(str(tmp_path / "benchmark_*.json"))
    doc = json.load(open(path))
    u = doc["uncertainty"]
    assert (u["resamples"], u["seed"], u["confidence_level"]) == (200, 5, 0.95)
    for name in ("rougeL", "corpus_bleu", "perplexity", "tokens_per_second", "decode_tokens_per_second"):
        e = u["metrics"][name]
        assert e["value"] == pytest.approx(doc["metrics"][name]) and e["n"] == 3
        assert e["ci95"][0] <= e["value"] <= e["ci95"][1] and e["stderr"] >= 0
    assert "num_tokens" not in u["metrics"] and "process_peak_rss_mb" not in u["metrics"]
    assert base_lines[-1].startswith(f"{path}: rouge1=")  # scripts parse the last line
    assert base_lines[0] == "change vs base: this is a base run"
    rows = _rows(base_lines)
    assert rows["metric"] == ["metric", "value", "± stderr", "95% interval", "change vs base [95% interval]"]
    low, high = u["metrics"]["rougeL"]["ci95"]
    assert rows["rougeL"][1:4] == [f"{doc['metrics']['rougeL']:.4g}", f"{u['metrics']['rougeL']['stderr']:.4g}",
                                   f"[{low:.4g}, {high:.4g}]"]

    # a pruned run beside it: every sample 0.1 lower in ROUGE-L and twice as fast
    records = [json.loads(line) for line in open(tmp_path / doc["samples_file"])]
    for r in records:
        r["metrics"]["rougeL"] -= 0.1
        r["total_time"] /= 2
    pruned = copy.deepcopy(doc)
    pruned["prune"]["method"] = pruned["args"]["prune_method"] = "random"
    pruned["metrics"] = aggregate(records)
    pruned["uncertainty"] = uncertainty(records, pruned["metrics"], BootstrapConfig(resamples=200, seed=5))
    pruned_path = str(tmp_path / "pruned.json")
    lines = results_table(pruned, pruned_path, records, BootstrapConfig(resamples=200, seed=5)).splitlines()
    assert lines[0] == f"change vs base: 1 base run(s) in {tmp_path}, paired: 3 ids"
    rows = _rows(lines)
    assert rows["rougeL"][4] == "-0.1 [-0.1, -0.1]" and rows["tokens_per_second"][4] == "x2 [2, 2]"
    assert rows["corpus_bleu"][4] == "+0 [0, 0] (ns)"  # the same predictions

    # a base run without its samples file is named, not paired
    os.remove(tmp_path / doc["samples_file"])
    runs, about = base_runs(pruned, pruned_path)
    assert runs is None
    assert about == f"change vs base: not paired: a matching base run in {tmp_path} has no samples file"
