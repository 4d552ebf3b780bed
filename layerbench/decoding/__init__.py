"""Generation strategies (registry `STRATEGIES`), in the spirit of LayerSkip's `self_speculation/` package."""
from layerbench.decoding.autoregressive import Autoregressive
from layerbench.decoding.base import GenerationConfig, GenerationResult, GenerationStrategy
from layerbench.decoding.self_speculative import SelfSpeculative

STRATEGIES: dict[str, GenerationStrategy] = {
    "autoregressive": Autoregressive(),
    "self_speculative": SelfSpeculative(),
}

__all__ = ["STRATEGIES", "GenerationConfig", "GenerationResult", "GenerationStrategy"]
