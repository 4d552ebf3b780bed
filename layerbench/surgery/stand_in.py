"""Linear stand-ins for removed layers (in the spirit of LLM-Streamline and ReplaceMe, fitted in closed form):
each maximal run of removed layers [l, l+n) is replaced by x + x W + b (and, at position 0, x + c), fitted so
that it maps the hidden state entering layer l to the one entering layer l + n on calibration tokens of the
unpruned model (see linear_fit)."""
from __future__ import annotations

import time
from typing import TYPE_CHECKING

import torch

from layerbench.models.addons import get_addons
from layerbench.surgery.calibration import calibration_engine, run_calibration
from layerbench.surgery.linear_fit import ResidualFit, StandIn

if TYPE_CHECKING:
    from layerbench.surgery.method import Target


def removed_runs(positions: list[int]) -> list[tuple[int, int]]:
    """Maximal runs of consecutive positions as (start, length)."""
    runs: list[tuple[int, int]] = []
    for p in sorted(positions):
        if runs and runs[-1][0] + runs[-1][1] == p:
            runs[-1] = (runs[-1][0], runs[-1][1] + 1)
        else:
            runs.append((p, 1))
    return runs


def fit_stand_ins(pm: Target, removed_positions: list[int]) -> list[dict]:
    """Fit one map per run of `removed_positions` (current layer positions, before removal); cached per run set."""
    runs = removed_runs(removed_positions)
    seqs, info = pm.calibration_sequences()
    return pm.calibrated("stand_ins", seqs, info, {"runs": runs}, lambda: _fit(pm, runs, seqs, info))


def _fit(pm: Target, runs: list[tuple[int, int]], seqs: list[list[int]], info: dict) -> list[dict]:
    t0 = time.perf_counter()
    engine = calibration_engine(pm.model)
    dim = engine.embed_weight.shape[1]
    fits = {run: ResidualFit(dim) for run in runs}
    starts = {start: run for run, start in ((r, r[0]) for r in runs)}
    ends = {run[0] + run[1] - 1: run for run in runs}
    inputs: dict[tuple[int, int], torch.Tensor] = {}

    def observe(block, before, after, phase):
        if block.position in starts:
            inputs[starts[block.position]] = before[0]
        if block.position in ends:
            run = ends[block.position]
            fits[run].add(inputs.pop(run), after[0])

    run_calibration(engine, seqs, observe, desc="stand-in calibration")
    fitted = []
    for run in runs:
        W, b, first_update, report = fits[run].solve()
        fitted.append({"start": run[0], "length": run[1], "W": W, "b": b, "first_update": first_update,
                       "report": report})
    seconds = time.perf_counter() - t0
    for f in fitted:
        f["report"].update(fit_seconds=seconds, calibration=info)
    return fitted


def insert_stand_ins(pm: Target, fitted: list[dict], original_of: list[int]) -> tuple[list[dict], list[tuple[int, int]]]:
    """Put each fitted map where its run was (after the removal); `original_of` maps the positions of the
    pre-removal model to original layer indices. Returns the log entries and each stand-in's [start, end) run
    in original indices."""
    addons = get_addons(pm.model, create=True)
    like = next(pm.model.parameters())
    entries, runs = [], []
    for f in fitted:
        first_orig = original_of[f["start"]]
        position = sum(1 for orig in pm.kept_layers if orig < first_orig)
        module = StandIn(f["W"], f["b"], f["first_update"], like)
        addons.stand_ins[str(position)] = module
        removed = original_of[f["start"]: f["start"] + f["length"]]
        runs.append((removed[0], removed[-1] + 1))
        entries.append({"removed_layers": removed, "inserted_before_position": position,
                        "parameters": sum(p.numel() for p in module.parameters()), **f["report"]})
    return entries, runs
