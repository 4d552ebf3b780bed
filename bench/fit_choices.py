"""How the closed-form fits should be made: for linear stand-ins of the layers angular pruning removes, the test
perplexity each fitting choice gives (ridge strength; position 0 in the map, or left out of it with its own
constant update; rows weighted by 1/|x| or not); for exit adapters, teacher-forced top-1 agreement of the early
exit with the full model. Calibration on the train split,
evaluation on test samples, so no fit sees an evaluated sample.

    .venv/bin/python bench/fit_choices.py --prune_n 6 --exit_layers 20 24
"""
from __future__ import annotations

import argparse
import copy
import itertools
import math
import os
from typing import TYPE_CHECKING

from tabulate import tabulate

from doc_tables import Section, table
from layerbench.engine.phases import PREFILL
from layerbench.errors import OneLineArgumentParser, positive_int, run_script
from layerbench.evaluation import datasets
from layerbench.lazy import lazy
from runner import pruned_copy, write_result

torch = lazy("torch")
if TYPE_CHECKING:
    from layerbench.engine.engine import Engine


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


STAND_IN_COLUMNS = ["model", "fit error (rel.)", "test perplexity", "log-ppl increase recovered"]
ADAPTER_COLUMNS = ["exit layer", "adapter", "top-1 agreement with the full model"]
CHOICES = {"ridge": [1e-4, 1e-2, 1e-1], "skip_first": [False, True], "weighting": ["none", "inverse_norm"]}


def texts(tokenizer, n_calib: int, n_eval: int):
    spec = datasets.get_spec("aclsum_summarization")
    _, train = datasets.load_split("aclsum_summarization", "train", datasets.DatasetOptions())
    _, test = datasets.load_split("aclsum_summarization", "test", datasets.DatasetOptions())
    calib = [tokenizer(spec.template.format(input=s.input) + " " + s.reference)["input_ids"][:512]
             for s in datasets.select_samples(train, n_calib, 42, True)]
    from layerbench.evaluation.perplexity import reference_ids
    evaluated = [(datasets.build_prompt(tokenizer, spec.template.format(input=s.input), True),
                  reference_ids(tokenizer, s.reference, True)) for s in datasets.select_samples(test, n_eval, 42, True)]
    return calib, evaluated


def perplexity(engine: Engine, evaluated) -> float:
    from layerbench.evaluation.perplexity import reference_nll
    scores = [reference_nll(engine, p, r) for p, r in evaluated]
    return math.exp(sum(s["nll_sum"] for s in scores) / sum(s["tokens"] for s in scores))


def pairs(engine: Engine, calib, first: int, last: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """(input of block `first`, output of block `last`) for each calibration sequence."""
    from layerbench.surgery.calibration import run_calibration
    out, state = [], {}

    def observe(block, before, after, phase):
        if block is engine.blocks[first]:
            state["x"] = before[0].float()
        if block is engine.blocks[last]:
            out.append((state.pop("x"), after[0].float()))
    run_calibration(engine, calib, observe)
    return out


def fit(data, **choice) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, dict]:
    from layerbench.surgery.linear_fit import ResidualFit
    f = ResidualFit(data[0][0].shape[1], **choice)
    for x, y in data:
        f.add(x, y)
    return f.solve()


def agreement(engine: Engine, evaluated, exit_layer: int) -> float:
    """Share of positions (prompt + reference) where the early exit's argmax equals the full model's."""
    same = total = 0
    for prompt, ref in evaluated:
        ids = torch.tensor([prompt + ref])
        cache = engine.new_cache(ids.shape[1])
        with torch.inference_mode():
            h_exit = engine.run(cache, 0, 0, exit_layer, input_ids=ids, phase=PREFILL)
            full = engine.logits(engine.run(cache, 0, exit_layer, engine.num_blocks, hidden=h_exit, phase=PREFILL))
            early = engine.exit_logits(h_exit, exit_layer)
        same += int((full.argmax(-1) == early.argmax(-1)).sum())
        total += ids.shape[1]
    return same / total


def stand_in_rows(model, tokenizer, calib, evaluated, n: int) -> tuple[list, dict]:
    from layerbench.engine.engine import Engine
    from layerbench.models.addons import get_addons
    from layerbench.surgery.config import PruneConfig
    from layerbench.surgery.linear_fit import StandIn
    pm, report = pruned_copy(model, tokenizer, PruneConfig(method="angular", prune_n=n), calib, "aclsum_summarization")
    removed = report["removed_layers"]
    start = removed[0]
    data = pairs(Engine(model), calib, start, start + n - 1)
    base_ppl, pruned_ppl = perplexity(Engine(model), evaluated), perplexity(Engine(pm.model), evaluated)
    rows = [["base", "", base_ppl, ""], [f"angular n={n}, removed {removed}", "", pruned_ppl, 0.0]]
    for ridge, skip_first, weighting in itertools.product(*CHOICES.values()):
        W, b, first_update, report = fit(data, ridge=ridge, skip_first=skip_first, weighting=weighting)
        candidate = copy.deepcopy(pm.model)
        get_addons(candidate, create=True).stand_ins[str(start)] = StandIn(W, b, first_update,
                                                                          next(candidate.parameters()))
        ppl = perplexity(Engine(candidate), evaluated)
        recovered = (math.log(pruned_ppl) - math.log(ppl)) / (math.log(pruned_ppl) - math.log(base_ppl))
        position0 = "own update" if skip_first else "in the map"
        rows.append([f"stand-in ridge={ridge} position 0: {position0}, weighting={weighting}",
                     f"{report['relative_error_before']:.3f} -> {report['relative_error_after']:.3f}", ppl, recovered])
    return rows, {"removed_layers": removed, "base": base_ppl, "pruned": pruned_ppl}


def adapter_rows(model, calib, evaluated, exit_layers: list[int]) -> list:
    from layerbench.engine.engine import Engine
    from layerbench.surgery.linear_fit import residual_linear
    engine = Engine(model)
    rows = []
    for E in exit_layers:
        data = pairs(engine, calib, E, engine.num_blocks - 1)
        rows.append([E, "none", agreement(engine, evaluated, E)])
        for ridge, skip_first, weighting in itertools.product(*CHOICES.values()):
            W, b, _, _ = fit(data, ridge=ridge, skip_first=skip_first, weighting=weighting)
            adapted = Engine(model)
            like = next(model.parameters())  # the engine keeps (projection, device) per exit layer
            adapted.exit_adapters[E] = (residual_linear(W, b, like), like.device)
            rows.append([E, f"ridge={ridge} position 0 in the fit: {not skip_first}, weighting={weighting}",
                         agreement(adapted, evaluated, E)])
    return rows


def main() -> None:
    a = parse()
    from layerbench.models.loading import load_model
    loaded = load_model(a.model, "float32", "cpu")
    calib, evaluated = texts(loaded.tokenizer, a.calibration_samples, a.eval_samples)
    s_rows, context = stand_in_rows(loaded.model, loaded.tokenizer, calib, evaluated, a.prune_n)
    print(tabulate(s_rows, STAND_IN_COLUMNS, tablefmt="github", floatfmt=".3f"))
    e_rows = adapter_rows(loaded.model, calib, evaluated, a.exit_layers)
    print(tabulate(e_rows, ADAPTER_COLUMNS, tablefmt="github", floatfmt=".3f"))
    write_result(a.out, "fit_choices", {"args": vars(a), "model": loaded.name, "context": context,
                                        "stand_in": s_rows, "exit_adapter": e_rows})




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
