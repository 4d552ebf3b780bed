"""Autoregressive decoding, one token per step; with an exit layer E it is LayerSkip's pure early exit (blocks
[0, E) + final norm + LM head, through the exit adapter when one is fitted)."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

from layerbench.decoding.strategy import CommitListener, GenerationConfig, GenerationResult, GenerationStrategy
from layerbench.engine.phases import DECODE
from layerbench.errors import UsageError
from layerbench.lazy import lazy

if TYPE_CHECKING:
    from layerbench.decoding.sampling import StopCondition, TokenChooser
    from layerbench.engine.engine import Engine

torch = lazy("torch")
base = lazy("layerbench.decoding.base")


class Autoregressive(GenerationStrategy):
    name = "autoregressive"
    summary = "one token per step with the whole model, or blocks [0, E) with --exit_layer E (early exit)"
    short = "AR"

    def check_depth(self, flags: Any, num_layers: int) -> None:
        if flags.exit_layer > num_layers:
            raise UsageError(f"--exit_layer {flags.exit_layer} exceeds the model's {num_layers} layers")

    def mode(self, exit_layer: int) -> str:
        return "early_exit" if exit_layer > 0 else "full_model"

    def static_shapes(self, engine: Engine, config: GenerationConfig) -> list[tuple[int, int, int, bool]]:
        return [(0, config.exit_block if config.exit_block > 0 else engine.num_blocks, 1, True)]

    def generate(self, engine: Engine, prompt: torch.Tensor, config: GenerationConfig, chooser: TokenChooser,
                 stop: StopCondition, on_commit: CommitListener | None = None) -> GenerationResult:
        with torch.inference_mode():
            return self._generate(engine, prompt, config, chooser, stop, on_commit)

    def _generate(self, engine: Engine, prompt: torch.Tensor, config: GenerationConfig, chooser: TokenChooser,
                  stop: StopCondition, on_commit: CommitListener | None) -> GenerationResult:
        early_exit = config.exit_block > 0
        last = config.exit_block if early_exit else engine.num_blocks
        exit_block = config.exit_block if early_exit else None
        clock = base.Clock(engine.devices)
        t0 = clock.now()
        cache, tokens, token = base.prefill(engine, prompt, self.capacity(prompt.shape[1], config), last, chooser,
                                            exit_block)
        ttft = clock.now() - t0
        generated = [token]
        if on_commit is not None:
            on_commit("verified", [token])  # the loop below stops at a stop token or max_steps: finish keeps all
        while len(generated) < config.max_steps and stop.first_stop(generated, len(generated) - 1) is None:
            hidden = engine.run(cache, tokens.n - 1, 0, last, input_ids=base.token_tensor(token, engine.device),
                                phase=DECODE)[:, -1]
            logits = (engine.exit_logits(hidden, exit_block, step=True) if early_exit else
                      engine.logits(hidden, step=True))
            token, _ = chooser.pick(tokens.prefix() if chooser.needs_prefix else None, logits[0])
            tokens.commit([token])
            generated.append(token)
            if on_commit is not None:
                on_commit("verified", [token])
        out, stopped = base.finish(generated, config.max_steps, stop)
        return GenerationResult(out, ttft, clock.now() - t0, stopped=stopped)


STRATEGY = Autoregressive()
