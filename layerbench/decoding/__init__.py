"""Generation strategies, one file each (see `layerbench.decoding.strategy`), in the spirit of LayerSkip's
`self_speculation/` package. Adding a strategy: write its file with a `STRATEGY`, and add its module to the two
lines below; the CLI, the checks, the run, the log and analyze_logs read this registry."""
from layerbench.decoding import autoregressive, layer_skip_speculative, self_speculative
from layerbench.decoding.strategy import GenerationConfig, GenerationResult, GenerationStrategy

STRATEGIES: dict[str, GenerationStrategy] = {module.STRATEGY.name: module.STRATEGY for module in (
    autoregressive, self_speculative, layer_skip_speculative)}
DEFAULT_STRATEGY = autoregressive.STRATEGY.name

__all__ = ["DEFAULT_STRATEGY", "STRATEGIES", "GenerationConfig", "GenerationResult", "GenerationStrategy"]
