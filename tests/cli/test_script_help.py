"""analyze_logs.py and the bench scripts: --help and bad flags answered before torch is imported, flags grouped,
every flag with help."""
import argparse
import importlib
import os
import subprocess
import sys

import pytest

import analyze_logs
from layerbench.errors import OneLineArgumentParser
from tests.conftest import ROOT

BENCH_SCRIPTS = ["speed", "draft_confidence", "linear_kernels", "fit_choices", "compare_predictions", "sweep_exit",
                 "engine_versions", "train_early_exit"]
GROUPED = {"speed": ["model and prompts", "timing", "self-speculation", "output"],
           "draft_confidence": ["model and prompts", "timing", "self-speculation", "output"],
           "linear_kernels": ["model", "timing", "output"]}


def _parser_of(main, monkeypatch) -> argparse.ArgumentParser:
    """The parser a script's main() builds (stopped where it would parse)."""
    seen = []

    def capture(self, args=None, namespace=None):
        seen.append(self)
        raise SystemExit(0)
    monkeypatch.setattr(OneLineArgumentParser, "parse_args", capture)
    with pytest.raises(SystemExit):
        main()
    return seen[0]


def _check(parser: argparse.ArgumentParser, groups: list[str]) -> None:
    for action in parser._actions:
        assert action.help and action.help.strip(), action.option_strings or action.dest
        assert action.help.count("default") <= 1, action.help
    titles = [g.title for g in parser._action_groups if g._group_actions]
    assert all(title in titles for title in groups), titles


@pytest.fixture
def bench(monkeypatch):
    monkeypatch.syspath_prepend(os.path.join(ROOT, "bench"))
    return lambda name: importlib.import_module(name)


@pytest.mark.parametrize("name", BENCH_SCRIPTS)
def test_bench_flags_are_grouped_and_have_help(name, bench, monkeypatch):
    _check(_parser_of(bench(name).main, monkeypatch), GROUPED.get(name, []))


def test_speed_refuses_a_negative_draft_vocabulary_at_once(bench, monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", ["speed.py", "--draft_vocabulary", "-1"])
    with pytest.raises(SystemExit) as exc:
        bench("speed").main()
    assert exc.value.code == 2
    assert capsys.readouterr().err.splitlines() == ["error: argument --draft_vocabulary: must be >= 0, got -1"]


def test_analyze_logs_flags_are_grouped_and_have_help(monkeypatch):
    _check(_parser_of(lambda: analyze_logs.main([]), monkeypatch), ["which runs", "output"])


HELP_WITHOUT_TORCH = """
import os, runpy, sys
sys.argv = [sys.argv[1], "--help"]
sys.path.insert(0, os.path.dirname(os.path.abspath(sys.argv[0])))  # as `python SCRIPT` does
try:
    runpy.run_path(sys.argv[0], run_name="__main__")
except SystemExit as exc:
    assert exc.code in (0, None), exc.code
print("heavy modules imported:", sorted(m for m in ("torch", "transformers") if m in sys.modules))
"""


@pytest.mark.slow
@pytest.mark.dist
@pytest.mark.parametrize("script", ["analyze_logs.py"] + [f"bench/{name}.py" for name in BENCH_SCRIPTS])
def test_script_help_imports_neither_torch_nor_transformers(script):
    """--help is answered from the flags alone (each experiment is one file: torch loads on first use)."""
    proc = subprocess.run([sys.executable, "-c", HELP_WITHOUT_TORCH, script], cwd=ROOT, capture_output=True,
                          text=True, timeout=60, env={**os.environ, "PYTHONPATH": ROOT})
    assert proc.returncode == 0 and proc.stderr == "" and proc.stdout.startswith("usage: "), proc.stderr
    assert proc.stdout.strip().endswith("heavy modules imported: []")


def test_bench_entry_point_lists_and_runs_experiments():
    """`python -m bench` lists every experiment (a script with a main()) without torch; an unknown one, or a bad
    flag of a known one, is one line and exit status 2."""
    listing = subprocess.run([sys.executable, "-c", "import sys, runpy; sys.argv = ['bench']; "
                              "runpy.run_module('bench', run_name='__main__')"],
                             cwd=ROOT, capture_output=True, text=True, timeout=60)
    import bench.__main__ as entry
    assert all(f"  {name} " in listing.stdout for name in entry.EXPERIMENTS)
    for module in entry.EXPERIMENTS.values():
        with open(os.path.join(ROOT, "bench", f"{module}.py")) as f:
            assert "\ndef main(" in f.read(), module
    unknown = subprocess.run([sys.executable, "-m", "bench", "nope"], cwd=ROOT, capture_output=True, text=True,
                             timeout=60)
    assert unknown.returncode == 2 and unknown.stderr.startswith("error: unknown experiment 'nope'")
    bad = subprocess.run([sys.executable, "-m", "bench", "speed", "--samples", "0"], cwd=ROOT, capture_output=True,
                         text=True, timeout=60)
    assert bad.returncode == 2 and bad.stderr.strip() == "error: argument --samples: must be >= 1, got 0"
