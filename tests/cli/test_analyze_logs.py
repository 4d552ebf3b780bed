import copy
import csv
import glob
import io
import json
import math
import os

import pytest

import analyze_logs
import benchmark
from layerbench.analysis import plots, tables


@pytest.fixture(scope="module")
def real_log(tmp_path_factory, tiny_model_dir):
    """A run log written by benchmark.py itself: the fixtures below are edited copies, so they follow the
    real schema."""
    out = tmp_path_factory.mktemp("real")
    assert benchmark.main(["--model", tiny_model_dir, "--num_samples", "2", "--max_steps", "4",
                           "--output_dir", str(out)]) == 0
    [path] = glob.glob(str(out / "benchmark_*.json"))
    return json.load(open(path))


def _variant(doc, approach="base", tps=10.0, rougeL=0.5, bleu=20.0, prune=None, strategy="autoregressive",
             exit_layer=-1, d=-1, samples=None):
    doc = copy.deepcopy(doc)
    doc["prune"] = {"method": approach, **(prune or {})}
    doc["args"].update({"prune_method": approach, "generation_strategy": strategy, "exit_layer": exit_layer,
                        "num_speculations": d, **(prune or {})})
    doc["metrics"].update({"tokens_per_second": tps, "rougeL": rougeL, "corpus_bleu": bleu, "time_per_token": 1 / tps})
    if samples:
        doc["dataset"]["num_samples"] = samples
    return doc


def _write(directory, name, doc):
    os.makedirs(directory, exist_ok=True)
    with open(os.path.join(directory, name), "w") as f:
        f.write(doc if isinstance(doc, str) else json.dumps(doc))


@pytest.fixture
def log_dir(tmp_path, real_log):
    d = tmp_path / "logs"
    _write(d, "b1.json", _variant(real_log, tps=10.0, rougeL=0.50))
    _write(d / "nested", "b2.json", _variant(real_log, tps=12.0, rougeL=0.50))
    _write(d, "a.json", _variant(real_log, "angular", tps=16.5, rougeL=0.40, bleu=15.0, prune={"prune_n": 2}))
    _write(d, "r.json", _variant(real_log, "random", tps=13.2, rougeL=0.30, prune={"dropout_threshold": 0.2,
                                                                                  "prune_seed": 42}))
    # self-speculative base/pruned pair, and a pruned run with no matching base (other sample count)
    _write(d, "sb.json", _variant(real_log, tps=8.0, strategy="self_speculative", exit_layer=4, d=3))
    _write(d, "sa.json", _variant(real_log, "angular", tps=10.0, strategy="self_speculative", exit_layer=4, d=3,
                                  prune={"prune_n": 1}))
    _write(d, "orphan.json", _variant(real_log, "angular", tps=99.0, prune={"prune_n": 3}, samples=7))
    _write(d, "corrupt.json", '{"schema_version": 1, "metr')
    _write(d, "partial.json", {**_variant(real_log), "complete": False})
    _write(d, "foreign.json", {"hello": "world"})
    _write(d, "x_samples.jsonl", "{}\n")
    return d


def _table(log_dir, *extra):
    buf_out, buf_err = io.StringIO(), io.StringIO()
    import contextlib
    with contextlib.redirect_stdout(buf_out), contextlib.redirect_stderr(buf_err):
        code = analyze_logs.main([str(log_dir), *extra])
    return code, buf_out.getvalue(), buf_err.getvalue()


def test_aggregation_speedup_and_quality_change(log_dir):
    runs, skipped = tables.load_runs([str(log_dir)], warn=lambda m: None)
    assert skipped == 3 and len(runs) == 7
    table = tables.aggregate(runs).set_index(["strategy", "approach", "param", "samples"])
    base = table.loc[("autoregressive", "base", "", 2)]
    assert base["runs"] == 2
    assert base["tokens_per_second"] == pytest.approx(11.0)
    assert base["tokens_per_second_std"] == pytest.approx(math.sqrt(2))
    assert base["speedup"] == pytest.approx(1.0)
    ang = table.loc[("autoregressive", "angular", "n=2", 2)]
    assert ang["speedup"] == pytest.approx(16.5 / 11.0)
    assert ang["rougeL_change"] == pytest.approx(-0.10)
    assert ang["corpus_bleu_change"] == pytest.approx(-5.0)
    assert math.isnan(ang["tokens_per_second_std"])
    rnd = table.loc[("autoregressive", "random", "p=0.2,seed=42", 2)]
    assert rnd["speedup"] == pytest.approx(1.2)
    spec = table.loc[("self_speculative", "angular", "n=1", 2)]
    assert spec["speedup"] == pytest.approx(10.0 / 8.0) and spec["num_speculations"] == 3
    assert math.isnan(table.loc[("autoregressive", "angular", "n=3", 7)]["speedup"])


def test_cli_tables_warnings_and_csvs(log_dir):
    code, out, err = _table(log_dir)
    assert code == 0
    warnings = [l for l in err.splitlines() if l.startswith("warning:")]
    assert len(warnings) == 3
    assert any("corrupt.json: corrupt" in w for w in warnings)
    assert any("partial.json: partial" in w for w in warnings)
    assert any("foreign.json: not a benchmark run log" in w for w in warnings)
    assert "3 files skipped" in err
    assert "## Metrics" in out and "## Timing" in out and "| angular" in out
    assert "11 ± 1.4" in out  # mean ± std of the two base runs
    rows = list(csv.DictReader(open(log_dir / "summary_timing.csv")))
    assert len(rows) == 6
    ang = next(r for r in rows if r["param"] == "n=2")
    assert float(ang["speedup"]) == pytest.approx(1.5)
    assert os.path.exists(log_dir / "summary_metrics.csv")


def test_filters_sort_and_formats(log_dir, tmp_path):
    code, out, _ = _table(log_dir, "--approach", "angular", "--format", "json", "--out", str(tmp_path / "o"))
    assert code == 0
    metrics_json = out.split("## Timing")[0].split("## Metrics")[1]
    records = json.loads(metrics_json)
    assert {r["approach"] for r in records} == {"angular"} and len(records) == 3
    code, out, _ = _table(log_dir, "--format", "csv", "--sort", "tokens_per_second", "--out", str(tmp_path / "o"))
    timing = list(csv.DictReader(io.StringIO(out.split("## Timing\n\n")[1])))
    tps = [float(r["tokens_per_second"]) for r in timing]
    assert tps == sorted(tps) and len(tps) == 6
    code, out, _ = _table(log_dir, "--format", "latex", "--out", str(tmp_path / "o"))
    assert "\\begin{tabular}" in out
    code, _, err = _table(log_dir, "--sort", "nope", "--out", str(tmp_path / "o"))
    assert code == 2 and "--sort nope" in err


def test_plots_are_written(log_dir, tmp_path):
    out = tmp_path / "plots"
    code, _, err = _table(log_dir, "--plot", "--out", str(out))
    assert code == 0
    pngs = sorted(os.path.basename(p) for p in glob.glob(str(out / "*.png")))
    assert pngs == ["quality_vs_speed_aclsum_summarization.png", "speedup.png"]
    for p in glob.glob(str(out / "*.png")):
        with open(p, "rb") as f:
            assert f.read(8) == b"\x89PNG\r\n\x1a\n"
        assert os.path.getsize(p) > 10_000


def test_pareto_front():
    pts = [(1, 0.5), (2, 0.4), (1.5, 0.3), (3, 0.1), (0.5, 0.6)]
    assert plots.pareto_front(pts) == [4, 0, 1, 3]


def test_missing_path_is_an_error(tmp_path):
    code, _, err = _table(tmp_path / "nope")
    assert code == 2 and "no such file" in err


def test_stand_in_and_exit_adapter_runs_are_their_own_configurations(tmp_path, real_log):
    d = tmp_path / "logs"
    _write(d, "b.json", _variant(real_log, tps=10.0, strategy="self_speculative", exit_layer=4, d=3))
    adapter = _variant(real_log, tps=12.0, strategy="self_speculative", exit_layer=4, d=3)
    adapter["args"].update({"exit_adapter": "linear", "draft_confidence": 0.4, "draft_vocabulary": 64})
    adapter["prune"]["exit_adapter"] = {"kind": "linear", "exit_layer": 4, "relative_error_after": 0.3}  # a fit report
    adapter["prune"]["draft_vocabulary"] = {"size": 60, "calibration_token_coverage": 1.0}
    _write(d, "a.json", adapter)
    _write(d, "n.json", _variant(real_log, "angular", tps=11.0, prune={"prune_n": 2}))
    stand_in = _variant(real_log, "angular", tps=10.5, prune={"prune_n": 2})
    stand_in["args"]["stand_in"] = "linear"
    stand_in["prune"]["stand_in"] = {"kind": "linear", "runs": [{"removed_layers": [1, 2]}]}  # as benchmark.py logs
    _write(d, "s.json", stand_in)
    runs, skipped = tables.load_runs([str(d)], warn=lambda m: None)
    assert skipped == 0
    table = tables.aggregate(runs).set_index(["approach", "param"])
    assert table.loc[("exit_adapter", "linear,confidence=0.4,vocabulary=64")]["speedup"] == pytest.approx(1.2)
    assert table.loc[("base", "")]["runs"] == 1  # the adapter run is not averaged into its base
    assert {"n=2", "n=2,stand_in=linear"} <= set(table.loc["angular"].index)
