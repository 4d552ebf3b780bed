"""Exit adapters (Tuned Lens / Kangaroo style, fitted in closed form): a map h_L ~ h_E + h_E W + b from the hidden
state after the first E blocks to the last block's output (both before the final norm), applied before the final
norm and LM head whenever the model exits early or drafts. Verification never uses it, so greedy self-speculative
output stays identical to autoregressive output."""
from __future__ import annotations

import time
from typing import TYPE_CHECKING

from layerbench.models.addons import get_addons
from layerbench.surgery.calibration import calibration_engine, run_calibration
from layerbench.surgery.linear_fit import ResidualFit, residual_linear

if TYPE_CHECKING:
    from layerbench.surgery.prune_model import PruneModel


def fit_exit_adapter(pm: PruneModel, exit_block: int) -> dict:
    """Fit the adapter for exiting after engine block `exit_block` - 1 of the (pruned) model (--exit_layer mapped
    by `PruneModel.map_exit_layer`). Returns W, b and the report; `install_exit_adapter` puts it in place. Cached
    per model state and exit block."""
    seqs, info = pm.calibration_sequences()
    return pm.calibrated("exit_adapter", seqs, info, {"exit_block": exit_block},
                         lambda: _fit(pm, exit_block, seqs, info))


def _fit(pm: PruneModel, exit_block: int, seqs: list[list[int]], info: dict) -> dict:
    t0 = time.perf_counter()
    engine = calibration_engine(pm.model)
    fit = ResidualFit(engine.embed_weight.shape[1])
    first_skipped, last_block = engine.blocks[exit_block], engine.blocks[-1]
    state: dict = {}

    def observe(block, before, after, phase):
        if block is first_skipped:
            state["x"] = before[0]
        if block is last_block:
            fit.add(state.pop("x"), after[0])

    run_calibration(engine, seqs, observe, desc="exit-adapter calibration")
    W, b, _, report = fit.solve()  # drafts never sit at position 0: the map alone serves
    report.update(exit_block=exit_block, fit_seconds=time.perf_counter() - t0, calibration=info)
    return {"exit_block": exit_block, "W": W, "b": b, "report": report}


def install_exit_adapter(pm: PruneModel, fitted: dict) -> dict:
    like = next(pm.model.parameters())
    module = residual_linear(fitted["W"], fitted["b"], like)
    get_addons(pm.model, create=True).exit_adapters[str(fitted["exit_block"])] = module
    return {"kind": "linear", "parameters": sum(p.numel() for p in module.parameters()), **fitted["report"]}
