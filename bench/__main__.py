"""`python -m bench <experiment> [flags]`: one entry point for every measurement; `python -m bench` lists them.

Each experiment is a script in this folder with a `main()` that reads its own flags and writes its JSON under
results/ (through `runner.py`), and a `SECTION` beside it: its part of docs/RESULTS.md (the files it reads, the
command that wrote them, its renderer), which `python -m bench results_doc` writes. The scripts still run on
their own (`python bench/speed.py ...`), as the README's older commands do.
"""
from __future__ import annotations

import ast
import importlib
import os
import sys

from layerbench.errors import run_script

HERE = os.path.dirname(os.path.abspath(__file__))

# experiment -> its script (module in this folder)
EXPERIMENTS = {
    "speed": "speed",
    "kernels": "linear_kernels",
    "draft_confidence": "draft_confidence",
    "fit_choices": "fit_choices",
    "sweep_exit": "sweep_exit",
    "lm_eval_speed": "lm_eval_speed",
    "lm_eval_table": "lm_eval_table",
    "compare_predictions": "compare_predictions",
    "engine_versions": "engine_versions",
    "exactness": "exactness",
    "profile": "profile_step",
    "analyze_speed": "analyze_speed",
    "train_early_exit": "train_early_exit",
    "results_doc": "results_doc",
}


def summary(module: str) -> str:
    """The first line of a script's docstring, read without importing it (no torch for a listing)."""
    with open(os.path.join(HERE, f"{module}.py"), encoding="utf-8") as f:
        doc = ast.get_docstring(ast.parse(f.read())) or ""
    first = doc.split("\n\n")[0].replace("\n", " ").split(". ")[0].rstrip(".:")
    return first if len(first) <= 110 else first[:107] + "..."


def listing() -> str:
    width = max(map(len, EXPERIMENTS))
    rows = [f"  {name:<{width}}  {summary(module)}" for name, module in EXPERIMENTS.items()]
    return "usage: python -m bench <experiment> [flags]   (python -m bench <experiment> --help)\n\n" \
           "experiments:\n" + "\n".join(rows)


def main(argv: list[str]) -> int:
    """Run one experiment's main() with the remaining flags (its own one-line errors, exit status 2)."""
    if not argv or argv[0] in ("-h", "--help"):
        print(listing())
        return 0
    name, rest = argv[0], argv[1:]
    if name not in EXPERIMENTS:
        print(f"error: unknown experiment {name!r}; choose from {', '.join(EXPERIMENTS)}", file=sys.stderr)
        return 2
    sys.path.insert(0, HERE)  # the scripts import their helpers as siblings
    module = importlib.import_module(EXPERIMENTS[name])
    sys.argv = [f"python -m bench {name}", *rest]  # scripts whose main() takes no argv read these
    takes_argv = "argv" in module.main.__code__.co_varnames[:module.main.__code__.co_argcount]
    run_script(lambda: module.main(rest) if takes_argv else module.main())


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
