"""Agreement with autoregressive decoding (analysis.agreement): which runs promise its tokens, which run is their
reference, and the numbers per pair; end to end through benchmark.py (the line under the end-of-run table, the
run JSON) and analyze_logs (its agreement table)."""
import json

import benchmark
from layerbench.analysis import agreement as ag


def doc(run_id="a", mode="full_model", exact="on (8-row tiles)", graphs="off", compile_="off", **args):
    return {"run_id": run_id, "model": {"name": "m", "dtype": "torch.bfloat16"},
            "args": {"seed": 1, "max_steps": 8, "sample": False, "generation_strategy": "x", "num_samples": 3, **args},
            "generation": {"mode": mode, "exact": exact, "cuda_graphs": graphs, "compile": compile_}}


def test_which_runs_promise_autoregressive_tokens():
    assert ag.is_plain_autoregressive(doc())
    assert not ag.promises_autoregressive(doc())
    assert ag.promises_autoregressive(doc(mode="self_speculative"))
    assert ag.promises_autoregressive(doc(graphs="on (2 captured steps)"))
    assert ag.promises_autoregressive(doc(compile_="on (torch.compile)"))
    assert ag.promises_autoregressive(doc(device_map="auto"))
    assert not ag.promises_autoregressive(doc(mode="early_exit"))  # early exit promises nothing
    assert not ag.promises_autoregressive(doc(mode="self_speculative", sample=True))


def test_the_reference_matches_what_decides_the_tokens_and_prefers_the_same_exact_mode():
    run = doc("x", mode="self_speculative", exit_layer=3, num_samples=5)
    candidates = [("old.json", doc("a")), ("off.json", doc("b", exact="off")), ("new.json", doc("c")),
                  ("other_seed.json", doc("d", seed=2)), ("spec.json", doc("e", mode="self_speculative")),
                  ("fp32.json", {**doc("f"), "model": {"name": "m", "dtype": "torch.float32"}})]
    assert ag.find_reference(run, candidates)[0] == "new.json"  # newest of the same exact mode
    assert ag.find_reference(doc("x", mode="self_speculative", exact="off"), candidates)[0] == "off.json"
    assert ag.find_reference(doc("x", mode="self_speculative", seed=3), candidates) is None


def test_agreement_counts_identical_predictions_and_the_first_differing_token():
    ref = [{"sample_id": "s1", "token_ids": [1, 2, 3], "metrics": {"rougeL": 0.5}},
           {"sample_id": "s2", "token_ids": [4, 5, 6, 7], "metrics": {"rougeL": 0.4}},
           {"sample_id": "s3", "token_ids": [1], "metrics": {"rougeL": 0.1}}]
    run = [{"sample_id": "s1", "token_ids": [1, 2, 3], "metrics": {"rougeL": 0.5}},
           {"sample_id": "s2", "token_ids": [4, 5, 9], "metrics": {"rougeL": 0.2}},
           {"sample_id": "s4", "token_ids": [1], "metrics": {"rougeL": 0.9}}]
    a = ag.agreement(run, "ref.json", doc("r"), ref)
    assert (a.samples, a.identical, a.mean_first_difference, a.unit) == (2, 1, 2.0, "token")
    assert a.quality_change["rougeL"] == (0.0 + (0.2 - 0.4)) / 2
    assert "DIFFERS: 1/2 predictions identical; the others part at token 2.0" in a.line()
    assert ag.first_difference({"prediction": "abc"}, {"prediction": "abd"}) == (2, "character")
    assert ag.first_difference({"token_ids": [1, 2]}, {"token_ids": [1, 2, 3]}) == (2, "token")


def test_a_speculative_run_reports_its_agreement_and_analyze_logs_tabulates_it(tmp_path, tiny_model_dir, capsys):
    import analyze_logs
    common = ["--model", tiny_model_dir, "--dtype", "bfloat16", "--num_samples", "3", "--max_steps", "12",
              "--output_dir", str(tmp_path), "--perplexity", "False"]
    assert benchmark.main(common) == 0
    capsys.readouterr()
    assert benchmark.main(common + ["--generation_strategy", "self_speculative", "--exit_layer", "3",
                                    "--num_speculations", "4"]) == 0
    out = capsys.readouterr().out
    assert "agreement with autoregressive run" in out and "3/3 predictions identical" in out
    [spec] = [json.load(open(p)) for p in tmp_path.glob("benchmark_*.json")
              if json.load(open(p))["args"]["generation_strategy"] == "self_speculative"]
    assert spec["generation"]["exact"] == "on (8-row tiles)"
    assert spec["agreement"]["identical"] == spec["agreement"]["samples"] == 3
    assert analyze_logs.main([str(tmp_path)]) == 0
    table = capsys.readouterr().out
    assert "## Agreement with autoregressive decoding" in table and "| 3/3 " in table
