"""Fixed-shape decode, draft and verification steps, replayable as CUDA graphs.

A step runs blocks [first, last) over T tokens whose positions come from a device tensor, into the engine's one
reused KV cache, from fixed input buffers to a fixed output. Nothing in it depends on a Python value that changes
between calls, so on CUDA it is captured once (at preparation, before timing) and replayed: a replay costs one
launch instead of hundreds, and needs no host synchronization beyond reading the chosen token. Without CUDA the
same step runs eagerly, which is how its bookkeeping is tested on CPU.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from layerbench.engine.kv_cache import KVCache

if TYPE_CHECKING:
    from layerbench.engine.engine import Engine

Shape = tuple[int, int, int, bool]  # (first block, last block, tokens, input is token ids)


class StaticStep:
    def __init__(self, engine: Engine, cache: KVCache, shape: Shape, graph: bool) -> None:
        self.engine, self.cache = engine, cache
        self.first, self.last, length, from_ids = shape
        device = engine.device
        self.start = torch.zeros(1, dtype=torch.long, device=device)
        self.offsets = torch.arange(length, device=device)
        self.inputs = (torch.zeros(1, length, dtype=torch.long, device=device) if from_ids else
                       torch.zeros(1, length, engine.embed_weight.shape[1], dtype=engine.dtype, device=device))
        self.from_ids = from_ids
        self.graph: torch.cuda.CUDAGraph | None = None
        self.output: torch.Tensor | None = None
        if graph:
            self._capture()

    def _compute(self, phase: str, observe: bool) -> torch.Tensor:
        positions = self.start + self.offsets
        hidden = self.engine.embed(self.inputs, positions) if self.from_ids else self.inputs
        return self.engine.forward(hidden, self.cache, 0, self.first, self.last, phase, positions=positions,
                                   observe=observe)

    @torch.inference_mode()
    def _capture(self) -> None:
        """Warm up on a side stream (allocator, kernel selection), then record one step."""
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            for _ in range(2):
                self._compute("capture", observe=False)
        torch.cuda.current_stream().wait_stream(stream)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph):
            self.output = self._compute("capture", observe=False)

    def __call__(self, start: int, inputs: torch.Tensor, phase: str) -> torch.Tensor:
        self.start.fill_(start)
        self.inputs.copy_(inputs)
        if self.graph is None:
            return self._compute(phase, observe=True)
        self.graph.replay()
        self.engine.notify(self.first, self.last, self.inputs, self.output, phase)
        return self.output.clone()  # the next replay overwrites the output buffer


class StaticSteps:
    """The engine's prepared steps, keyed by shape, and the one cache they all use."""

    def __init__(self, engine: Engine, capacity: int, shapes: list[Shape], graphs: bool) -> None:
        capacity = -(-capacity // 16) * 16  # memory-efficient attention wants the mask's key axis aligned to 16
        if engine.rotary is not None:
            engine.rotary.reserve(capacity)  # the table must not be reallocated under a captured graph
        self.cache = KVCache(engine.num_decoder_layers, engine.kv_heads, engine.head_dim, capacity, engine.dtype,
                             engine.device, zeroed=True)
        self.graphs = graphs
        self.steps = {shape: StaticStep(engine, self.cache, shape, graphs) for shape in dict.fromkeys(shapes)}

    def cache_for(self, capacity: int) -> KVCache:
        if capacity > self.cache.capacity:
            raise RuntimeError(f"a sequence of {capacity} positions exceeds the static cache "
                               f"({self.cache.capacity}); prepare the steps with a larger capacity")
        return self.cache

    def find(self, first: int, last: int, inputs: torch.Tensor) -> StaticStep | None:
        return self.steps.get((first, last, inputs.shape[1], inputs.dtype == torch.long))
