"""What every generation strategy shares: its configuration and result, the token buffer, the clock, the
prefill and the one truncation rule."""
from __future__ import annotations

import time
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Callable

import torch

from layerbench.decoding.sampling import StopCondition, TokenChooser
from layerbench.engine.engine import PREFILL, Engine
from layerbench.engine.kv_cache import KVCache


@dataclass
class GenerationConfig:
    max_steps: int
    exit_layer: int = -1  # engine block index E: early exit / draft with blocks [0, E); -1: the full model
    num_speculations: int = 0  # d: tokens drafted per self-speculative round
    draft_confidence: float | None = None  # stop drafting once the draft token's probability is below this


CommitListener = Callable[[str, list[int]], None]
"""Streaming hook of `GenerationStrategy.generate`, called in order as tokens are committed, with a kind:
"verified" (tokens the full model chose: every autoregressive token, a correction, a bonus token), "accepted"
(drafted tokens the full model agreed with), "rejected" (drafted tokens the full model replaced: never committed,
reported just before the correction that takes the first one's position). The committed tokens ("verified" +
"accepted") are exactly the result's `token_ids`, in order. When no listener is given the strategies do no extra
work."""


@dataclass
class GenerationResult:
    token_ids: list[int]
    time_to_first_token: float
    total_time: float
    num_drafted: int = 0
    num_accepted: int = 0
    num_rounds: int = 0  # self-speculative draft/verify rounds
    stopped: bool = False  # True when an EOS / stop word ended generation before max_steps


class GenerationStrategy(ABC):
    """Turns a prompt into generated token ids with an engine; every variant of a model runs through the same
    strategy code, so their timings are comparable."""

    @abstractmethod
    def generate(self, engine: Engine, prompt: torch.Tensor, config: GenerationConfig, chooser: TokenChooser,
                 stop: StopCondition, on_commit: CommitListener | None = None) -> GenerationResult: ...

    @abstractmethod
    def static_shapes(self, engine: Engine, config: GenerationConfig) -> list[tuple[int, int, int, bool]]:
        """Every fixed-shape step (first block, last block, tokens, from ids) its decode loop runs, so the
        engine can prepare (capture) them all before timing starts."""

    @staticmethod
    def capacity(prompt_length: int, config: GenerationConfig) -> int:
        """KV-cache positions one generation needs."""
        return prompt_length + config.max_steps + config.num_speculations + 2


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
            exit_layer: int | None = None) -> tuple[KVCache, TokenBuffer, int]:
    """Run blocks [0, last) over the prompt into a fresh cache and choose the first token (through the exit
    adapter of `exit_layer` when given)."""
    cache = engine.new_cache(capacity)
    tokens = TokenBuffer(prompt, capacity)
    hidden = engine.run(cache, 0, 0, last, input_ids=prompt, phase=PREFILL)[:, -1]
    logits = engine.exit_logits(hidden, exit_layer) if exit_layer else engine.logits(hidden)
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
