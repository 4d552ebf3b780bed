"""Fixed-shape decode, draft and verification steps, replayable as CUDA graphs.

A step is `Engine.forward`, the one forward every pass goes through, called from fixed input buffers with its
positions in a device tensor and no host-known start (so attention reads the whole of the engine's shared cache
under a mask), writing to a fixed output. Nothing in it depends on a Python value that changes between calls, so
on CUDA it is captured once (at preparation, before timing) and replayed: a replay costs one launch instead of
hundreds, and needs no host synchronization beyond reading the chosen token. The engine never imports this
module: it only knows the `StepRunner` protocol.

Every buffer a step reads or writes (the shared cache, sized here through `Engine.allocate_cache`; the rotary
tables, pinned here; position and input buffers; the output) is allocated once and never rebound: `buffers()`
lists them so tests can check their addresses.

Modes: "eager" runs each step's code on every call (any device; how the bookkeeping is tested on CPU), "cuda"
captures CUDA graphs, "emulated" records on CPU what a replay does (the step runs without per-block callbacks
into its fixed output buffer), so the replay path's counting and checks are tested without a GPU.
"""
from __future__ import annotations

from typing import Callable

import torch

from layerbench.engine.engine import Engine
from layerbench.errors import UsageError

Shape = tuple[int, int, int, bool]  # (first block, last block, tokens, input is token ids)
MODES = ("eager", "cuda", "emulated")


class StaticStep:
    def __init__(self, engine: Engine, shape: Shape) -> None:
        self.engine = engine
        self.first, self.last, length, from_ids = shape
        device = engine.device
        self.start = torch.zeros(1, dtype=torch.long, device=device)
        self.offsets = torch.arange(length, device=device)
        self.inputs = (torch.zeros(1, length, dtype=torch.long, device=device) if from_ids else
                       torch.zeros(1, length, engine.embed_weight.shape[1], dtype=engine.dtype, device=device))
        self.from_ids = from_ids
        self.replay: Callable[[], None] | None = None
        self.output: torch.Tensor | None = None

    def _compute(self, phase: str, observe: bool, rows: int | None = None) -> torch.Tensor:
        positions = self.start + self.offsets
        hidden = self.engine.embed(self.inputs, positions) if self.from_ids else self.inputs
        return self.engine.forward(hidden, self.engine.cache, positions, self.first, self.last, phase,
                                   observe=observe, rows=rows)

    @torch.inference_mode()
    def capture_cuda(self) -> None:
        """Warm up on a side stream (allocator, kernel selection), then record one step."""
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            for _ in range(2):
                self._compute("capture", observe=False)
        torch.cuda.current_stream().wait_stream(stream)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            self.output = self._compute("capture", observe=False)
        self.replay = graph.replay

    @torch.inference_mode()
    def capture_emulated(self) -> None:
        self.output = self._compute("capture", observe=False).clone()
        self.replay = lambda: self.output.copy_(self._compute("replay", observe=False))

    def __call__(self, start: int, inputs: torch.Tensor, phase: str, replay: bool, rows: int | None = None
                 ) -> torch.Tensor:
        """The step at positions start.. on `inputs`; `rows`: how many rows are real (exact mode pads a tile)."""
        self.start.fill_(start)
        self.inputs.copy_(inputs)
        if self.replay is None or not replay:
            return self._compute(phase, observe=True, rows=rows)
        if self.engine.observers:
            raise RuntimeError("a replayed step cannot show per-block values to observers; remove them or turn "
                               "graphs off")
        self.replay()
        self.engine.count_blocks(self.first, self.last, self.inputs.shape[1] if rows is None else rows, phase)
        return self.output.clone()  # the next replay overwrites the output buffer

    def buffers(self) -> list[torch.Tensor]:
        return [t for t in (self.start, self.offsets, self.inputs, self.output) if t is not None]


class StaticSteps:
    """The engine's prepared steps, keyed by shape, over the engine's shared cache (sized here, then held)."""

    def __init__(self, engine: Engine, capacity: int, shapes: list[Shape], mode: str) -> None:
        if mode not in MODES:
            raise ValueError(f"static step mode {mode!r}; one of {MODES}")
        self.cache = engine.allocate_cache(capacity)
        if engine.rotary is not None:
            engine.rotary.pin(self.cache.capacity)  # a captured graph keeps reading these tables: never rebind them
        self.mode = mode
        self.replaying = mode != "eager"  # off: every step runs its code eagerly (the replay check's reference)
        self.steps = {shape: StaticStep(engine, shape) for shape in dict.fromkeys(shapes)}
        for step in self.steps.values():
            if mode == "cuda":
                step.capture_cuda()
            elif mode == "emulated":
                step.capture_emulated()

    def find(self, first: int, last: int, inputs: torch.Tensor) -> StaticStep | None:
        return self.steps.get((first, last, inputs.shape[1], inputs.dtype == torch.long))

    def buffers(self, engine: Engine) -> dict[str, torch.Tensor]:
        """Every tensor a captured step reads or writes, by name (the rotary tables included)."""
        named = {f"cache.{i}": t for i, t in enumerate(self.cache.buffers())}
        if engine.rotary is not None:
            named.update({f"rotary.{i}": t for i, t in enumerate(engine.rotary.buffers())})
        for shape, step in self.steps.items():
            named.update({f"step{shape}.{i}": t for i, t in enumerate(step.buffers())})
        return named


def install_static_steps(engine: Engine, capacity: int, shapes: list[Shape], mode: str) -> StaticSteps:
    """Prepare fixed-shape steps (first, last, tokens, from_ids) over one reused cache of `capacity` positions
    and let `engine` replay them: run eagerly ("eager") or captured now, before anything is timed ("cuda" graphs;
    "emulated": the replay path on CPU)."""
    if engine.policy is not None:
        raise UsageError("static steps need the same layers at every step; a layer policy (gated skipping) "
                         "decides them per sequence")
    if mode != "eager" and engine.placement.split:
        raise UsageError(f"captured steps need the whole model on one device; this one is split over "
                         f"{', '.join(map(str, engine.devices))}")
    if engine.exact_rows:  # every step runs in tiles of exactly R rows (engine.exact)
        shapes = [(first, last, engine.exact_rows, from_ids) for first, last, _, from_ids in shapes]
    engine.static = None
    engine.static = StaticSteps(engine, capacity, shapes, mode)
    return engine.static
