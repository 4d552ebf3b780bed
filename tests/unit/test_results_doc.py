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


def test_exit_sweep_section_renders_the_grid_best_cell_and_plots(results_doc, tmp_path):
    rows = [{"exit_layer": E, "num_speculations": d, "draft_confidence": None, "speedup": E / 10 + d / 100,
             "acceptance": d / 10, "greedy_equal_to_autoregressive": E != 8} for E in (4, 8) for d in (2, 3)]
    doc = {"args": {"exit_adapter": "linear", "max_tokens": 16, "rounds": 1}, "model": "m", "num_layers": 12,
           "prompts": 1, "autoregressive_tokens_per_second": 5.0, "command": "python bench/sweep_exit.py X",
           "rows": rows, "best": rows[3], "files": {"speedup_png": "s.png", "acceptance_png": "a.png"}}
    os.makedirs(tmp_path / "sweep_exit")
    with open(tmp_path / "sweep_exit" / "sweep.json", "w") as f:
        json.dump(doc, f)
    text = results_doc.write_section(section_of(results_doc, 'sweep_exit/*.json'), str(tmp_path))
    assert "| off                |       2 | 0.420 | 0.820 |" in text  # speed-up, rows d, columns E = 4, 8
    assert "| off                |       3 | 0.300 | 0.300 |" in text  # acceptance
    assert "Best cell: E=8 d=3, speed-up 0.830, acceptance 0.300. Greedy outputs equal to autoregressive in 2/4" in text
    assert "Command: `python bench/sweep_exit.py X`" in text and "sweep_exit/s.png)" in text


def section_of(module, pattern: str):
    return next(s for s in module.SECTIONS if s.pattern == pattern)


def test_lm_eval_table_shows_each_configuration_with_its_change_against_base(results_doc, tmp_path):
    def row(name, acc, ppl):
        return {"name": name, "model_args": {}, "seconds": 12.0, "num_parameters": 100, "prune": {"num_layers_after": 30},
                "tasks": {"aclsum_mc": {"metrics": {"acc": {"value": acc, "stderr": 0.05}}},
                          "aclsum_ppl": {"metrics": {"word_perplexity": {"value": ppl, "stderr": None}}}}}
    doc = {"command": "python bench/lm_eval_table.py", "limits": {"aclsum_mc": 50, "aclsum_ppl": 100},
           "model": "m", "rows": [row("base", 0.5, 300.0), row("angular n=6", 0.25, 450.0)]}
    os.makedirs(tmp_path / "lm_eval")
    with open(tmp_path / "lm_eval" / "table_1.json", "w") as f:
        json.dump(doc, f)
    text = results_doc.write_section(section_of(results_doc, "lm_eval/table_*.json"), str(tmp_path))
    lines = {line.split("|")[1].strip(): [c.strip() for c in line.split("|")[2:-1]]
             for line in text.splitlines() if line.startswith("| ") and "configuration" not in line}
    assert lines["angular n=6"] == ["100", "30", "0.25 ± 0.05 (-0.25)", "450 (+150)", "12"]
    assert lines["base"] == ["100", "30", "0.5 ± 0.05", "300", "12"]


def test_every_experiment_with_a_section_is_in_results_md(results_doc):
    import importlib

    import bench.__main__ as entry
    sections = [importlib.import_module(module).SECTION for module in entry.EXPERIMENTS.values()
                if hasattr(importlib.import_module(module), "SECTION")]
    assert len(sections) >= 9 and all(section in results_doc.SECTIONS for section in sections)
