import glob
import json
import os
import re
import subprocess
import sys
import time

import pytest

import benchmark
from tests.conftest import ROOT

REQUIRED = {"schema_version", "complete", "args", "environment", "model", "prune", "dataset", "metrics", "samples_file"}
METRICS = {"rouge1", "rouge2", "rougeL", "rougeLsum", "sentence_bleu", "corpus_bleu", "exact_match", "edit_distance",
           "tokens_per_second", "tokens_per_second_mean", "time_per_token", "time_to_first_token", "total_time",
           "num_tokens", "acceptance_rate", "process_peak_rss_mb", "cuda_max_allocated_mb", "perplexity"}


def _run_docs(out_dir):
    paths = [p for p in glob.glob(os.path.join(out_dir, "benchmark_*.json"))]
    return [json.load(open(p)) for p in paths]


def _samples(out_dir, doc):
    with open(os.path.join(out_dir, doc["samples_file"])) as f:
        return [json.loads(line) for line in f]


@pytest.mark.slow
@pytest.mark.dist
def test_default_run_on_embedded_model(tmp_path):
    """The README's main job, shortened: embedded model, aclsum, real metrics."""
    out = tmp_path / "logs"
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "benchmark.py", "--num_samples", "3", "--max_steps", "32",
                           "--output_dir", str(out)], cwd=ROOT, capture_output=True, text=True, timeout=600)
    process_seconds = time.perf_counter() - t0
    assert proc.returncode == 0, proc.stderr[-2000:]
    [doc] = _run_docs(out)
    assert REQUIRED <= doc.keys() and METRICS <= doc["metrics"].keys()
    assert doc["complete"] is True
    assert doc["model"]["name"].startswith("SmolLM2-135M-Instruct")
    assert doc["model"]["num_layers"] == doc["model"]["num_layers_original"] == 30
    assert doc["dataset"]["name"] == "aclsum_summarization" and len(doc["dataset"]["sample_ids"]) == 3
    records = _samples(out, doc)
    assert [r["sample_id"] for r in records] == doc["dataset"]["sample_ids"]
    for key in ("rouge1", "rouge2", "rougeL", "rougeLsum"):
        assert 0 < doc["metrics"][key] <= 1
    assert doc["metrics"]["num_tokens"] == sum(r["num_tokens"] for r in records)
    # generation time is measured inside the loop, wall time around it, process time by this test: each bounds the next
    generation = sum(r["total_time"] for r in records)
    assert 0 < generation <= doc["throughput"]["wall_seconds"] < process_seconds
    assert doc["metrics"]["num_tokens"] / process_seconds < doc["metrics"]["tokens_per_second"]
    assert doc["metrics"]["acceptance_rate"] is None
    assert 1 < doc["metrics"]["perplexity"] < 1000 and all(r["perplexity"]["tokens"] > 10 for r in records)
    assert doc["model"]["num_bytes"] == doc["model"]["num_bytes_original"] >= 4 * doc["model"]["num_parameters"]
    assert all(0 < r["num_tokens"] <= 32 and r["prediction"] for r in records)


def test_self_speculative_run_reports_acceptance(tmp_path, tiny_model_dir, capsys):
    code = benchmark.main(["--model", tiny_model_dir, "--num_samples", "2", "--max_steps", "12", "--output_dir",
                           str(tmp_path), "--generation_strategy", "self_speculative", "--exit_layer", "3",
                           "--num_speculations", "2"])
    assert code == 0
    # the status line while the model loads
    assert re.search(rf"^loading {re.escape(tiny_model_dir)} \.\.\. \d+\.\d s$", capsys.readouterr().err, re.M)
    [doc] = _run_docs(tmp_path)
    records = _samples(tmp_path, doc)
    drafted = sum(r["num_drafted"] for r in records)
    assert drafted > 0
    assert doc["metrics"]["acceptance_rate"] == pytest.approx(sum(r["num_accepted"] for r in records) / drafted)
    assert doc["generation"]["mode"] == "self_speculative"
    assert doc["generation"]["exit_layer"] == doc["generation"]["exit_block"] == 3  # nothing pruned: the same index


def test_angular_run_logs_prune_report_and_hook_counts(tmp_path, tiny_model_dir):
    saved = tmp_path / "pruned"
    code = benchmark.main(["--model", tiny_model_dir, "--num_samples", "2", "--max_steps", "8", "--output_dir",
                           str(tmp_path / "a"), "--prune_method", "angular", "--prune_n", "2",
                           "--calibration_samples", "4", "--generation_strategy", "self_speculative",
                           "--exit_layer", "4", "--num_speculations", "3", "--save_pruned_model", str(saved)])
    assert code == 0
    [doc] = _run_docs(tmp_path / "a")
    prune = doc["prune"]
    assert len(prune["removed_layers"]) == 2 and len(prune["kept_layers"]) == 4
    assert len(prune["distances"]) == 5
    assert prune["calibration"]["dataset"] == "aclsum_summarization" and prune["calibration"]["split"] == "train"
    assert prune["calibration"]["samples"] == 4
    assert prune["exit_layer_original"] == 4
    assert prune["exit_block"] == sum(1 for i in prune["kept_layers"] if i < 4)
    assert all(prune["layer_calls"][i] == 0 for i in prune["removed_layers"])
    assert all(prune["layer_calls"][i] > 0 for i in prune["kept_layers"])
    assert doc["model"]["num_layers"] == 4 and doc["model"]["num_parameters"] < doc["model"]["num_parameters_original"]
    # the saved checkpoint benchmarks as a normal model
    assert benchmark.main(["--model", str(saved), "--num_samples", "1", "--max_steps", "4",
                           "--output_dir", str(tmp_path / "b")]) == 0
    [doc2] = _run_docs(tmp_path / "b")
    assert doc2["model"]["num_layers_original"] == 4


def test_perplexity_scoring_is_not_counted_as_generation(tmp_path, tiny_model_dir):
    """Scoring runs the gated model (with its per-sample decisions) but adds no layer calls or gate counts."""
    docs = {}
    for flag in ("True", "False"):
        out = tmp_path / flag
        assert benchmark.main(["--model", tiny_model_dir, "--num_samples", "2", "--max_steps", "6", "--prune_method",
                               "gated", "--available_compute", "0.5", "--perplexity", flag,
                               "--output_dir", str(out)]) == 0
        [docs[flag]] = _run_docs(out)
        records = _samples(out, docs[flag])
        assert all(("perplexity" in r) == (flag == "True") for r in records)
    assert docs["True"]["prune"]["layer_calls"] == docs["False"]["prune"]["layer_calls"]
    assert docs["True"]["prune"]["run_metrics"] == docs["False"]["prune"]["run_metrics"]
    assert docs["True"]["metrics"]["perplexity"] > 1 and docs["False"]["metrics"]["perplexity"] is None
