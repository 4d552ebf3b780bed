"""Public API: `PruneModel` applies angular-distance pruning, random layer dropout, low-rank compression or gated
skipping to a loaded Hugging Face model and reports exactly what it did (see layerbench.surgery).

    from pruned_model import PruneConfig, PruneModel
    report = PruneModel(model, tokenizer, PruneConfig(method="angular", prune_n=4), calibration).apply()
"""
from layerbench.surgery.calibration import Calibration
from layerbench.surgery.config import PruneConfig, validate_config
from layerbench.surgery.methods import PRUNE_METHODS
from layerbench.surgery.prune_model import PruneModel

__all__ = ["Calibration", "PRUNE_METHODS", "PruneConfig", "PruneModel", "validate_config"]
