"""Calibration text and hidden states collected through the engine's own forward (the same layer-range forward
decoding uses)."""
from __future__ import annotations

import hashlib
import sys
from dataclasses import dataclass
from typing import Callable

import torch
from tqdm import tqdm

from layerbench.engine.engine import PREFILL, Engine, EngineOptions
from layerbench.errors import UsageError


@dataclass
class Calibration:
    """Tokenized calibration texts and a description of where they came from (for the log)."""
    token_ids: list[list[int]]
    source: dict


def calibration_sequences(calibration: Calibration, samples: int, max_length: int) -> tuple[list[list[int]], dict]:
    """The first `samples` texts cut to `max_length` tokens, and the log entry describing them."""
    seqs = [ids[:max_length] for ids in calibration.token_ids[:samples]]
    seqs = [s for s in seqs if s]
    if not seqs:
        raise UsageError("calibration data is empty")
    info = dict(calibration.source, samples=len(seqs), tokens=sum(len(s) for s in seqs), max_length=max_length)
    return seqs, info


def calibration_key(sequences: list[list[int]], info: dict) -> dict:
    """What a calibration product depends on in its text: the source described in the log, and the token ids
    themselves (so the template, the tokenizer and the excluded evaluation samples are all covered)."""
    digest = hashlib.sha256(repr(sequences).encode()).hexdigest()
    return {**{k: v for k, v in info.items() if k != "seconds"}, "token_ids_sha256": digest}


def calibration_engine(model: torch.nn.Module) -> Engine:
    """An engine for calibration passes: torch's own linear kernel, never the tuned one, whose per-row-count
    choice is made by timing and so could differ between runs (a cached product must not depend on timing)."""
    return Engine(model, EngineOptions(linear_kernel="torch"))


Observer = Callable[[object, torch.Tensor, torch.Tensor, str], None]


@torch.inference_mode()
def run_calibration(engine: Engine, sequences: list[list[int]], observer: Observer, desc: str = "calibration",
                    on_sequence: Callable[[int], None] | None = None) -> None:
    """Prefill every sequence through all blocks with `observer` watching each block's input and output;
    `on_sequence(k)` is called before sequence k."""
    engine.observers.append(observer)
    try:
        for k, seq in enumerate(tqdm(sequences, desc=desc, unit="seq", leave=True, file=sys.stderr)):
            if on_sequence is not None:
                on_sequence(k)
            ids = torch.tensor([seq], device=engine.device)
            engine.run(engine.new_cache(len(seq), shared=False), 0, 0, engine.num_blocks, input_ids=ids,
                       phase=PREFILL)
    finally:
        engine.observers.remove(observer)


def last_token_states(engine: Engine, sequences: list[list[int]]) -> torch.Tensor:
    """Hidden state entering each block plus the last block's output (before the final norm), at each sequence's
    last token, in float32: shape (num_blocks + 1, num_sequences, hidden)."""
    states = torch.empty(engine.num_blocks + 1, len(sequences), engine.embed_weight.shape[1])
    index = {id(b): i for i, b in enumerate(engine.blocks)}
    current = [0]

    def observe(block, before, after, phase):
        i = index[id(block)]
        states[i, current[0]] = before[0, -1].float().cpu()
        if i == engine.num_blocks - 1:
            states[i + 1, current[0]] = after[0, -1].float().cpu()

    run_calibration(engine, sequences, observe, on_sequence=lambda k: current.__setitem__(0, k))
    return states
