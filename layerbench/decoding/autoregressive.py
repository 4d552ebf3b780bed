"""Autoregressive decoding, one token per step; with an exit layer E it is LayerSkip's pure early exit (blocks
[0, E) + final norm + LM head, through the exit adapter when one is fitted)."""
from __future__ import annotations

import torch

from layerbench.decoding.base import (Clock, CommitListener, GenerationConfig, GenerationResult, GenerationStrategy,
                                      finish, prefill, token_tensor)
from layerbench.decoding.sampling import StopCondition, TokenChooser
from layerbench.engine.engine import DECODE, Engine


class Autoregressive(GenerationStrategy):
    def static_shapes(self, engine: Engine, config: GenerationConfig) -> list[tuple[int, int, int, bool]]:
        return [(0, config.exit_layer if config.exit_layer > 0 else engine.num_layers, 1, True)]

    @torch.inference_mode()
    def generate(self, engine: Engine, prompt: torch.Tensor, config: GenerationConfig, chooser: TokenChooser,
                 stop: StopCondition, on_commit: CommitListener | None = None) -> GenerationResult:
        early_exit = config.exit_layer > 0
        last = config.exit_layer if early_exit else engine.num_layers
        exit_layer = config.exit_layer if early_exit else None
        clock = Clock(engine.devices)
        t0 = clock.now()
        cache, tokens, token = prefill(engine, prompt, self.capacity(prompt.shape[1], config), last, chooser,
                                       exit_layer)
        ttft = clock.now() - t0
        generated = [token]
        if on_commit is not None:
            on_commit("verified", [token])  # the loop below stops at a stop token or max_steps: finish keeps all
        while len(generated) < config.max_steps and stop.first_stop(generated, len(generated) - 1) is None:
            hidden = engine.run(cache, tokens.n - 1, 0, last, input_ids=token_tensor(token, engine.device),
                                phase=DECODE)[:, -1]
            logits = engine.exit_logits(hidden, exit_layer) if early_exit else engine.logits(hidden)
            token, _ = chooser.pick(tokens.prefix() if chooser.needs_prefix else None, logits[0])
            tokens.commit([token])
            generated.append(token)
            if on_commit is not None:
                on_commit("verified", [token])
        out, stopped = finish(generated, config.max_steps, stop)
        return GenerationResult(out, ttft, clock.now() - t0, stopped=stopped)
