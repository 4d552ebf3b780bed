"""Compiled blocks: `DecoderBlock.compute` through torch.compile (inductor), for fixed-shape steps.

The unit compiled is one decoder block over its cache slot's tensors and a mask built outside, so one graph
serves every layer of the model (no recompilation per layer, compile time independent of depth) and a block
computes exactly the same way whichever pass it is part of: a draft pass [0, E), a verification pass [E, L) or a
full pass. Inside a block inductor fuses what runs between the matrix products (norms, rotary, residual adds,
the gated activation, the cache writes). Eager passes (whose key span changes with every position) never run the
compiled code. Compiling happens in `warm`, before anything is timed; on CUDA the compiled kernels are then
captured in the project's own CUDA graphs (inductor's own graphs stay off).
"""
from __future__ import annotations

import functools

import torch

from layerbench.engine.blocks import BlockCompute, DecoderBlock
from layerbench.engine.engine import Engine

RECOMPILE_LIMIT = 64  # compiled variants of the block: one per (model shape, dtype, rows, cache length, window)


@functools.cache
def compiled_block_compute() -> BlockCompute:
    """One compiled DecoderBlock.compute for the process: every engine shares its compiled graphs (one per block
    shape: hidden size, dtype, rows, cache length), so a second engine over the same model compiles nothing."""
    torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, RECOMPILE_LIMIT)
    return torch.compile(DecoderBlock.compute, dynamic=False, fullgraph=True)


def compile_blocks(engine: Engine) -> None:
    """Let the engine's fixed-shape steps run the compiled DecoderBlock.compute (compiled on first call)."""
    engine.block_compute = compiled_block_compute()


def uncompile_blocks(engine: Engine) -> None:
    engine.block_compute = None
