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
    assert table.loc[("autoregressive", "angular", "n=3", 7)]["pairing"] == "no base run"
    assert ang["pairing"] == "unpaired: no samples file"  # these edited copies have none


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


def _minimal_run(directory, name, approach, ids, rougeL, seconds, samples=True, prune=None):
    """A run JSON with just the fields analyze_logs reads, and its samples file (10 tokens per sample)."""
    records = [{"sample_id": i, "prediction": "a b c", "reference": "a b d", "num_tokens": 10, "total_time": s,
                "time_to_first_token": 0.1, "metrics": {"rougeL": r}} for i, r, s in zip(ids, rougeL, seconds)]
    doc = {"schema_version": 2, "complete": True, "dataset": {"name": "d", "num_samples": len(ids)},
           "model": {"name": "m"}, "prune": {"method": approach, **(prune or {})},
           "args": {"prune_method": approach, "generation_strategy": "autoregressive", "exit_layer": -1,
                    "num_speculations": -1, **(prune or {})},
           "metrics": {"rougeL": sum(rougeL) / len(ids), "tokens_per_second": 10 * len(ids) / sum(seconds)},
           "samples_file": f"{name}_samples.jsonl"}
    _write(directory, f"{name}.json", doc)
    if samples:
        _write(directory, f"{name}_samples.jsonl", "".join(json.dumps(r) + "\n" for r in records))


@pytest.fixture
def paired_dir(tmp_path):
    d = tmp_path / "paired"
    ids = ["s1", "s2", "s3", "s4"]
    _minimal_run(d, "base", "base", ids, [0.5, 0.6, 0.7, 0.8], [1.0, 1.0, 2.0, 2.0])
    # every sample 0.1 lower and twice as fast: constant paired changes
    _minimal_run(d, "ang", "angular", ids, [0.4, 0.5, 0.6, 0.7], [0.5, 0.5, 1.0, 1.0], prune={"prune_n": 2})
    _minimal_run(d, "nosamples", "angular", ids, [0.3] * 4, [1.0] * 4, samples=False, prune={"prune_n": 3})
    _minimal_run(d, "other_ids", "angular", ["t1", "t2", "t3", "t4"], [0.2] * 4, [1.0] * 4, prune={"prune_n": 4})
    return d


def test_changes_are_paired_over_shared_sample_ids(paired_dir):
    table = tables.aggregate(tables.load_runs([str(paired_dir)], warn=lambda m: None)[0]).set_index("param")
    ang = table.loc["n=2"]
    assert ang["pairing"] == "paired: 4 ids"
    assert (ang["rougeL_change"], ang["rougeL_change_ci_low"], ang["rougeL_change_ci_high"]) == (
        pytest.approx(-0.1), pytest.approx(-0.1), pytest.approx(-0.1))
    assert (ang["speedup"], ang["speedup_ci_low"], ang["speedup_ci_high"]) == (2.0, 2.0, 2.0)
    assert table.loc["n=3"]["pairing"] == "unpaired: no samples file"
    assert table.loc["n=3"]["rougeL_change"] == pytest.approx(0.3 - 0.65)  # the difference of run values
    assert math.isnan(table.loc["n=3"]["rougeL_change_ci_low"])
    assert table.loc["n=4"]["pairing"] == "unpaired: 0 shared sample ids"
    assert table.loc[""]["pairing"] == ""  # the base row


def test_cli_marks_intervals_and_unpaired_changes(paired_dir, tmp_path):
    code, out, _ = _table(paired_dir, "--out", str(tmp_path / "o"))
    assert code == 0
    metrics, timing = ({line.split("|")[5].strip(): line for line in part.splitlines() if line.startswith("| d ")}
                       for part in out.split("## Timing"))
    cells = [c.strip() for c in metrics["n=2"].split("|")]
    assert cells[-4:-1] == ["-0.1 [-0.1, -0.1]", "0 [0, 0] (ns)", "paired: 4 ids"]  # the same predictions' BLEU
    assert "| 2 [2, 2]" in timing["n=2"] and "(ns)" not in timing["n=2"]
    assert "-0.35 (unpaired)" in metrics["n=3"] and "unpaired: no samples file" in metrics["n=3"]
    assert "Changes vs base: [95% interval] from a paired bootstrap" in out
    [ang] = [r for r in csv.DictReader(open(tmp_path / "o" / "summary_timing.csv")) if r["param"] == "n=2"]
    assert (float(ang["speedup_ci_low"]), float(ang["speedup_ci_high"])) == (2.0, 2.0)


def test_interval_containing_no_change_is_marked(tmp_path):
    d = tmp_path / "ns"
    _minimal_run(d, "base", "base", ["a", "b", "c"], [0.5, 0.5, 0.5], [1.0, 1.0, 1.0])
    _minimal_run(d, "ang", "angular", ["a", "b", "c"], [0.6, 0.4, 0.5], [1.0, 1.0, 1.0], prune={"prune_n": 2})
    code, out, _ = _table(d, "--out", str(tmp_path / "o"))
    row = next(line for line in out.splitlines() if "| n=2 " in line)  # the metrics table comes first
    # differences +0.1, -0.1, 0: all three resampled at -0.1 (or +0.1) has probability 1/27 > 2.5%
    assert code == 0 and "| 0 [-0.1, 0.1] (ns)" in row


def _one_error_line(err):
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), lines
    return lines[0]


def test_plot_without_valid_runs_is_one_error_line(tmp_path):
    d = tmp_path / "bad"
    _write(d, "corrupt.json", '{"schema_version": 1, "metr')
    code, out, err = _table(d, "--plot", "--out", str(tmp_path / "o"))
    assert code == 2 and out == ""
    assert "--plot: no valid runs to plot" in _one_error_line(err) and "1 files skipped" in err
    assert not os.path.exists(tmp_path / "o")


def _unwritable_dir(tmp_path):
    """A folder this process cannot write: permission bits do not stop root, so root gets sysfs."""
    if os.geteuid() == 0:
        return "/sys"
    d = tmp_path / "ro"
    d.mkdir()
    d.chmod(0o500)
    return str(d)


@pytest.mark.parametrize("where,expected", [("file", "is a file"), ("under_file", "lies under a file"),
                                            ("unwritable", "not writable")])
def test_unusable_out_is_one_error_line(paired_dir, tmp_path, where, expected):
    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    out = {"file": str(a_file), "under_file": str(a_file / "sub"), "unwritable": _unwritable_dir(tmp_path)}[where]
    code, stdout, err = _table(paired_dir, "--out", out)
    assert code == 2 and stdout == ""
    line = _one_error_line(err)
    assert line.startswith(f"error: --out {out}: {expected}")
