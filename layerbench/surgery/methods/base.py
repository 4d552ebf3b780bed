"""The model as it is: no surgery, no calibration pass."""
from __future__ import annotations

from layerbench.surgery.method import Decision, PruneMethod

METHOD = PruneMethod(name="base", summary="the model as it is", decide=lambda target: Decision())
