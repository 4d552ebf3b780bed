"""--prune_method block_influence (ShortGPT): known answers on identity layers, BI against Hugging Face's hidden
states, stand-ins per removed run, and its flags."""
import random

import pytest
import torch

from layerbench.errors import UsageError
from layerbench.runs.flag_checks import check_flags
from layerbench.runs.arguments import parse_args
from layerbench.runs.ranks import DistInfo
from layerbench.surgery.layers import make_identity_layers
from layerbench.surgery.methods.block_influence import block_influence
from pruned_model import Calibration, PruneConfig, PruneModel
from tests.helpers import VOCAB, greedy, tiny_gpt2, tiny_llama


def _calibration(n=10, seed=0):
    rng = random.Random(seed)
    ids = [[rng.randrange(VOCAB) for _ in range(rng.randrange(5, 30))] for _ in range(n)]
    return lambda: Calibration(ids, {"dataset": "synthetic", "split": "none", "seed": seed})


@pytest.mark.parametrize("factory", [tiny_llama, tiny_gpt2])
def test_removes_exactly_the_identity_layers_even_when_apart(factory):
    """Identity layers turn nothing (BI = 0); angular pruning could not pick 2, 5 and 7, which are not adjacent."""
    model = factory(num_layers=10)
    make_identity_layers(model, [2, 5, 7])
    report = PruneModel(model, None, PruneConfig(method="block_influence", prune_n=3), _calibration()).apply()
    assert report["removed_layers"] == [2, 5, 7]
    assert report["kept_layers"] == [0, 1, 3, 4, 6, 8, 9]
    bi = report["block_influence"]
    assert [bi[i] for i in (2, 5, 7)] == pytest.approx([0.0] * 3, abs=1e-6)
    assert min(bi[i] for i in range(10) if i not in (2, 5, 7)) > 1e-3
    assert model.config.num_hidden_layers == 7


def test_block_influence_is_one_minus_the_mean_cosine_over_every_token():
    """Against HF's output_hidden_states: x_i enters layer i, x_{i+1} leaves it (the last one before the final
    norm, which HF's last hidden state already has applied, so the last layer is checked up to it)."""
    model = tiny_llama(num_layers=4)
    seqs = [[5, 6, 7, 8], [1, 2, 3, 4, 5, 6, 7, 8, 9]]
    ours = block_influence(model, seqs)
    with torch.no_grad():
        states = [model(torch.tensor([s]), output_hidden_states=True).hidden_states for s in seqs]
    expected = []
    for i in range(3):
        cos = torch.cat([torch.nn.functional.cosine_similarity(h[i][0], h[i + 1][0], dim=-1) for h in states])
        expected.append(float(1 - cos.mean()))
    assert ours[:3] == pytest.approx(expected, abs=1e-5)
    assert len(ours) == 4


def test_stand_ins_replace_each_removed_run():
    model = tiny_llama(num_layers=8)
    make_identity_layers(model, [2, 3, 6])
    pm = PruneModel(model, None, PruneConfig(method="block_influence", prune_n=3, stand_in="linear"), _calibration())
    report = pm.apply()
    assert report["removed_layers"] == [2, 3, 6]
    assert pm.stand_in_runs == [(2, 4), (6, 7)]
    assert [run["removed_layers"] for run in report["stand_in"]["runs"]] == [[2, 3], [6]]
    assert pm.num_blocks == 5 + 2
    assert len(greedy(model, torch.tensor([[3, 14, 15, 92]]), 8).token_ids) == 8


@pytest.mark.parametrize("argv, message", [
    (["--prune_method", "block_influence"], "--prune_n must be >= 1 for --prune_method block_influence"),
    (["--prune_method", "random", "--dropout_threshold", "0.1", "--prune_n", "2"],
     "--prune_n only applies to --prune_method angular or block_influence, not random"),
])
def test_flags(argv, message):
    with pytest.raises(UsageError, match=message):
        check_flags(parse_args(argv), DistInfo())


def test_prune_n_too_large_for_the_model():
    pm = PruneModel(tiny_llama(num_layers=4), None, PruneConfig(method="block_influence", prune_n=4), _calibration())
    with pytest.raises(UsageError, match=r"--prune_n must satisfy 1 <= n < 4"):
        pm.apply()
