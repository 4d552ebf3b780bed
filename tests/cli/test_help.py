"""benchmark.py --help: answered before torch is imported, grouped as the README's tables, every flag with help,
choices from the registries, each default printed once."""
import argparse
import importlib
import subprocess
import sys
import time

import pytest

from layerbench.decoding import STRATEGIES
from layerbench.evaluation.datasets import DATASETS
from layerbench.runs.arguments import GROUPS, build_parser, parse_args
from layerbench.surgery.config import STAND_INS
from layerbench.surgery.methods import PRUNE_METHODS
from tests.conftest import ROOT

HEAVY = ("torch", "transformers")


def _flag_actions(parser: argparse.ArgumentParser) -> list[argparse.Action]:
    """Every listed flag (the hidden dashed aliases and -h aside)."""
    return [a for a in parser._actions if a.help != argparse.SUPPRESS and not isinstance(a, argparse._HelpAction)]


def test_every_flag_has_help_and_its_default_once():
    parser = build_parser()
    for action in _flag_actions(parser):
        assert action.help and action.help.strip(), action.option_strings
        assert action.help.count("default") <= 1, action.help
    text = parser.format_help()
    assert "(default: 10)" in text and "(default 10" not in text
    assert text.count("--warmup [BOOL]") == 1 and "same as --warmup False" in text


def test_flags_are_grouped_as_the_readme_tables():
    parser = build_parser()
    titles = [g.title for g in parser._action_groups if g._group_actions and g.title not in ("options",)]
    assert titles == ["model and engine", "data", "generation", "pruning, compression and skipping",
                      "metrics and logs", "distributed"] == list(GROUPS)
    group_of = {a.dest: g.title for g in parser._action_groups for a in g._group_actions}
    assert group_of["dtype"] == "model and engine" and group_of["template"] == "data"
    assert group_of["output_dir"] == group_of["perplexity"] == "metrics and logs"
    assert group_of["device_map"] == "distributed" and group_of["stand_in"] == "pruning, compression and skipping"


def test_choices_come_from_the_registries():
    actions = {a.dest: a for a in _flag_actions(build_parser())}
    assert actions["dataset"].choices == list(DATASETS) == actions["calibration_dataset"].choices
    assert actions["prune_method"].choices == list(PRUNE_METHODS)
    assert actions["stand_in"].choices == list(STAND_INS)
    assert actions["generation_strategy"].choices == list(STRATEGIES)
    assert {"autoregressive", "self_speculative", "layer_skip_speculative"} <= set(STRATEGIES)
    assert actions["linear_kernel"].choices == ["auto", "tuned", "torch", "few_row_mm"]


def test_hf_argparser_spellings_still_parse():
    """`--flag True/False`, a bare `--flag`, `--no_flag`, the dashed aliases and list flags, as HfArgumentParser."""
    args = parse_args(["--sample", "--warmup", "false", "--no_perplexity", "--max-steps", "7",
                       "--stop_words", "a", "b", "--stop_token_ids", "3", "4", "--random_shuffle", "0"])
    g = args.generation
    assert (g.sample, args.benchmark.warmup, g.perplexity, g.max_steps) == (True, False, False, 7)
    assert (g.stop_words, g.stop_token_ids, args.dataset.random_shuffle) == (["a", "b"], [3, 4], False)
    defaults = parse_args([]).as_dict()
    assert (defaults["max_steps"], defaults["seed"], defaults["num_samples"], defaults["warmup"]) == (512, 42, 10, True)
    assert defaults["stop_words"] is None and defaults["model"] is None


@pytest.fixture
def without_heavy_modules():
    """Import layerbench afresh with torch and transformers made unimportable; sys.modules restored after."""
    saved = dict(sys.modules)
    for name in list(sys.modules):
        if name == "benchmark" or name.startswith("layerbench"):
            del sys.modules[name]
    for name in HEAVY:
        sys.modules[name] = None  # `import torch` now raises ImportError
    try:
        yield
    finally:
        sys.modules.clear()
        sys.modules.update(saved)


@pytest.mark.parametrize("module", ["benchmark", "layerbench.runs.cli", "layerbench.runs.arguments"])
def test_flags_are_read_without_torch(module, without_heavy_modules):
    importlib.import_module(module)
    with pytest.raises(SystemExit) as exc:
        importlib.import_module("layerbench.runs.arguments").parse_args(["--temperature", "nan"])
    assert exc.value.code == 2


def test_whole_plan_without_torch(without_heavy_modules, tmp_path):
    """Every flag check and the data (the plan) need neither torch nor transformers."""
    plan = importlib.import_module("layerbench.runs.plan").make_plan(
        ["--num_samples", "2", "--n_shot", "1", "--output_dir", str(tmp_path / "out")],
        importlib.import_module("layerbench.runs.ranks").DistInfo())
    assert len(plan.samples) == 2 and plan.shots
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
@pytest.mark.dist
def test_help_subprocess_is_fast():
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "benchmark.py", "--help"], cwd=ROOT, capture_output=True, text=True,
                          timeout=30)
    seconds = time.perf_counter() - t0
    assert proc.returncode == 0 and proc.stderr == ""
    assert all(f"\n{title}:" in proc.stdout for title in GROUPS)
    assert seconds < 5, f"benchmark.py --help took {seconds:.1f} s"
