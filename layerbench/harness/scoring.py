"""Log-likelihoods of continuations through the engine: the (pruned) model's full forward, or blocks [0, E) +
exit adapter + head when early exit is chosen.

A batch of requests is scored in two ways. Requests whose (truncated) contexts are equal prefill that context ONCE
into a KV cache, and each continuation then runs over the positions after it (overwriting the previous
continuation's). Requests with a context of their own (rolling-perplexity windows, most loglikelihood requests
without a layer policy) run together as ONE causal pass over their right-padded concatenations, the way lm-eval's
hf model pads a batch: padding only follows real tokens, so causal attention keeps it out of every real position.
With gated skipping the context is the prefill (which measures the layers' temperatures, per sequence) and the
continuation is a decode pass (which skips), the protocol of the benchmark's reference perplexity.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from layerbench.engine.engine import DECODE, PREFILL, Engine


@dataclass(frozen=True)
class Scorer:
    engine: Engine
    exit_block: int = -1  # engine block index E for early exit; -1: every block

    @property
    def last_block(self) -> int:
        return self.exit_block if self.exit_block > 0 else self.engine.num_blocks

    def _hidden(self, cache, start: int, ids: list[int], phase: str) -> torch.Tensor:
        tokens = torch.tensor([ids], device=self.engine.device)
        return self.engine.run(cache, start, 0, self.last_block, input_ids=tokens, phase=phase)

    def _logits(self, hidden: torch.Tensor) -> torch.Tensor:
        if self.exit_block > 0:
            return self.engine.exit_logits(hidden, self.exit_block)
        return self.engine.logits(hidden)

    def _score(self, hidden: torch.Tensor, continuation: list[int]) -> tuple[float, bool]:
        """(sum of log-probabilities of `continuation`, whether each token is the argmax) from the hidden
        states (1, len(continuation), d) at the positions that predict it."""
        logits = self._logits(hidden)[0].float()
        target = torch.tensor(continuation, device=logits.device)
        picked = logits.gather(1, target[:, None])[:, 0]
        logprob = float((picked - torch.logsumexp(logits, dim=-1)).sum())  # log_softmax without its (T, V) copy
        return logprob, bool((logits.argmax(-1) == target).all())

    @torch.inference_mode()
    def score_lone(self, requests: list[tuple[list[int], list[int]]]) -> list[tuple[float, bool]]:
        """Score (context, continuation) pairs in one padded causal pass (no layer policy)."""
        if self.engine.policy is not None:
            raise ValueError("a layer policy decides per sequence: score these requests one at a time")
        wholes = [context + continuation[:-1] for context, continuation in requests]
        width = max(map(len, wholes))
        ids = torch.zeros(len(wholes), width, dtype=torch.long, device=self.engine.device)
        for row, whole in enumerate(wholes):
            ids[row, :len(whole)] = torch.tensor(whole, device=ids.device)
        cache = self.engine.new_cache(width, shared=False, batch=len(wholes))
        hidden = self.engine.run(cache, 0, 0, self.last_block, input_ids=ids, phase=PREFILL)
        scores = []
        for row, (context, continuation) in enumerate(requests):
            n = len(context)
            scores.append(self._score(hidden[row:row + 1, n - 1:n - 1 + len(continuation)], continuation))
        return scores

    @torch.inference_mode()
    def score_group(self, context: list[int], continuations: list[list[int]]) -> list[tuple[float, bool]]:
        """Score every continuation after one shared, non-empty context."""
        engine, n = self.engine, len(context)
        if engine.policy is None and len(continuations) == 1:
            return self.score_lone([(context, continuations[0])])
        cache = engine.new_cache(n + max(map(len, continuations)), shared=False)
        after_context = self._hidden(cache, 0, context, PREFILL)[:, -1:]
        scores = []
        for continuation in continuations:
            hidden = after_context
            if len(continuation) > 1:
                hidden = torch.cat([hidden, self._hidden(cache, n, continuation[:-1], DECODE)], dim=1)
            scores.append(self._score(hidden, continuation))
        return scores
