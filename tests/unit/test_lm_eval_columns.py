"""analyze_logs shows lm-eval results as columns with the change against the matching base run."""
from __future__ import annotations

import csv
import io
import json
import math

import analyze_logs
from layerbench.analysis import lm_eval_columns


def run_doc(approach: str, acc: float, acc_se: float, n: int = 4, ppl: float = 10.0) -> dict:
    return {"schema_version": 2, "complete": True, "dataset": {"name": "d", "num_samples": 2},
            "model": {"name": "m"}, "prune": {"method": approach, "prune_n": 2},
            "args": {"prune_method": approach, "generation_strategy": "autoregressive", "exit_layer": -1,
                     "num_speculations": -1, "prune_n": 2},
            "metrics": {"rougeL": 0.5, "tokens_per_second": 10.0},
            "lm_eval": {"aclsum_mc": {"version": 1.0, "num_fewshot": 0, "limit": n, "samples": n,
                                      "metrics": {"acc": {"value": acc, "stderr": acc_se}}},
                        "aclsum_ppl": {"version": 1.0, "num_fewshot": 0, "limit": n, "samples": n,
                                       "metrics": {"word_perplexity": {"value": ppl, "stderr": None}}}}}


def test_columns_of_a_run():
    assert lm_eval_columns.columns_of(run_doc("base", 0.5, 0.1)) == {
        "lm_eval:aclsum_mc[k=0,n=4]/acc": 0.5, "lm_eval:aclsum_mc[k=0,n=4]/acc_stderr": 0.1,
        "lm_eval:aclsum_ppl[k=0,n=4]/word_perplexity": 10.0,
        "lm_eval:aclsum_ppl[k=0,n=4]/word_perplexity_stderr": None}


def test_analyze_logs_lm_eval_table_and_csv(tmp_path, capsys):
    for name, doc in {"base": run_doc("base", 0.5, 0.1), "ang": run_doc("angular", 0.3, 0.1, ppl=14.0),
                      "other_n": {**run_doc("angular", 0.25, 0.1, n=8), "args": {
                          **run_doc("angular", 0, 0)["args"], "prune_n": 3}, "prune": {"method": "angular",
                                                                                       "prune_n": 3}}}.items():
        (tmp_path / f"{name}.json").write_text(json.dumps(doc))
    assert analyze_logs.main([str(tmp_path)]) == 0
    out = capsys.readouterr().out
    table = out.split("## lm-eval")[1]
    assert "aclsum_mc[k=0,n=4]/acc" in table and "change vs base" in table
    assert "| 0.3 ± 0.1 " in table and f"| -0.2 ± {math.sqrt(0.02):.4g} " in table and "| +4 " in table
    assert analyze_logs.main([str(tmp_path), "--format", "csv"]) == 0
    text = capsys.readouterr().out.split("## lm-eval")[1]
    rows = list(csv.DictReader(io.StringIO(text[text.index("dataset,model"):])))
    by_param = {(r["approach"], r["param"]): r for r in rows}
    ang, other = by_param[("angular", "n=2")], by_param[("angular", "n=3")]
    assert math.isclose(float(ang["lm_eval:aclsum_mc[k=0,n=4]/acc_change"]), -0.2)
    assert math.isclose(float(ang["lm_eval:aclsum_mc[k=0,n=4]/acc_change_stderr"]), math.sqrt(0.02))
    assert other["lm_eval:aclsum_mc[k=0,n=4]/acc"] == ""  # n=8 documents: its own column, no base to compare
    assert other["lm_eval:aclsum_mc[k=0,n=8]/acc_change"] == ""
