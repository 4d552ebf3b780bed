"""Gated skipping: per sequence, the prefill measures each layer's temperature (arccos(cos(in, out)) / pi at the
last prompt token) and decode steps skip the cold layers, at most ceil(c x L) layers running. PruneModel wraps
the layers in the gate (`update_model_with_gating`, the seed document's API)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from layerbench.errors import UsageError
from layerbench.flags import option
from layerbench.surgery.method import Decision, PruneMethod
from layerbench.surgery.methods.lowrank import HOT_PATH_HELP


@dataclass
class GatedOptions:
    skip_threshold: float = option(0.1, "skip cold layers whose temperature (arccos(cos(in, out))/pi at the last "
                                        "prompt token) is below this")
    available_compute: float = option(1.0, "at most ceil(c x L) layers run per decode step, c in (0, 1]")
    hot_path: Optional[list[int]] = option(None, HOT_PATH_HELP)


def check_gate_values(threshold: float, compute: float) -> None:
    if not 0 <= threshold <= 1:
        raise UsageError(f"--skip_threshold must be in [0, 1], got {threshold}")
    if not 0 < compute <= 1:
        raise UsageError(f"--available_compute must be in (0, 1], got {compute}")


METHOD = PruneMethod(
    name="gated", summary="skip cold layers per sequence by their measured temperature",
    decide=lambda target: Decision(gate=True),
    options=GatedOptions, validate=lambda c: check_gate_values(c.skip_threshold, c.available_compute),
    label=lambda p: f"thr={p.get('skip_threshold')},compute={p.get('available_compute')}", saveable=False,
    per_sequence=True)
