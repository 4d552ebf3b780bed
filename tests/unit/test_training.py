"""train.py's parts on tiny models: the layer-dropout and exit-weight formulas, per-sample skipping, the data order,
a few training steps (the early-exit loss falls), what each --trainable scope changes, and the saved checkpoint."""
import copy
import math

import pytest
import torch

from layerbench.errors import UsageError
from layerbench.training import arguments, early_exit_loss, layer_dropout
from layerbench.training.cli import main as train_main
from layerbench.training.data import DataOrder
from layerbench.training.forward import LayerSkipModel, StepPlan
from layerbench.training.saving import hf_state_dict
from tests.helpers import tiny_llama


def test_depth_factor_and_rates_follow_the_formulas():
    L, p_max = 6, 0.3
    assert [layer_dropout.depth_factor(l, L) for l in range(L)] == [math.exp(l * math.log(2) / 5) - 1
                                                                     for l in range(L)]
    assert layer_dropout.depth_factor(0, L) == 0.0 and layer_dropout.depth_factor(L - 1, L) == pytest.approx(1.0)
    assert layer_dropout.exponential(0, 10) == 0.0 and layer_dropout.exponential(10, 10) == pytest.approx(1.0)
    assert layer_dropout.exponential(5, 10) == pytest.approx(math.sqrt(2) - 1, rel=1e-14)
    rates = layer_dropout.dropout_rates(5, 10, L, p_max, "exponential")
    assert rates == pytest.approx([(math.sqrt(2) - 1) * layer_dropout.depth_factor(l, L) * p_max for l in range(L)],
                                  rel=1e-14)
    assert layer_dropout.dropout_rates(3, 10, L, p_max, "constant")[-1] == pytest.approx(p_max)


def test_exit_weights_follow_the_formula():
    L, scale = 6, 2.0
    assert [early_exit_loss.exit_weight(e, L, scale) for e in range(1, L)] == [scale * sum(range(e)) for e in
                                                                               range(1, L)]
    assert early_exit_loss.exit_weight(L, L, scale) == (L - 1) + scale * sum(range(L - 1))  # 5 + 2 * 10 = 25
    weights = early_exit_loss.normalized_weights([2, 4, L], L, scale)
    assert weights == {2: 2 / 39, 4: 12 / 39, 6: 25 / 39}  # raw 2, 12, 25
    assert early_exit_loss.normalized_weights([1, L], L, 0.0) == {L: 1.0}  # scale 0: the last layer alone


def test_curricula_choose_the_exits():
    candidates = [1, 2, 3, 4, 5]
    assert early_exit_loss.active_exits(0, 10, candidates, "rotational", 2, 6) == [1, 3, 5, 6]
    assert early_exit_loss.active_exits(1, 10, candidates, "rotational", 2, 6) == [2, 4, 6]
    assert early_exit_loss.active_exits(7, 10, candidates, "rotational", 3, 6) == [2, 5, 6]
    assert early_exit_loss.active_exits(0, 5, candidates, "gradual", 2, 6) == [5, 6]
    assert early_exit_loss.active_exits(2, 5, candidates, "gradual", 2, 6) == [3, 4, 5, 6]
    assert early_exit_loss.active_exits(4, 5, candidates, "gradual", 2, 6) == [1, 2, 3, 4, 5, 6]
    assert early_exit_loss.active_exits(3, 5, candidates, "none", 2, 6) == [1, 2, 3, 4, 5, 6]


def test_registries_answer_to_the_flag_choices():
    assert tuple(layer_dropout.CURRICULA) == arguments.DROPOUT_CURRICULA
    assert tuple(early_exit_loss.CURRICULA) == arguments.EXIT_CURRICULA


def test_no_layer_is_dropped_at_p_zero_and_the_last_at_the_asked_rate():
    generator = torch.Generator().manual_seed(0)
    zero = layer_dropout.sample_skips(layer_dropout.dropout_rates(0, 10, 6, 0.0, "constant"), 5000, generator)
    assert not zero.any()
    n, p = 20000, 0.3
    rates = layer_dropout.dropout_rates(0, 10, 6, p, "constant")
    skips = layer_dropout.sample_skips(rates, n, generator)
    assert not skips[0].any()  # D(0) = 0
    for layer in (2, 5):  # binomial counts: within 4.5 standard deviations (a false alarm is ~1e-5 likely)
        expected, sd = n * rates[layer], math.sqrt(n * rates[layer] * (1 - rates[layer]))
        assert abs(int(skips[layer].sum()) - expected) <= 4.5 * sd
    assert rates[5] == pytest.approx(p)


def test_a_skipped_row_is_the_model_without_that_layer():
    """Per-sample dropout: row b of a batch equals that example run alone through the model with its skipped
    layers removed; layers at p = 0 leave the output equal to the model's own forward."""
    torch.manual_seed(0)
    model = tiny_llama(num_layers=4)
    reference = copy.deepcopy(model)
    ids = torch.randint(0, 101, (3, 9))
    module = LayerSkipModel(model)
    skips = torch.tensor([[0, 0, 0], [0, 1, 0], [1, 0, 0], [0, 1, 1]], dtype=torch.bool)  # (L, B)
    seen = {}
    for i, w in enumerate(module.wrappers()):
        w.skip, w.record = skips[i], (lambda h, i=i: seen.__setitem__(i, h))
    with torch.no_grad():
        module.model.base_model(input_ids=ids, use_cache=False)
        for b in range(3):
            alone = copy.deepcopy(reference)
            alone.model.layers = torch.nn.ModuleList(l for i, l in enumerate(alone.model.layers) if not skips[i, b])
            expected = alone.model(input_ids=ids[b:b + 1]).last_hidden_state
            got = module.model.model.norm(seen[3][b:b + 1])
            torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
        for w in module.wrappers():
            w.skip, w.record = None, None
        torch.testing.assert_close(module.model(input_ids=ids).logits, reference(input_ids=ids).logits)


def test_data_order_is_a_function_of_the_step():
    order = DataOrder(num_examples=10, batch_size=2, accumulation=2, processes=1, seed=3)
    epoch = [i for step in range(2) for micro in range(2) for i in order.rows(step, micro, 0)] + order.rows(2, 0, 0)
    assert sorted(epoch) == list(range(10))  # every example once per epoch
    assert DataOrder(10, 2, 2, 1, 3).rows(4, 1, 0) == order.rows(4, 1, 0)
    two = DataOrder(num_examples=10, batch_size=2, accumulation=1, processes=2, seed=3)
    assert two.rows(0, 0, 0) + two.rows(0, 0, 1) == order.rows(0, 0, 0) + order.rows(0, 1, 0)


def test_state_dict_names_map_back_to_the_model():
    state = {"model.model.layers.3.layer.mlp.up_proj.weight": 1, "model.lm_head.weight": 2, "adapter.weight": 3}
    assert hf_state_dict(state, "model.layers") == {"model.layers.3.mlp.up_proj.weight": 1, "lm_head.weight": 2}


def test_a_few_steps_lower_the_early_exit_loss():
    """The training pass on a tiny model: a few AdamW steps with layer dropout and the early-exit loss at exit 2
    lower that exit's cross-entropy, and each active exit reports its own."""
    model = tiny_llama(num_layers=4).train()
    module = LayerSkipModel(model)
    optimizer = torch.optim.AdamW(module.parameters(), lr=3e-3)
    ids = torch.randint(0, 101, (4, 24), generator=torch.Generator().manual_seed(0))
    mask, generator = torch.ones_like(ids), torch.Generator().manual_seed(1)
    weights = early_exit_loss.normalized_weights([2, 4], 4, 1.0)
    losses = []
    for step in range(12):
        skips = layer_dropout.sample_skips(layer_dropout.dropout_rates(step, 12, 4, 0.2, "constant"), 4, generator)
        loss, by_exit = module(ids, mask, ids, StepPlan(skips, weights))
        assert sorted(by_exit) == [2, 4] and torch.isclose(loss, weights[2] * by_exit[2] + weights[4] * by_exit[4])
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append(float(by_exit[2].detach()))
    assert losses[-1] < losses[0] - 1.0, losses


BAD = [
    ([], "--output_dir is required"),
    (["--layer_dropout_max", "1"], "--layer_dropout_max"),
    (["--early_exit_curriculum", "rotational"], "--early_exit_curriculum only applies"),
    (["--early_exit_loss_scale", "1", "--early_exit_rotation", "3"], "--early_exit_rotation only applies"),
    (["--trainable", "exit_adapter"], "--exit_layer"),
    (["--exit_layer", "3"], "--exit_layer only applies"),
    (["--trainable", "exit_adapter", "--exit_layer", "3", "--layer_dropout_max", "0.1"], "does not apply"),
    (["--dataset", "text_files"], "--data_path"),
    (["--data_path", "x.jsonl"], "--data_path only applies"),
    (["--warmup_steps", "100"], "--warmup_steps"),
    (["--learning_rate", "nan"], "--learning_rate"),
    (["--seed", "-1"], "--seed"),
    (["--layer_dropout_curriculum", "exponential"], "--layer_dropout_curriculum only applies"),
    (["--resume"], "holds no saved training state"),
]


@pytest.mark.parametrize("flags,message", BAD)
def test_bad_flags_are_one_line_errors(flags, message, tmp_path, capsys):
    out = [] if flags == [] else ["--output_dir", str(tmp_path / "out")]
    assert train_main(out + flags) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and message in err, err
    assert not (tmp_path / "out").exists()


def test_flags_too_deep_for_the_model_are_refused(tmp_path, tiny_model_dir, capsys):
    assert train_main(["--model", tiny_model_dir, "--output_dir", str(tmp_path / "o"), "--early_exit_loss_scale",
                       "1", "--early_exit_layers", "6"]) == 2
    assert "must be below the model's 6 layers" in capsys.readouterr().err


def test_a_used_output_dir_needs_resume(tmp_path, capsys):
    (tmp_path / "training_log.json").write_text("{}")
    assert train_main(["--output_dir", str(tmp_path)]) == 2
    assert "--resume" in capsys.readouterr().err
    with pytest.raises(UsageError):
        from layerbench.training.checkpoint import check_resumable
        check_resumable(str(tmp_path), {})
