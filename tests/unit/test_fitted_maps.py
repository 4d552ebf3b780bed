"""Closed-form stand-ins and exit adapters, and perplexity through the engine."""
import copy
import math
import random

import pytest
import torch

from layerbench.engine.engine import Engine
from layerbench.evaluation.perplexity import reference_nll
from layerbench.surgery.exit_adapter import fit_exit_adapter, install_exit_adapter
from layerbench.surgery.layers import count_parameters
from layerbench.surgery.linear_fit import ResidualFit
from pruned_model import Calibration, PruneConfig, PruneModel
from tests.helpers import VOCAB, greedy, prompt_ids, speculative, tiny_llama


def _calibration(n=16, seed=0):
    rng = random.Random(seed)
    ids = [[rng.randrange(VOCAB) for _ in range(rng.randrange(20, 60))] for _ in range(n)]
    return lambda: Calibration(ids, {"dataset": "synthetic", "split": "none", "seed": seed})


def test_residual_fit_recovers_an_exact_affine_map_and_the_first_position_update():
    torch.manual_seed(0)
    d = 12
    W, b, c = torch.randn(d, d) * 0.3, torch.randn(d), torch.randn(d)
    fit = ResidualFit(d, ridge=1e-9)
    for _ in range(20):
        x = torch.randn(30, d) * (1 + torch.rand(30, 1) * 5)
        y = x + x @ W + b
        y[0] = x[0] + c  # position 0 follows its own rule
        fit.add(x, y)
    W_hat, b_hat, c_hat, report = fit.solve()
    torch.testing.assert_close(W_hat.float(), W, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(b_hat.float(), b, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(c_hat.float(), c, atol=1e-5, rtol=1e-5)
    assert report["calibration_tokens"] == 20 * 29
    assert report["relative_error_before"] > 0.1 and report["relative_error_after"] < 1e-5
    assert report["position0_relative_error_after"] < 1e-5


def test_stand_in_replaces_the_removed_run_and_counts_its_parameters():
    model = tiny_llama(num_layers=8)
    plain = PruneModel(copy.deepcopy(model), None, PruneConfig(method="angular", prune_n=3), _calibration())
    with_stand_in = PruneModel(model, None, PruneConfig(method="angular", prune_n=3, stand_in="linear"),
                               _calibration())
    a, b = plain.apply(), with_stand_in.apply()
    assert a["removed_layers"] == b["removed_layers"]
    d = model.config.hidden_size
    assert b["num_parameters_after"] == a["num_parameters_after"] + d * d + 2 * d
    assert b["num_bytes_after"] == a["num_bytes_after"] + 4 * (d * d + 2 * d)
    [run] = b["stand_in"]["runs"]
    assert run["removed_layers"] == b["removed_layers"] and run["inserted_before_position"] == b["removed_layers"][0]
    assert run["relative_error_after"] < run["relative_error_before"]
    assert run["calibration_tokens"] > 0 and run["fit_seconds"] > 0
    engine = Engine(model)
    assert engine.num_blocks == with_stand_in.num_layers + 1 == with_stand_in.num_blocks
    # exit layers at or past the run's end include the stand-in; inside the run they do not
    start = b["removed_layers"][0]
    assert with_stand_in.map_exit_layer(start + 3) == start + 1 and with_stand_in.map_exit_layer(start + 1) == start
    prompt = prompt_ids()
    exit_layer = with_stand_in.map_exit_layer(7)
    assert speculative(engine, prompt, 30, exit_layer, 3).token_ids == greedy(engine, prompt, 30).token_ids


def test_exit_adapter_is_used_for_drafts_only_and_keeps_greedy_output():
    model = tiny_llama(num_layers=6)
    pm = PruneModel(model, None, PruneConfig(method="base"), _calibration())
    pm.apply()
    plain = Engine(copy.deepcopy(model))
    report = install_exit_adapter(pm, fit_exit_adapter(pm, 3))
    assert report["parameters"] == 64 * 64 + 64 and report["exit_block"] == 3
    assert count_parameters(model) == pm.num_parameters_original + 64 * 64 + 64
    adapted = Engine(model)
    prompt = prompt_ids()
    full = greedy(adapted, prompt, 30).token_ids
    assert full == greedy(plain, prompt, 30).token_ids  # the full model never uses the adapter
    assert speculative(adapted, prompt, 30, 3, 4).token_ids == full
    assert greedy(adapted, prompt, 30, exit_layer=3).token_ids != greedy(plain, prompt, 30, exit_layer=3).token_ids


@pytest.mark.parametrize("factory", [tiny_llama])
def test_perplexity_equals_hf_loss_on_the_reference(factory):
    model = factory()
    prompt, reference = prompt_ids(1, 12).tolist()[0], prompt_ids(2, 9).tolist()[0]
    ours = reference_nll(Engine(model), prompt, reference)
    ids = torch.tensor([prompt + reference])
    labels = ids.clone()
    labels[0, :len(prompt)] = -100
    with torch.no_grad():
        hf_mean_nll = float(model(ids, labels=labels).loss)
    assert ours["tokens"] == 9
    assert ours["nll_sum"] / 9 == pytest.approx(hf_mean_nll, rel=1e-5)
    assert ours["perplexity"] == pytest.approx(math.exp(hf_mean_nll), rel=1e-5)


def test_draft_vocabulary_trims_drafts_but_not_the_output():
    from layerbench.surgery.draft_vocabulary import choose_draft_vocabulary, install_draft_vocabulary
    model = tiny_llama(num_layers=6)
    pm = PruneModel(model, None, PruneConfig(method="base"), _calibration())
    pm.apply()
    plain = Engine(copy.deepcopy(model))
    chosen = choose_draft_vocabulary(pm, 20, {0})
    report = install_draft_vocabulary(pm, chosen)
    assert report["size"] == 20 and chosen["token_ids"][0] == 0 and 0 < report["calibration_token_coverage"] < 1
    assert report["num_bytes"] == 20 * 64 * 4 + 20 * 8
    engine = Engine(model)
    hidden = torch.randn(1, 64)
    draft = engine.draft_logits(hidden, 3)
    allowed = torch.zeros(VOCAB, dtype=torch.bool)
    allowed[chosen["token_ids"]] = True
    assert torch.isinf(draft[0, ~allowed]).all()
    torch.testing.assert_close(draft[0, allowed], engine.exit_logits(hidden, 3)[0, allowed])
    prompt = prompt_ids()
    ss = speculative(engine, prompt, 30, 3, 4)
    assert ss.token_ids == greedy(plain, prompt, 30).token_ids
    assert all(0 <= t < VOCAB for t in ss.token_ids)
