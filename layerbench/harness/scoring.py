"""Log-likelihoods of continuations through the engine: the (pruned) model's full forward, or blocks [0, E) +
exit adapter + head when early exit is chosen.

The engine runs one sequence at a time, so a batch of requests is scored by sharing work instead of padding:
requests whose (truncated) contexts are equal prefill that context ONCE into a KV cache, and each continuation
then runs over the positions after it (overwriting the previous continuation's). Without a layer policy a lone
request runs as one causal pass. With gated skipping the context is the prefill (which measures the layers'
temperatures) and the continuation is a decode pass (which skips), the protocol of the benchmark's reference
perplexity.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from layerbench.engine.engine import DECODE, PREFILL, Engine


@dataclass(frozen=True)
class Scorer:
    engine: Engine
    exit_layer: int = -1  # engine block index E for early exit; -1: every block

    @property
    def last_block(self) -> int:
        return self.exit_layer if self.exit_layer > 0 else self.engine.num_layers

    def _hidden(self, cache, start: int, ids: list[int], phase: str) -> torch.Tensor:
        tokens = torch.tensor([ids], device=self.engine.device)
        return self.engine.run(cache, start, 0, self.last_block, input_ids=tokens, phase=phase)

    def _logits(self, hidden: torch.Tensor) -> torch.Tensor:
        if self.exit_layer > 0:
            return self.engine.exit_logits(hidden, self.exit_layer)
        return self.engine.logits(hidden)

    def _score(self, hidden: torch.Tensor, continuation: list[int]) -> tuple[float, bool]:
        """(sum of log-probabilities of `continuation`, whether each token is the argmax) from the hidden
        states at the positions that predict it."""
        logits = self._logits(hidden)[0].float()
        target = torch.tensor(continuation, device=logits.device)
        logprobs = F.log_softmax(logits, dim=-1).gather(1, target[:, None])
        return float(logprobs.sum()), bool((logits.argmax(-1) == target).all())

    @torch.inference_mode()
    def score_group(self, context: list[int], continuations: list[list[int]]) -> list[tuple[float, bool]]:
        """Score every continuation after one shared, non-empty context."""
        engine, n = self.engine, len(context)
        if engine.policy is None and len(continuations) == 1:
            whole = context + continuations[0][:-1]
            cache = engine.new_cache(len(whole), shared=False)
            return [self._score(self._hidden(cache, 0, whole, PREFILL)[:, n - 1:], continuations[0])]
        cache = engine.new_cache(n + max(map(len, continuations)), shared=False)
        after_context = self._hidden(cache, 0, context, PREFILL)[:, -1:]
        scores = []
        for continuation in continuations:
            hidden = after_context
            if len(continuation) > 1:
                hidden = torch.cat([hidden, self._hidden(cache, n, continuation[:-1], DECODE)], dim=1)
            scores.append(self._score(hidden, continuation))
        return scores
