"""Exit adapters (Tuned Lens / Kangaroo style, fitted in closed form): a map h_L ~ h_E + h_E W + b from the hidden
state after the first E blocks to the last block's output (both before the final norm), applied before the final
norm and LM head whenever the model exits early or drafts. Verification never uses it, so greedy self-speculative
output stays identical to autoregressive output."""
from __future__ import annotations

import os
import time
from typing import TYPE_CHECKING

from layerbench import names
from layerbench.errors import UsageError
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


def load_trained_exit_adapter(model_dir: str, exit_layer: int, exit_block: int) -> dict:
    """The adapter train.py --trainable exit_adapter trained (an nn.Linear h -> hA^T + b, applied as h + adapter(h)
    like a fitted one), as `fit_exit_adapter` returns one. It was trained for one exit: another --exit_layer is
    refused."""
    from safetensors import safe_open
    path = os.path.join(model_dir, names.TRAINED_EXIT_ADAPTER_FILE)
    with safe_open(path, framework="pt") as f:
        trained_for = int((f.metadata() or {}).get("exit_layer", -1))
        weight, bias = f.get_tensor("weight"), f.get_tensor("bias")
    if trained_for != exit_layer:
        raise UsageError(f"--exit_adapter trained: {path} was trained for exit layer {trained_for}, not "
                         f"--exit_layer {exit_layer}")
    return {"exit_block": exit_block, "W": weight.float().T, "b": bias.float(),
            "report": {"exit_block": exit_block, "source": path, "trained_for_exit_layer": trained_for}}
