"""Step 2b of a benchmark run: prepare the strategy's fixed-shape steps before timing (captured as CUDA graphs on
a GPU), prove the capture on the warm-up prompt, and fall back to eager decoding, with the reason in the log and
one warning line, when capture fails or a replay gives other tokens than the same steps run eagerly."""
from __future__ import annotations

import dataclasses
import sys
from typing import Callable

import torch

from layerbench.decoding import GenerationConfig, GenerationStrategy
from layerbench.decoding.sampling import SamplingConfig, StopCondition, TokenChooser
from layerbench.engine.engine import Engine
from layerbench.engine.static_steps import install_static_steps
from layerbench.errors import UsageError

CHECK_TOKENS = 16  # tokens of the warm-up prompt generated with replay and eagerly


def first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0]}" if text else type(exc).__name__


def fall_back(engine: Engine, reason: str) -> str:
    engine.static = None
    if engine.rotary is not None:
        engine.rotary.unpin()
    print(f"warning: CUDA graphs off ({reason}); decoding runs eagerly", file=sys.stderr)
    return f"off ({reason})"


def capture_checked(engine: Engine, capacity: int, shapes: list, mode: str,
                    generate_tokens: Callable[[], list[int]]) -> str:
    """Prepare the steps in `mode` ("cuda" or, on CPU for tests, "emulated"), then generate a prompt
    with replays and with the same steps run eagerly; any failure or difference falls back to eager."""
    try:
        install_static_steps(engine, capacity, shapes, mode)
        replayed = generate_tokens()
        engine.static.replaying = False
        eager = generate_tokens()
        engine.static.replaying = True
    except UsageError:
        raise
    except Exception as exc:  # a capture or replay that fails must not end the run
        return fall_back(engine, f"capture or replay failed: {first_line(exc)}")
    if replayed != eager:
        at = next((i for i, (a, b) in enumerate(zip(replayed, eager)) if a != b), min(len(replayed), len(eager)))
        return fall_back(engine, f"replay differs from the eager steps on the longest prompt at token {at}")
    return f"on ({len(engine.static.steps)} captured steps; replay equals eager on the longest prompt)"


def check_tokens(engine: Engine, strategy: GenerationStrategy, generation: GenerationConfig,
                 warmup_prompt: list[int], stop: StopCondition) -> Callable[[], list[int]]:
    """A greedy generation of up to CHECK_TOKENS tokens of the warm-up prompt (what preparation runs to compile
    and capture every step, and to compare replay with eager steps)."""
    check = dataclasses.replace(generation, max_steps=min(generation.max_steps, CHECK_TOKENS))
    prompt = torch.tensor([warmup_prompt], device=engine.device)

    def generate_tokens() -> list[int]:
        chooser = TokenChooser(SamplingConfig(sample=False), engine.device)
        return strategy.generate(engine, prompt, check, chooser, stop).token_ids
    return generate_tokens


def prepare_graphs(requested: str, engine: Engine, strategy: GenerationStrategy, generation: GenerationConfig,
                   warmup_prompt: list[int], stop: StopCondition) -> str:
    """`requested`: --cuda_graphs (auto, on, off, static; `on` without CUDA was refused before loading). Returns
    what the log records as generation.cuda_graphs."""
    if requested == "off" or (requested == "auto" and engine.device.type != "cuda"):
        return "off"
    if engine.policy is not None:
        return "off (gated skipping decides its layers per sample; those steps run eagerly)"
    capacity = strategy.capacity(len(warmup_prompt), generation)
    shapes = strategy.static_shapes(engine, generation)
    if requested == "static":
        install_static_steps(engine, capacity, shapes, "eager")
        return f"static ({len(engine.static.steps)} fixed-shape steps run eagerly, not captured)"
    if engine.placement.split:
        return fall_back(engine, f"the model is split over {', '.join(map(str, engine.devices))}; a graph is "
                                 f"captured on one device")
    return capture_checked(engine, capacity, shapes, "cuda",
                           check_tokens(engine, strategy, generation, warmup_prompt, stop))
