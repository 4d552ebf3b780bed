import copy
import math

import pytest
import torch

from layer_compression.layer_compression_skipping import LayerCompressionAndSkipping
from layerbench.engine.engine import Engine, EngineOptions
from layerbench.errors import UsageError
from layerbench.surgery.layers import count_parameters
from layerbench.surgery.lowrank import LowRankLinear, factorize
from pruned_model import PruneConfig, PruneModel
from tests.helpers import VOCAB, greedy, prompt_ids, speculative, tiny_gpt2, tiny_llama


def _prompt(seed=0, n=12):
    return prompt_ids(seed, n)


def _greedy(model, n=20, seed=0, pruner=None, **kw):
    engine = Engine(model) if pruner is None else pruner.attach(Engine(model))
    return greedy(engine, _prompt(seed), n, **kw)


def test_factorized_matrix_holds_exactly_r_times_in_plus_out_weights():
    W, bias = torch.randn(48, 80, dtype=torch.float64), torch.randn(48, dtype=torch.float64)
    A, B, _ = factorize(W, 7)
    lin = LowRankLinear(A, B, bias)
    assert sum(p.numel() for p in lin.parameters()) == 7 * (48 + 80) + 48
    assert lin.A.weight.shape == (7, 80) and lin.B.weight.shape == (48, 7)


def test_full_rank_reproduces_dense_and_error_equals_svd_tail():
    torch.manual_seed(0)
    W, bias, x = torch.randn(40, 64), torch.randn(40), torch.randn(5, 64)
    A, B, err = factorize(W, 40)
    torch.testing.assert_close(LowRankLinear(A, B, bias)(x), x @ W.T + bias, atol=1e-4, rtol=1e-4)
    assert err < 1e-6
    S = torch.linalg.svdvals(W.double())
    for r in (1, 5, 20):
        _, _, err = factorize(W, r)
        assert err == pytest.approx(float(S[r:].pow(2).sum().sqrt() / S.pow(2).sum().sqrt()), rel=1e-6)


@pytest.mark.parametrize("factory", [tiny_llama, tiny_gpt2])
def test_lowrank_parameters_report_and_hot_path(factory):
    model = factory(num_layers=6)
    before = count_parameters(model)
    pm = PruneModel(model, None, PruneConfig(method="lowrank", compression_rank=4))
    report = pm.apply()
    cold = [m for m in report["matrices"] if not m["dense"]]
    assert {m["layer"] for m in report["matrices"]} == {2, 3, 4}  # hot path 0, 1, 5 untouched
    assert all(m["rank"] == 4 for m in cold) and len(cold) == len(report["matrices"])
    saved = sum(m["shape"][0] * m["shape"][1] - 4 * sum(m["shape"]) for m in cold)
    assert report["num_parameters_after"] == count_parameters(model) == before - saved
    assert report["targeted_params_after"] == sum(4 * sum(m["shape"]) for m in cold)
    for m in cold:
        assert 0 < m["relative_error"] < 1


def test_ratio_keeps_half_and_dense_when_not_smaller():
    model = tiny_llama(num_layers=4)
    report = PruneModel(model, None, PruneConfig(method="lowrank", compression_ratio=0.5, hot_path=[0])).apply()
    for m in report["matrices"]:
        out_f, in_f = m["shape"]
        assert m["rank"] == int(0.5 * out_f * in_f / (out_f + in_f))
        assert m["params"] <= 0.5 * out_f * in_f
    dense = PruneModel(tiny_llama(num_layers=4), None, PruneConfig(method="lowrank", compression_rank=64, hot_path=[0])).apply()
    assert all(m["dense"] and m["reason"] == "r(m+n) >= mn" for m in dense["matrices"])
    assert dense["num_parameters_after"] == dense["num_parameters_before"]


def test_asvd_with_uniform_activations_equals_svd():
    torch.manual_seed(0)
    W = torch.randn(30, 50)
    A1, B1, e1 = factorize(W, 6)
    A2, B2, e2 = factorize(W, 6, torch.full((50,), 3.0))
    torch.testing.assert_close(B1 @ A1, B2 @ A2, atol=1e-5, rtol=1e-5)
    assert e1 == pytest.approx(e2)


def test_asvd_calibrates_and_reports():
    import random
    from pruned_model import Calibration
    rng = random.Random(0)
    calib = lambda: Calibration([[rng.randrange(VOCAB) for _ in range(20)] for _ in range(4)], {"dataset": "synthetic"})
    pm = PruneModel(tiny_llama(), None, PruneConfig(method="lowrank", compression_rank=4, lowrank_method="asvd"), calib)
    report = pm.apply()
    assert report["lowrank_method"] == "asvd" and report["calibration"]["samples"] == 4
    assert len(pm.compressor.column_scales) == len(report["matrices"])


def test_lowrank_self_speculative_equals_autoregressive():
    model = tiny_llama(num_layers=6)
    PruneModel(model, None, PruneConfig(method="lowrank", compression_rank=8)).apply()
    engine = Engine(model)
    ar = greedy(engine, _prompt(), 25)
    ss = speculative(engine, _prompt(), 25, exit_layer=3, num_speculations=3)
    assert ss.token_ids == ar.token_ids


def test_engine_prepared_after_adjustment_runs_the_new_factors_with_its_kernel():
    model = tiny_llama(num_layers=6)
    pm = PruneModel(model, None, PruneConfig(method="lowrank", compression_rank=8))
    pm.apply()
    fast = Engine(model, EngineOptions(linear_kernel="few_row_mm"))
    before = greedy(fast, _prompt(), 12).token_ids
    pm.adjust_compression_level(0.25)  # builds new factor modules (rank 2)
    fast.prepare()
    plain = Engine(model, EngineOptions(linear_kernel="torch"))
    assert fast.linear_kernel == "few_row_mm" and plain.linear_kernel == "torch"
    after = greedy(fast, _prompt(), 12).token_ids
    assert after == greedy(plain, _prompt(), 12).token_ids
    assert after != before  # rank 2 instead of 8: the prepared engine really runs the new factors


@pytest.mark.parametrize("factory", [tiny_llama, tiny_gpt2])
def test_gated_threshold_zero_full_compute_equals_base(factory):
    base = factory(num_layers=6)
    gated = copy.deepcopy(base)
    pm = PruneModel(gated, None, PruneConfig(method="gated", skip_threshold=0.0, available_compute=1.0))
    pm.apply()
    for seed in (0, 1):
        assert _greedy(gated, seed=seed, pruner=pm).token_ids == _greedy(base, seed=seed).token_ids
    assert pm.get_metrics()["layers_skipped"] == 0
    with torch.no_grad():
        torch.testing.assert_close(gated(_prompt()).logits, base(_prompt()).logits, atol=0, rtol=0)


@pytest.mark.parametrize("factory", [tiny_llama, tiny_gpt2])
def test_gated_threshold_one_runs_only_the_hot_path(factory):
    model = factory(num_layers=6)
    pm = PruneModel(model, None, PruneConfig(method="gated", skip_threshold=1.0, hot_path=[0, 5]))
    pm.apply()
    pm.start_counting()
    out = _greedy(model, n=10, pruner=pm)
    calls = pm.layer_call_counts()
    # prefill runs every layer once (to measure temperatures); the 9 decode steps run only layers 0 and 5
    assert calls == [10, 1, 1, 1, 1, 10]
    m = pm.get_metrics()
    assert m["decode_layers_skipped"] == 9 * 4 and m["decode_layers_executed"] == 9 * 2
    assert m["decode_skip_ratio"] == pytest.approx(4 / 6)
    assert pm.sample_report()["decode_layers_run"] == [0, 5]
    assert len(out.token_ids) == 10


def test_gated_threshold_between_temperatures_skips_exactly_the_colder_layers():
    """A threshold placed between measured temperatures skips exactly the cold layers below it at every decode
    step, and changes the output (the skipped layers really are gone from the decode pass)."""
    base = tiny_llama(num_layers=8)
    probe = PruneModel(copy.deepcopy(base), None, PruneConfig(method="gated", skip_threshold=0.0, hot_path=[0, 7]))
    probe.apply()
    _greedy(probe.model, n=2, pruner=probe)
    cold = sorted(range(1, 7), key=lambda i: probe.gate.temperatures[i])
    threshold = (probe.gate.temperatures[cold[2]] + probe.gate.temperatures[cold[3]]) / 2
    model = copy.deepcopy(base)
    pm = PruneModel(model, None, PruneConfig(method="gated", skip_threshold=threshold, hot_path=[0, 7]))
    pm.apply()
    pm.start_counting()
    out = _greedy(model, n=10, pruner=pm)
    assert pm.gate.skip == set(cold[:3])
    assert pm.layer_call_counts() == [1 if i in cold[:3] else 10 for i in range(8)]
    assert pm.get_metrics()["decode_skip_ratio"] == pytest.approx(3 / 8)
    assert out.token_ids != _greedy(base, n=10).token_ids


def test_gated_compute_budget_keeps_hot_path_and_hottest_layers():
    model = tiny_llama(num_layers=10)
    pm = PruneModel(model, None, PruneConfig(method="gated", skip_threshold=0.0, available_compute=0.5))
    pm.apply()
    pm.start_counting()
    _greedy(model, n=8, pruner=pm)
    gate = pm.gate
    run = [i for i in range(10) if i not in gate.skip]
    assert len(run) == math.ceil(0.5 * 10)
    assert {0, 1, 9} <= set(run)
    cold_run = [i for i in run if i not in (0, 1, 9)]
    cold_skipped = sorted(gate.skip)
    assert min(gate.temperatures[i] for i in cold_run) >= max(gate.temperatures[i] for i in cold_skipped)
    assert pm.get_metrics()["decode_skip_ratio"] == pytest.approx(5 / 10)


def test_adjust_compression_level_is_monotone_and_reversible():
    model = tiny_llama(num_layers=6)
    reference = copy.deepcopy(model)
    lcs = LayerCompressionAndSkipping(reference, compression_rank=8, hot_path_indices=[0, 1, 5], skip_threshold=0.0)
    lcs.apply_low_rank_factorization()
    lcs.update_model_with_gating()
    prompt = _prompt()
    with torch.no_grad():
        reference(prompt)  # the first forward measures temperatures
        first = reference(prompt).logits  # compressed and gated at c = 1
        original_params = count_parameters(reference)
        low = lcs.adjust_compression_level(0.25)
        assert low["rank"] == 2 and low["skip_threshold"] == pytest.approx(0.75)
        assert count_parameters(reference) < original_params
        assert not torch.allclose(reference(prompt).logits, first)
        mid = lcs.adjust_compression_level(0.5)
        assert mid["rank"] == 4 and mid["skip_threshold"] < low["skip_threshold"]
        back = lcs.adjust_compression_level(1.0)
        assert back["rank"] == 8 and back["skip_threshold"] == pytest.approx(0.0)
        assert count_parameters(reference) == original_params
        torch.testing.assert_close(reference(prompt).logits, first, atol=1e-6, rtol=1e-6)
    with pytest.raises(UsageError):
        lcs.adjust_compression_level(0.0)
    for bad in ("0.5", None, True, float("nan")):
        with pytest.raises(UsageError, match=r"^available_compute must be (a number )?in \(0, 1\], got "):
            lcs.adjust_compression_level(bad)


@pytest.mark.parametrize("factory", [tiny_llama, tiny_gpt2])
def test_seed_readme_snippet_runs_as_written(factory):
    model = factory(num_layers=6)
    input_ids = _prompt()
    lcs = LayerCompressionAndSkipping(
        model=model,
        compression_rank=8,
        hot_path_indices=[0, 1, model.config.num_hidden_layers - 1],
        skip_threshold=0.3,
    )
    lcs.apply_low_rank_factorization()
    lcs.update_model_with_gating()
    lcs.adjust_compression_level(available_compute=0.5)
    outputs = model(input_ids)  # first call measures the temperatures
    outputs = model(input_ids)  # later calls skip
    metrics = lcs.get_metrics()
    assert outputs.logits.shape == (1, 12, VOCAB)
    assert metrics["layers_skipped"] > 0 and 0 < metrics["skip_ratio"] < 1
    assert metrics["compression_ratio"] < 1 and metrics["layer_flops_saved"] > 0
    assert metrics["num_parameters"] == count_parameters(model)


def test_bad_values():
    with pytest.raises(UsageError, match="compression_rank"):
        PruneModel(tiny_llama(), None, PruneConfig(method="lowrank", compression_rank=0)).apply()
    with pytest.raises(UsageError, match="compression_ratio"):
        PruneModel(tiny_llama(), None, PruneConfig(method="lowrank", compression_ratio=1.5)).apply()
    with pytest.raises(UsageError, match="hot_path"):
        PruneModel(tiny_llama(), None, PruneConfig(method="gated", hot_path=[9])).apply()
    with pytest.raises(UsageError, match="skip_threshold"):
        PruneModel(tiny_llama(), None, PruneConfig(method="gated", skip_threshold=1.5)).apply()
    with pytest.raises(UsageError, match="available_compute"):
        PruneModel(tiny_llama(), None, PruneConfig(method="gated", available_compute=0)).apply()


@pytest.mark.parametrize("factory", [tiny_llama, tiny_gpt2])
def test_gating_also_skips_inside_hf_generate(factory):
    model = factory(num_layers=6)
    pm = PruneModel(model, None, PruneConfig(method="gated", skip_threshold=1.0))
    pm.apply()
    pm.start_counting()
    model.generate(_prompt(), max_new_tokens=6, min_new_tokens=6, do_sample=False, pad_token_id=0)
    assert pm.layer_call_counts() == [6, 6, 1, 1, 1, 6]  # cold layers only run in the prefill
