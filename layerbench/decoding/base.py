"""What the decode loops share: the token buffer, the clock, the prefill and the one truncation rule (the
strategy's interface, configuration and result are in `layerbench.decoding.strategy`)."""
from __future__ import annotations

import time

import torch

from layerbench.decoding.sampling import StopCondition, TokenChooser
from layerbench.engine.engine import PREFILL, Engine
from layerbench.engine.kv_cache import KVCache


class Clock:
    """Wall time after every device the engine computes on has finished its queued work."""

    def __init__(self, devices: tuple[torch.device, ...]) -> None:
        self.cuda = [d for d in devices if d.type == "cuda"]

    def now(self) -> float:
        for device in self.cuda:
            torch.cuda.synchronize(device)
        return time.perf_counter()


class TokenBuffer:
    """Prompt + generated tokens in one preallocated row, so logits processors get a prefix without copies."""

    def __init__(self, prompt: torch.Tensor, capacity: int) -> None:
        self.buf = torch.empty(1, capacity, dtype=torch.long, device=prompt.device)
        self.n = prompt.shape[1]
        self.buf[:, : self.n] = prompt
        self.prompt_len = self.n

    def prefix(self, extra: list[int] = ()) -> torch.Tensor:
        """Prefix row including `extra` tokens appended after the committed ones (not committed)."""
        m = len(extra)
        if m:
            self.buf[0, self.n: self.n + m] = torch.tensor(extra, device=self.buf.device)
        return self.buf[:, : self.n + m]

    def commit(self, tokens: list[int]) -> None:
        self.buf[0, self.n: self.n + len(tokens)] = torch.tensor(tokens, device=self.buf.device)
        self.n += len(tokens)


def token_tensor(token: int, device: torch.device) -> torch.Tensor:
    return torch.tensor([[token]], device=device)


def prefill(engine: Engine, prompt: torch.Tensor, capacity: int, last: int, chooser: TokenChooser,
            exit_block: int | None = None) -> tuple[KVCache, TokenBuffer, int]:
    """Run blocks [0, last) over the prompt into the cache and choose the first token (through the exit
    adapter of `exit_block` when given)."""
    cache = engine.new_cache(capacity)
    tokens = TokenBuffer(prompt, capacity)
    hidden = engine.run(cache, 0, 0, last, input_ids=prompt, phase=PREFILL)[:, -1]
    logits = (engine.exit_logits(hidden, exit_block, step=True) if exit_block else
              engine.logits(hidden, step=True))
    token, _ = chooser.pick(tokens.prefix() if chooser.needs_prefix else None, logits[0])
    tokens.commit([token])
    return cache, tokens, token


def kept_count(generated: list[int], start: int, max_steps: int, stop: StopCondition) -> int:
    """How many of generated[start:] (the tokens just committed) `finish` keeps: the streamed tokens must be the
    result's."""
    i = stop.first_stop(generated, start)
    end = min(i + 1 if i is not None else len(generated), max_steps)
    return max(0, end - start)


def finish(generated: list[int], max_steps: int, stop: StopCondition) -> tuple[list[int], bool]:
    """The one truncation rule shared by all strategies: cut after the first stop, then at max_steps."""
    i = stop.first_stop(generated)
    if i is not None and i < max_steps:
        return generated[: i + 1], True
    return generated[:max_steps], False
