"""How a run's decode, draft and verification steps compute, decided before anything is timed: exact mode
(`--exact`, engine.exact) and compiled blocks (`--compile`, engine.compiled). CUDA graphs are `runs.graphs`'.
Each returns what the run log records."""
from __future__ import annotations

import sys
import time

import torch

from layerbench.decoding import GenerationConfig, GenerationStrategy
from layerbench.decoding.sampling import StopCondition
from layerbench.engine import exact
from layerbench.engine.compiled import compile_blocks, uncompile_blocks
from layerbench.engine.engine import Engine
from layerbench.engine.static_steps import install_static_steps
from layerbench.runs.graphs import check_tokens, first_line

HALF_PRECISION = (torch.bfloat16, torch.float16)


def apply_exact(requested: str, engine: Engine) -> str:
    """--exact on the engine (auto: on in bfloat16 and float16, where shape-dependent rounding changes tokens;
    off in float32, where it costs more than it has ever changed: README). Returns generation.exact."""
    if requested == "off" or (requested == "auto" and engine.dtype not in HALF_PRECISION):
        engine.set_exact(0)
        return "off" if requested == "off" else f"off (auto: {str(engine.dtype).removeprefix('torch.')})"
    if engine.policy is not None:  # `on` with a per-sequence method was refused before loading
        return "off (gated skipping decides its layers per sample; it decodes autoregressively only)"
    engine.set_exact(exact.ROWS)
    return f"on ({exact.ROWS}-row tiles)"


def auto_compile(engine: Engine) -> str | None:
    """Why `--compile auto` leaves compilation off here, or None to compile (on where it measured faster)."""
    return f"off (auto: not measured faster on {engine.device.type}; see README)"


def prepare_compile(requested: str, engine: Engine, strategy: GenerationStrategy, generation: GenerationConfig,
                    warmup_prompt: list[int], stop: StopCondition) -> tuple[str, float | None]:
    """--compile: compile the decoder blocks and run the strategy on the warm-up prompt, so every fixed-shape
    step is compiled before timing. A failure falls back to eager blocks with one warning line. Returns
    (generation.compile, compile seconds)."""
    if requested == "off":
        return "off", None
    if requested == "auto" and auto_compile(engine) is not None:
        return auto_compile(engine), None
    if engine.policy is not None:
        return "off (gated skipping decides its layers per sample; those steps run eagerly)", None
    t0 = time.perf_counter()
    try:
        compile_blocks(engine)
        if not engine.exact_rows:  # compiled blocks run fixed-shape steps only (exact mode's steps are)
            install_static_steps(engine, strategy.capacity(len(warmup_prompt), generation),
                                 strategy.static_shapes(engine, generation), "eager")
        check_tokens(engine, strategy, generation, warmup_prompt, stop)()
    except Exception as exc:  # a compiler failure must not end the run
        uncompile_blocks(engine)
        engine.static = None
        reason = f"compilation failed: {first_line(exc)}"
        print(f"warning: --compile off ({reason}); decoder blocks run eagerly", file=sys.stderr)
        return f"off ({reason})", None
    seconds = time.perf_counter() - t0
    return f"on (torch.compile of the decoder block, {torch.__version__})", seconds
