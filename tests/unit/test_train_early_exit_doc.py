"""bench/train_early_exit.py without running it: the arms' flags, the goals computed from measurements, and its
section of docs/RESULTS.md rendered from a result file."""
import json
import os

import pytest

from tests.conftest import ROOT


@pytest.fixture
def experiment(monkeypatch):
    monkeypatch.syspath_prepend(os.path.join(ROOT, "bench"))
    import train_early_exit
    return train_early_exit


def _arm(acceptance: dict, speedup: float, ppl: float, full: float, random: float, trained: bool) -> dict:
    rows = [{"exit_layer": 15, "num_speculations": d, "draft_confidence": None, "acceptance": a, "speedup": speedup}
            for d, a in acceptance.items()]
    training = {"command": "python train.py --output_dir w", "final": {"seconds": 60.0, "mean_exit_losses":
                                                                         {"30": 2.5}},
                "data": {"examples": 99}} if trained else None
    return {"training": training, "perplexity": {"final": ppl, "exits": {"7": 900.0, "15": 90.0, "22": 9.0}},
            "sweep": {"rows": rows, "best": {**rows[-1], "exit_layer": 15}, "autoregressive_tokens_per_second": 20.0,
                      "all_greedy_equal": True},
            "rouge": {"full model": {"rougeL": full, "perplexity": ppl},
                      "random p=0.2": {"rougeL": random, "perplexity": 2 * ppl},
                      "angular n=6": {"rougeL": random, "perplexity": 3 * ppl}},
            "lm_eval": {"aclsum_mc": {"metrics": {"acc": {"value": 0.5, "stderr": 0.1}}}},
            "speed": {"rows": [{"run": "autoregressive", "tokens_per_second": 20.0, "speedup": 1.0, "acceptance": None},
                               {"run": "E=15 d=2 full head", "speedup": speedup, "acceptance": 0.5,
                                "greedy_equal_to_autoregressive": True},
                               {"run": "E=15 d=2 draft vocabulary 2048", "speedup": speedup + 0.1, "acceptance": 0.5,
                                "greedy_equal_to_autoregressive": True}],
                      "best": {"run": "E=15 d=2 draft vocabulary 2048", "speedup": speedup + 0.1}}}


def test_arms_differ_only_in_their_recipe(experiment):
    a = experiment.parse(["--layer_dropout_max", "0.2", "--early_exit_loss_scale", "2"])
    exits = [7, 15, 22]
    assert experiment.ARMS["stock"](a, exits) is None and experiment.ARMS["control"](a, exits) == []
    assert experiment.ARMS["layerskip"](a, exits) == ["--layer_dropout_max", "0.2", "--early_exit_loss_scale", "2.0",
                                                      "--early_exit_layers", "7", "15", "22"]
    assert experiment.ARMS["layer_dropout"](a, exits) == ["--layer_dropout_max", "0.2"]


def test_goals_and_section(experiment, tmp_path):
    arms = {"stock": _arm({1: 0.05, 2: 0.04}, 0.6, 10.0, 0.30, 0.10, False),
            "control": _arm({1: 0.06, 2: 0.05}, 0.7, 8.0, 0.32, 0.12, True),
            "layerskip": _arm({1: 0.6, 2: 0.3}, 1.35, 8.4, 0.31, 0.21, True)}
    goals = experiment.goals(arms, 30)
    assert goals["acceptance_at_half_depth_vs_stock"]["ratio"] == {1: pytest.approx(12.0), 2: pytest.approx(7.5)}
    assert goals["acceptance_at_half_depth_vs_stock"]["met"] is False  # 7.5x at d=2
    arms["stock"]["sweep"]["rows"][0]["acceptance"] = 0.2  # 10x is impossible at d=1: only d=2 counts
    assert experiment.goals(arms, 30)["acceptance_at_half_depth_vs_stock"]["met"] is False
    arms["layerskip"]["sweep"]["rows"][1]["acceptance"] = 0.45
    assert experiment.goals(arms, 30)["acceptance_at_half_depth_vs_stock"]["met"] is True
    arms["stock"]["sweep"]["rows"][0]["acceptance"], arms["layerskip"]["sweep"]["rows"][1]["acceptance"] = 0.05, 0.3
    assert goals["self_speculative_over_autoregressive_sweep"]["met"] is True
    assert goals["self_speculative_over_autoregressive_speed_check"]["value"] == pytest.approx(1.45)
    assert goals["final_perplexity_vs_control"]["value"] == pytest.approx(1.05)
    assert goals["random_dropout_rouge_loss_layerskip_vs_control"]["value"] == pytest.approx(0.10)
    assert goals["random_dropout_rouge_loss_layerskip_vs_control"]["met"] is True  # 0.10 < 0.20
    doc = {"command": "python -m bench train_early_exit", "model": "m", "num_layers": 30, "exits": [7, 15, 22],
           "seconds": 600.0, "arms": arms,
           "args": {"steps": 25, "batch_size": 1, "accumulation": 4, "learning_rate": 1e-4, "precision": "bf16",
                    "layer_dropout_max": 0.1, "early_exit_loss_scale": 1.0, "speculations": [1, 2],
                    "draft_vocabulary": 2048,
                    "lm_eval_limits": "aclsum_mc=4"}}
    os.makedirs(tmp_path / "train")
    with open(tmp_path / "train" / "train_early_exit_1.json", "w") as f:
        json.dump(doc, f)
    import results_doc
    text = results_doc.write_section(experiment.SECTION, str(tmp_path))
    assert "| layerskip | 60        | 2.500                      |              8.4 |          900 |" in text
    assert "| layerskip |     20.000 |                 0.600 |                 0.300 | E=15 d=2    |" in text
    assert "| control   |     0.320 | 0.1200 (-0.2000) |" in text
    assert "| layerskip |     20.000 | E=15 d=2 full head |   1.350 |        0.500 | E=15 d=2 draft vocabulary 2048 |   1.450 |" in text
    goal_rows = {line.split("|")[1].strip(): [c.strip() for c in line.split("|")[2:-1]]
                 for line in text.splitlines() if line.startswith("| ") and "_vs_" in line}
    assert goal_rows["acceptance_at_half_depth_vs_stock"] == [">= 10x at every d where 10x the stock's is <= 1",
                                                              "d=1: 12, d=2: 7.5", "no"]
    assert goal_rows["final_perplexity_vs_control"] == ["<= 1.10", "1.05", "yes"]


def test_arms_of_an_earlier_result_are_reused_only_with_the_same_flags(experiment, tmp_path):
    earlier = tmp_path / "train_early_exit_0.json"
    args = vars(experiment.parse([]))
    earlier.write_text(json.dumps({"args": args, "arms": {"stock": {"perplexity": {"final": 9.0}}}}))
    same = experiment.parse(["--reuse_measurements", str(earlier)])
    assert experiment.earlier_arms(same) == {"stock": {"perplexity": {"final": 9.0},
                                                       "measured_in": "train_early_exit_0.json"}}
    from layerbench.errors import UsageError
    with pytest.raises(UsageError, match="--steps"):
        experiment.earlier_arms(experiment.parse(["--reuse_measurements", str(earlier), "--steps", "7"]))
