import gc
import random
import weakref

import pytest
import torch
from transformers import AutoModelForCausalLM

from layerbench.engine.engine import Engine
from layerbench.errors import UsageError
from layerbench.models.families import get_family
from layerbench.surgery.methods.angular import angular_distances
from layerbench.surgery.calibration import last_token_states
from layerbench.surgery.layers import count_parameters, make_identity_layers
from pruned_model import Calibration, PruneConfig, PruneModel
from tests.helpers import VOCAB, greedy, hf_greedy, speculative, tiny_gpt2, tiny_llama


def _calibration(n=12, seed=0):
    rng = random.Random(seed)
    ids = [[rng.randrange(VOCAB) for _ in range(rng.randrange(5, 40))] for _ in range(n)]
    return lambda: Calibration(ids, {"dataset": "synthetic", "split": "none", "seed": seed})


def _layer_params(layers, indices):
    return sum(p.numel() for i in indices for p in layers[i].parameters())


@pytest.mark.parametrize("factory", [tiny_llama, tiny_gpt2])
def test_angular_removes_exactly_the_identity_layers(factory):
    model = factory(num_layers=10)
    make_identity_layers(model, [5, 6, 7])
    layers = list(get_family(model).layers(model))
    before = count_parameters(model)
    removed_params = _layer_params(layers, [5, 6, 7])
    pm = PruneModel(model, None, PruneConfig(method="angular", prune_n=3), _calibration())
    report = pm.apply()
    assert report["removed_layers"] == [5, 6, 7]
    assert report["best_start_layer"] == 5
    assert report["distances"][5] == pytest.approx(0.0, abs=1e-3)
    assert min(d for i, d in enumerate(report["distances"]) if i != 5) > 0.01
    assert report["kept_layers"] == [0, 1, 2, 3, 4, 8, 9]
    assert model.config.num_hidden_layers == 7
    assert report["num_parameters_after"] == count_parameters(model) == before - removed_params
    assert report["calibration"]["samples"] == 12


def test_angular_distance_definition():
    states = torch.tensor([[[1.0, 0.0]], [[1.0, 1.0]], [[0.0, 1.0]]])  # 3 "layers", one sample
    assert angular_distances(states, 1) == pytest.approx([0.25, 0.25])
    assert angular_distances(states, 2) == pytest.approx([0.5])


def test_last_token_states_match_hf_hidden_states():
    """Calibration states come from the engine's own forward; HF's output_hidden_states is the oracle."""
    model = tiny_llama()
    seqs = [[5, 6, 7], [1, 2, 3, 4, 5, 6, 7, 8]]
    states = last_token_states(Engine(model), seqs)
    assert states.shape == (7, 2, 64)
    with torch.no_grad():
        for k, seq in enumerate(seqs):
            hidden = model(torch.tensor([seq]), output_hidden_states=True).hidden_states
            # HF's last entry is after the final norm; ours is the last layer's raw output
            expected = torch.stack([h[0, -1] for h in hidden[:-1]])
            torch.testing.assert_close(states[:-1, k], expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("factory", [tiny_llama, tiny_gpt2])
def test_removed_layers_never_run_and_generation_stays_exact(factory):
    model = factory(num_layers=8)
    pm = PruneModel(model, None, PruneConfig(method="random", dropout_threshold=0.4, prune_seed=3))
    report = pm.apply()
    assert report["removed_layers"], "seed 3 should drop something"
    pm.start_counting()
    engine = pm.attach(Engine(model))
    prompt = torch.randint(0, VOCAB, (1, 9), generator=torch.Generator().manual_seed(0))
    exit_layer = pm.map_exit_layer(4)
    ar = greedy(engine, prompt, 20)
    ss = speculative(engine, prompt, 20, exit_layer=exit_layer, num_speculations=3)
    assert ss.token_ids == ar.token_ids
    counts = pm.layer_call_counts()
    assert all(counts[i] == 0 for i in report["removed_layers"])
    assert all(counts[i] > 0 for i in report["kept_layers"])
    # a pruned model generates what an HF model with the same remaining layers generates
    assert ar.token_ids == hf_greedy(model, prompt, 20)


@pytest.mark.parametrize("factory", [tiny_llama, tiny_gpt2])
def test_removed_layers_are_released(factory):
    """Nothing keeps a removed layer alive: its memory is really returned."""
    model = factory(num_layers=6)
    layers = get_family(model).layers(model)
    removed = weakref.ref(layers[2])
    pm = PruneModel(model, None, PruneConfig(method="base"))
    before = pm.num_bytes()
    layer_bytes = sum(p.numel() * p.element_size() for p in layers[2].parameters())
    pm.remove_layers([2])
    del layers
    gc.collect()
    assert removed() is None
    assert pm.num_bytes() == before - layer_bytes


def test_random_dropout_is_seeded_and_protects_layers():
    def removed(seed, protected=()):
        pm = PruneModel(tiny_llama(num_layers=12), None,
                        PruneConfig(method="random", dropout_threshold=0.5, prune_seed=seed, protected_layers=list(protected)))
        return pm.apply()["removed_layers"]
    assert removed(1) == removed(1)
    assert removed(1) != removed(2)
    assert not {0, 1, 11} & set(removed(1, protected=[0, 1, 11]))
    rng = random.Random(1)
    expected = [i for i, u in enumerate([rng.random() for _ in range(12)]) if u < 0.5]
    assert removed(1) == expected


def test_random_dropout_always_keeps_one_layer():
    pm = PruneModel(tiny_llama(num_layers=4), None, PruneConfig(method="random", dropout_threshold=0.999999, prune_seed=0))
    report = pm.apply()
    assert report["num_layers_after"] == 1 and len(report["removed_layers"]) == 3


def test_exit_layer_mapping():
    pm = PruneModel(tiny_llama(num_layers=10), None, PruneConfig(method="base"))
    pm.remove_layers([2, 3, 7])
    assert pm.kept_layers == [0, 1, 4, 5, 6, 8, 9]
    assert [pm.map_exit_layer(e) for e in (1, 2, 4, 5, 8, 10)] == [1, 2, 2, 3, 5, 7]
    # attention modules are re-indexed so each kept layer has its own cache slot
    assert [layer.self_attn.layer_idx for layer in pm.model.model.layers] == list(range(7))


def test_base_runs_no_calibration():
    def boom():
        raise AssertionError("base must not calibrate")
    report = PruneModel(tiny_llama(), None, PruneConfig(method="base"), boom).apply()
    assert report["removed_layers"] == [] and report["num_parameters_after"] == report["num_parameters_before"]


@pytest.mark.parametrize("cfg", [PruneConfig(method="angular", prune_n=0), PruneConfig(method="angular", prune_n=6),
                                 PruneConfig(method="random", dropout_threshold=1.0),
                                 PruneConfig(method="random", dropout_threshold=-0.1),
                                 PruneConfig(method="random", dropout_threshold=0.1, protected_layers=[6])])
def test_bad_prune_parameters(cfg):
    with pytest.raises(UsageError):
        PruneModel(tiny_llama(num_layers=6), None, cfg, _calibration()).apply()


def test_saved_pruned_model_reloads_with_fewer_layers(tmp_path, embedded_tokenizer):
    model = tiny_llama(num_layers=6, vocab=len(embedded_tokenizer))
    pm = PruneModel(model, embedded_tokenizer, PruneConfig(method="base"))
    pm.remove_layers([1, 4])
    pm.save(str(tmp_path))
    reloaded = AutoModelForCausalLM.from_pretrained(str(tmp_path)).eval()
    assert reloaded.config.num_hidden_layers == 4
    prompt = torch.randint(0, 1000, (1, 7), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(reloaded(prompt).logits, model(prompt).logits)


def test_another_ranks_decision_is_replayed_without_calibrating():
    """Rank 0 decides; another rank applies its decision to its own copy with no calibration data at all."""
    first, second = tiny_llama(num_layers=8), tiny_llama(num_layers=8)
    config = PruneConfig(method="angular", prune_n=2, stand_in="linear")
    decider = PruneModel(first, None, config, _calibration())
    report = decider.apply()
    follower = PruneModel(second, None, config, calibration=None)  # calibrating would raise
    replayed = follower.apply(decider.decision())
    assert replayed["removed_layers"] == report["removed_layers"]
    assert replayed["distances"] == report["distances"]
    prompt = torch.tensor([[3, 14, 15, 92, 65]])
    assert greedy(second, prompt, 12).token_ids == greedy(first, prompt, 12).token_ids


def test_options_two_methods_share_must_agree():
    from dataclasses import dataclass

    from layerbench.flags import option
    from layerbench.surgery.config import method_fields
    from layerbench.surgery.method import Decision, PruneMethod

    @dataclass
    class A:
        hot_path: int = option(1, "a")

    @dataclass
    class B:
        hot_path: int = option(2, "b")

    def make(name, options):
        return PruneMethod(name=name, summary="", decide=lambda t: Decision(), options=options)
    assert method_fields([make("a", A), make("c", A)])["hot_path"][2] == {"a": "a", "c": "a"}
    with pytest.raises(TypeError, match="option hot_path of b differs from the one of a"):
        method_fields([make("a", A), make("b", B)])


def test_a_checkpoint_that_cannot_be_written_is_one_line(monkeypatch, tmp_path):
    pm = PruneModel(tiny_llama(num_layers=2), None, PruneConfig(method="base"))
    with pytest.raises(UsageError, match=r"^--save_pruned_model must name a folder, got ''$"):
        pm.save("")

    def full_disk(directory, **kwargs):
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(pm.model, "save_pretrained", full_disk)
    with pytest.raises(UsageError, match=f"^--save_pruned_model {tmp_path}/out: cannot write the checkpoint "
                                         r"\(No space left on device\)$"):
        pm.save(str(tmp_path / "out"))
