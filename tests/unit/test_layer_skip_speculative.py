"""--generation_strategy layer_skip_speculative: greedy output equals autoregressive token for token, every draft is
accepted when the skipped layers are identities, the blocks below the first skipped one run once per token,
the skipped layers chosen by a pruning method on calibration text, its flags, and a benchmark run."""
import glob
import json
import os
import random

import pytest

import benchmark
from layerbench.decoding import STRATEGIES
from layerbench.decoding.sampling import SamplingConfig, StopCondition, TokenChooser
from layerbench.engine.engine import Engine
from layerbench.errors import UsageError
from layerbench.runs.arguments import parse_args
from layerbench.runs.flag_checks import check_flags
from layerbench.runs.ranks import DistInfo
from layerbench.surgery.counting import LayerCallCounter
from layerbench.surgery.layers import make_identity_layers
from pruned_model import Calibration, PruneConfig, PruneModel
from tests.helpers import VOCAB, greedy, prompt_ids, tiny_llama

STRATEGY = STRATEGIES["layer_skip_speculative"]


def _configure(model, *flags, prune=None):
    pruner = PruneModel(model, None, prune or PruneConfig(), _calibration())
    pruner.apply()
    engine = pruner.attach(Engine(model))
    generation = parse_args(["--generation_strategy", "layer_skip_speculative", *flags]).generation
    return engine, STRATEGY.configure(generation, pruner, engine, -1)


def _calibration(n=8, seed=0):
    rng = random.Random(seed)
    ids = [[rng.randrange(VOCAB) for _ in range(rng.randrange(5, 30))] for _ in range(n)]
    return lambda: Calibration(ids, {"dataset": "synthetic", "split": "none", "seed": seed})


def _generate(engine, config, max_steps=40, prompt=None):
    config.max_steps = max_steps
    return STRATEGY.generate(engine, prompt if prompt is not None else prompt_ids(), config,
                             TokenChooser(SamplingConfig()), StopCondition())


@pytest.mark.parametrize("skip, d", [("3-4,6", 3), ("2", 1), ("1-6", 4), ("5-7", 5)])
def test_greedy_output_equals_autoregressive(skip, d):
    model = tiny_llama(num_layers=8)
    engine, config = _configure(model, "--draft_skip_layers", skip, "--num_speculations", str(d))
    result = _generate(engine, config)
    assert result.token_ids == greedy(engine, prompt_ids(), 40).token_ids
    assert len(result.token_ids) == 40 and 0 <= result.num_accepted <= result.num_drafted


def test_every_draft_is_accepted_when_the_skipped_layers_are_identities():
    model = tiny_llama(num_layers=8)
    make_identity_layers(model, [3, 4, 6])
    engine, config = _configure(model, "--draft_skip_layers", "3-4,6", "--num_speculations", "4")
    assert (config.exit_block, config.settings.draft_segments) == (3, [(5, 6), (7, 8)])
    result = _generate(engine, config)
    assert result.num_accepted == result.num_drafted > 0
    assert result.token_ids == greedy(engine, prompt_ids(), 40).token_ids


def test_blocks_below_the_first_skipped_one_run_once_per_token():
    """With every draft accepted: blocks [0, f) see each token once (the prompt, then each committed token as a
    draft input or the bonus pass); blocks from f on also run in verification."""
    model = tiny_llama(num_layers=8)
    make_identity_layers(model, [3, 4, 6])
    engine, config = _configure(model, "--draft_skip_layers", "3-4,6", "--num_speculations", "4")
    counter = LayerCallCounter(8)
    counter.track(dict(enumerate(model.model.layers)))
    engine.counters.append(counter)
    prompt = prompt_ids()
    result = _generate(engine, config, max_steps=21, prompt=prompt)  # 1 + 4 rounds of (4 drafts + a bonus)
    tokens = counter.token_snapshot()
    assert result.num_rounds == 4 and result.num_drafted == 16
    assert tokens[0] == tokens[2] == prompt.shape[1] + 20  # every token but the last one in; none twice
    assert tokens[5] > tokens[0]  # drafted then verified


def test_skipped_layers_chosen_by_a_pruning_method():
    model = tiny_llama(num_layers=8)
    make_identity_layers(model, [2, 5])
    _, config = _configure(model, "--draft_skip", "block_influence:2", "--num_speculations", "3")
    assert config.settings.skipped_layers == [2, 5] and config.settings.chosen_by == "block_influence:2"


def test_skips_map_to_blocks_of_a_pruned_model():
    model = tiny_llama(num_layers=8)
    engine, config = _configure(model, "--draft_skip_layers", "5-6", "--num_speculations", "2",
                                prune=PruneConfig(method="random", dropout_threshold=0.0, protected_layers=[]))
    assert config.settings.skipped_blocks == [5, 6]
    model = tiny_llama(num_layers=8)
    make_identity_layers(model, [1, 2])
    with pytest.raises(UsageError, match=r"cannot skip layers \[2\]: they were pruned"):
        _configure(model, "--draft_skip_layers", "2-3", "--num_speculations", "2",
                   prune=PruneConfig(method="angular", prune_n=2))


@pytest.mark.parametrize("flags, message", [
    ([], "needs one of --draft_skip_layers and --draft_skip"),
    (["--draft_skip_layers", "3", "--draft_skip", "angular:2"], "needs one of"),
    (["--draft_skip_layers", "3", "--num_speculations", "0"], "--num_speculations must be > 0"),
    (["--draft_skip_layers", "3-x"], "expected layers and ranges like 10-15"),
    (["--draft_skip_layers", "5-3"], "range 5-3 is empty"),
    (["--draft_skip", "random:2"], "expected METHOD:N with METHOD one of angular, block_influence"),
    (["--draft_skip", "angular:0"], "expected METHOD:N"),
    (["--draft_skip_layers", "3", "--exit_layer", "4"], "--exit_layer does not apply to layer_skip_speculative"),
    (["--draft_skip_layers", "3", "--draft_vocabulary", "10"], "--draft_vocabulary only applies to"),
])
def test_flags(flags, message):
    argv = ["--generation_strategy", "layer_skip_speculative", "--num_speculations", "3", *flags]
    with pytest.raises(UsageError, match=message):
        check_flags(parse_args(argv), DistInfo())


def test_skipping_the_first_layer_is_refused():
    with pytest.raises(UsageError, match="the draft must compute the first block"):
        _configure(tiny_llama(num_layers=4), "--draft_skip_layers", "0-1", "--num_speculations", "2")


def test_benchmark_run_logs_acceptance_and_the_skip_set(tmp_path, tiny_model_dir):
    common = ["--model", tiny_model_dir, "--num_samples", "2", "--max_steps", "12", "--no_perplexity"]
    assert benchmark.main(common + ["--output_dir", str(tmp_path / "ls"), "--generation_strategy",
                                    "layer_skip_speculative", "--draft_skip_layers", "2-3",
                                    "--num_speculations", "3"]) == 0
    assert benchmark.main(common + ["--output_dir", str(tmp_path / "ar")]) == 0
    docs = {name: json.load(open(glob.glob(os.path.join(tmp_path, name, "benchmark_*.json"))[0]))
            for name in ("ls", "ar")}
    ls = docs["ls"]
    assert ls["generation"]["mode"] == "layer_skip_speculative" and ls["generation"]["num_speculations"] == 3
    assert ls["generation"]["strategy_settings"]["skipped_layers"] == [2, 3]
    assert ls["metrics"]["acceptance_rate"] is not None

    def predictions(name):
        with open(os.path.join(tmp_path, name, docs[name]["samples_file"])) as f:
            return [json.loads(line)["prediction"] for line in f]
    assert predictions("ls") == predictions("ar")
