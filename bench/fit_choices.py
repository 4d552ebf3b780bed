"""How the closed-form fits should be made: for linear stand-ins of the layers angular pruning removes, the test
perplexity each fitting choice gives (ridge strength; position 0 in the map, or left out of it with its own
constant update; rows weighted by 1/|x| or not); for exit adapters, teacher-forced top-1 agreement of the early
exit with the full model. Calibration on the train split,
evaluation on test samples, so no fit sees an evaluated sample.

    .venv/bin/python bench/fit_choices.py --prune_n 6 --exit_layers 20 24
"""
from __future__ import annotations

import argparse
import os

from layerbench.errors import OneLineArgumentParser, positive_int, run_script
from doc_tables import Section, table


def parse() -> argparse.Namespace:
    ap = OneLineArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default=None, help="local model folder or hub id (default: the embedded "
                                                   "SmolLM2-135M-Instruct)")
    ap.add_argument("--prune_n", type=positive_int, default=6,
                    help="stand-ins: layers angular pruning removes (default: 6)")
    ap.add_argument("--exit_layers", type=positive_int, nargs="+", default=[20, 24],
                    help="exit adapters: the exit layers to fit (default: 20 24)")
    ap.add_argument("--calibration_samples", type=positive_int, default=32,
                    help="train-split texts the maps are fitted on (default: 32)")
    ap.add_argument("--eval_samples", type=positive_int, default=20,
                    help="test-split texts the choices are scored on (default: 20)")
    ap.add_argument("--out", default="results/quality",
                    help="folder for fit_choices_<timestamp>.json (default: results/quality)")
    return ap.parse_args()


def main() -> None:
    a = parse()
    from fit_choices_runs import run  # torch and transformers are imported after the flags are read
    run(a)


STAND_IN_COLUMNS = ["model", "fit error (rel.)", "test perplexity", "log-ppl increase recovered"]
ADAPTER_COLUMNS = ["exit layer", "adapter", "top-1 agreement with the full model"]


def render(files: list[tuple[str, dict]]) -> str:
    return "\n\n".join(f"`{os.path.basename(p)}`, angular n={d['args']['prune_n']} removes "
                       f"{d['context']['removed_layers']}:\n\n" + table(d["stand_in"], STAND_IN_COLUMNS) + "\n\n"
                       + table(d["exit_adapter"], ADAPTER_COLUMNS) for p, d in files)


SECTION = Section("Fitting choices for stand-ins and exit adapters (bench/fit_choices.py)", "quality/fit_choices_*.json",
                  "python bench/fit_choices.py --prune_n 6 --exit_layers 20 24",
                  "Calibration on 32 aclsum train texts, evaluation on 20 test samples (test perplexity of the reference "
                  "given the chat prompt). The first file predates the position-0 constant update: its `skip_first=True` "
                  "rows leave position 0 out of the map without giving it an update of its own.", render)


if __name__ == "__main__":
    run_script(main)
