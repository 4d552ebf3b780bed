"""docs/RESULTS.md: per-run intervals come from per-sample values, and a result without them says so."""
import json
import os

import pytest

from tests.conftest import ROOT


@pytest.fixture
def results_doc(monkeypatch):
    monkeypatch.syspath_prepend(os.path.join(ROOT, "bench"))
    import results_doc
    return results_doc


def _run(directory, name, approach, samples):
    ids = ["s1", "s2", "s3", "s4"]
    doc = {"schema_version": 2, "complete": True, "dataset": {"name": "d", "num_samples": 4}, "model": {"name": "m"},
           "prune": {"method": approach}, "metrics": {"rougeL": 0.5, "tokens_per_second": 10.0},
           "args": {"prune_method": approach, "generation_strategy": "autoregressive", "seed": 1},
           "samples_file": f"{name}_samples.jsonl"}
    path = os.path.join(directory, f"{name}.json")
    with open(path, "w") as f:
        json.dump(doc, f)
    if samples:
        with open(os.path.join(directory, doc["samples_file"]), "w") as f:
            for i in ids:
                f.write(json.dumps({"sample_id": i, "num_tokens": 10, "total_time": 1.0, "time_to_first_token": 0.1,
                                    "prediction": "a", "reference": "a", "metrics": {"rougeL": 0.5}}) + "\n")
    return path, doc


def test_run_intervals_from_samples_or_a_note(results_doc, tmp_path):
    files = [_run(tmp_path, "b", "base", samples=True), _run(tmp_path, "r", "random", samples=False)]
    text = results_doc.render_run_intervals(files)
    rows = {r.split("|")[2].strip(): [c.strip() for c in r.split("|")[1:-1]] for r in text.splitlines()[2:]}
    assert rows["base"][4:7] == ["0.5 [0.5, 0.5]", "", ""]  # no BLEU or perplexity in these runs' metrics
    assert rows["base"][7] == "10 [10, 10]"
    assert rows["random"][4] == "no per-sample values in this result"
