"""Our forward of a supported Hugging Face causal LM: embedding, a range of blocks over a preallocated KV cache,
final norm and LM head, computed from the weights of the loaded HF modules.

No HF decoder layer, attention module or cache object is called: the model's module tree only supplies weights
(so surgery on it, low-rank factor modules and `save_pretrained` keep working). Kernel choices are made in
`prepare()`, once, before anything is timed; call it again after changing the model's structure.

Every caller (the decoding strategies, calibration, perplexity) goes through `run`, telling the engine which
phase it is in so that a layer policy (gated skipping) never has to guess.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Protocol

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.attention import sdpa_kernel

from layerbench.engine.attention import attention_backends, describe
from layerbench.engine import exact
from layerbench.engine.blocks import BlockCompute, DecoderBlock, StandInBlock, Step
from layerbench.engine.kv_cache import KVCache
from layerbench.engine.linear_kernels import bind_projection, choose_kernel
from layerbench.engine.norms import NORMS
from layerbench.engine.placement import Placement, module_device, to_device
from layerbench.engine.rope import RotaryTable
from layerbench.models.addons import get_addons
from layerbench.models.families import get_family

from layerbench.engine.phases import DECODE, PREFILL, VERIFY  # noqa: F401 - the engine's phases, re-exported

Block = DecoderBlock | StandInBlock


class LayerObserver(Protocol):
    """Sees each block's input and output values (eager passes only: a replayed graph has no per-block values)."""

    def __call__(self, block: Block, before: torch.Tensor, after: torch.Tensor, phase: str) -> None: ...


class StepRunner(Protocol):
    """Prepared fixed-shape steps over the engine's shared cache (engine.static_steps installs them from
    outside; they call `Engine.forward` like every other pass)."""

    replaying: bool

    def find(self, first: int, last: int, inputs: torch.Tensor) -> Callable | None: ...


class BlockCounter(Protocol):
    """Told which block ran over how many tokens, in eager passes and graph replays alike."""

    def __call__(self, block: Block, tokens: int, phase: str) -> None: ...


class LayerPolicy(Protocol):
    """Decides per pass which decoder-layer positions are skipped (gated skipping)."""

    def begin(self, phase: str) -> frozenset[int]: ...

    def observe(self, block: Block, before: torch.Tensor, after: torch.Tensor, phase: str) -> None: ...

    def skipped_block(self, block: Block, hidden: torch.Tensor, phase: str) -> None: ...

    def end(self, phase: str) -> None: ...


@dataclass
class EngineOptions:
    linear_kernel: str = "auto"  # auto | tuned | torch | few_row_mm | module (see linear_kernels)
    attention_backend: str = "auto"  # see attention.BACKENDS
    exact_rows: int = 0  # > 0: exact mode, every decode/draft/verification step in tiles of this many rows


class Engine:
    def __init__(self, model: nn.Module, options: EngineOptions | None = None) -> None:
        self.model = model
        self.options = options or EngineOptions()
        self.family = get_family(model)
        self.observers: list[LayerObserver] = []
        self.counters: list[BlockCounter] = []
        self.policy: LayerPolicy | None = None
        self.exact_rows = self.options.exact_rows
        self.block_compute: BlockCompute | None = None  # a compiled DecoderBlock.compute (engine.compiled)
        self.kernel = choose_kernel(self.options.linear_kernel, model)
        self.attention_backends = attention_backends(self.options.attention_backend,
                                                     module_device(get_family(model).embedding(model)))
        self.prepare()

    @property
    def linear_kernel(self) -> str:
        return self.kernel.name

    @property
    def attention_kernel(self) -> dict:
        return describe(self.attention_backends)

    def prepare(self) -> None:
        """Bind every block to the model's current modules (each computing on its weights' device) and choose
        kernels. Prepared steps and the shared cache belong to the previous structure, so they are dropped."""
        model, family, config = self.model, self.family, self.model.config
        self.static: StepRunner | None = None  # see engine.static_steps.install_static_steps
        self.cache: KVCache | None = None  # the shared cache: see new_cache
        self.embed_weight = family.embedding(model).weight
        self.device, self.dtype = self.embed_weight.device, self.embed_weight.dtype  # input and output device
        self.blocks = self._build_blocks()
        decoders = [b for b in self.blocks if isinstance(b, DecoderBlock)]
        self.num_decoder_layers = len(decoders)
        self.cache_devices = [b.device for b in decoders]  # each layer's KV-cache slot lives beside its weights
        self.kv_heads, self.head_dim = decoders[0].kv_heads, decoders[0].head_dim
        eps = getattr(config, family.eps_attr)
        self.final_norm = NORMS[family.norm_kind](family.final_norm(model), eps)
        self.head = bind_projection(family.head(model), self.kernel)
        self.placement = Placement(embed=self.device, blocks=tuple(b.device for b in self.blocks),
                                   final_norm=module_device(family.final_norm(model), "the final norm"),
                                   head=module_device(family.head(model), "the LM head"))
        self.final_softcap = getattr(config, family.final_softcap_attr, None) if family.final_softcap_attr else None
        scale = family.embed_scale(config)
        self.embed_scale = torch.tensor(scale, dtype=torch.float32).to(self.dtype) if scale else None
        self.position_weight = (model.get_submodule(family.position_embed_path).weight
                                if family.position_embed_path else None)
        block_devices = list(dict.fromkeys([self.device, *self.placement.blocks]))
        self.rotary = RotaryTable(config, self.head_dim, block_devices, self.dtype) if family.rotary else None
        addons = get_addons(model)
        self.exit_adapters = {int(k): (bind_projection(m, self.kernel), module_device(m, f"exit adapter {k}"))
                              for k, m in (addons.exit_adapters.items() if addons else [])}
        draft = addons.draft_head if addons is not None else None
        self.draft_head = None if draft is None else (bind_projection(draft.linear, self.kernel), draft.token_ids,
                                                      draft.vocab_size, module_device(draft, "the draft head"))

    def _build_blocks(self) -> list[Block]:
        layers = self.family.layers(self.model)
        addons = get_addons(self.model)
        stand_ins = addons.stand_ins if addons is not None else {}
        blocks: list[Block] = []
        for position in range(len(layers) + 1):
            if str(position) in stand_ins:
                blocks.append(StandInBlock(stand_ins[str(position)], self.kernel))
            if position < len(layers):
                layer = getattr(layers[position], "wrapped", layers[position])  # see surgery.gating.GatedLayer
                blocks.append(DecoderBlock(layer, self.family, self.model.config, slot=position,
                                           position=position, kernel=self.kernel))
        return blocks

    @property
    def num_blocks(self) -> int:
        """Blocks the engine runs in sequence: decoder layers plus any stand-ins (`num_decoder_layers` counts the
        layers alone; flags and reports name ORIGINAL layer indices)."""
        return len(self.blocks)

    @property
    def devices(self) -> tuple[torch.device, ...]:
        return self.placement.devices


    def new_cache(self, capacity: int, shared: bool = True, batch: int = 1) -> KVCache:
        """A cache for a sequence of up to `capacity` positions.

        `shared`: the engine's one cache, sized once (the warm-up on the longest prompt sizes it before anything
        is timed; it grows only for a longer sequence) and reused by every sequence: position p lives at index p
        and a pass reads only the keys it may see, so nothing an earlier sequence left is read. Static steps hold
        it at their size. Otherwise a private cache (calibration, perplexity, scoring); `batch` > 1 is one for
        that many right-padded sequences in one causal pass from position 0 (padding only follows real tokens,
        so causal attention keeps it out of every real position)."""
        if batch > 1 and (shared or self.policy is not None):
            raise ValueError("a batched cache is private and for passes without a layer policy")
        if not shared:
            if self.rotary is not None:
                self.rotary.reserve(capacity)
            return KVCache(self.num_decoder_layers, self.kv_heads, self.head_dim, capacity, self.dtype,
                           self.cache_devices, batch=batch)
        if self.cache is None or self.shared_positions(capacity) > self.cache.capacity:
            self.allocate_cache(capacity)
        return self.cache

    def shared_positions(self, capacity: int) -> int:
        """Positions the shared cache holds for sequences of `capacity` positions: rounded up to 16
        (memory-efficient attention wants a mask's key axis aligned to 16), plus, in exact mode, room for the
        padding rows of a step's last tile."""
        return -(-(capacity + self.exact_rows) // 16) * 16

    def allocate_cache(self, capacity: int) -> KVCache:
        """(Re)allocate the shared cache for sequences of `capacity` positions, zeroed (a fixed-shape step reads
        every position under a mask, and 0 x garbage could be NaN). Refused while prepared steps hold the
        cache."""
        if self.static is not None:
            raise RuntimeError(f"a sequence of {capacity} positions exceeds the static cache "
                               f"({self.cache.capacity}); prepare the steps with a larger capacity")
        self.cache = None  # release the old one first
        positions = self.shared_positions(capacity)
        if self.rotary is not None:
            self.rotary.reserve(positions)
        self.cache = KVCache(self.num_decoder_layers, self.kv_heads, self.head_dim, positions, self.dtype,
                             self.cache_devices, zeroed=True)
        return self.cache

    def set_exact(self, rows: int) -> None:
        """Exact mode with tiles of `rows` rows (0: off). The shared cache and prepared steps are dropped (their
        sizes and shapes depend on it)."""
        if rows and self.policy is not None:
            raise ValueError("exact mode needs the same layers at every step; a layer policy decides them per pass")
        if rows != self.exact_rows:
            self.exact_rows, self.static, self.cache = rows, None, None

    def embed(self, input_ids: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """(B, T) token ids at `positions` (T,) -> (B, T, d); B is 1 except in batched scoring."""
        hidden = F.embedding(to_device(input_ids, self.device), self.embed_weight)
        if self.embed_scale is not None:
            hidden = hidden * self.embed_scale
        if self.position_weight is not None:
            here = self.position_weight.device
            # only an exact-mode padding row can lie past the table: `run` refuses real positions past it
            positions = to_device(positions, here).clamp(max=self.position_weight.shape[0] - 1)
            hidden = hidden + to_device(F.embedding(positions, self.position_weight), self.device)
        return hidden

    def forward(self, hidden: torch.Tensor, cache: KVCache, positions: torch.Tensor, first: int, last: int,
                phase: str, start: int | None = None, observe: bool = True, rows: int | None = None
                ) -> torch.Tensor:
        """Blocks [first, last) over hidden states (B, T, d) at `positions` (T,), a device tensor, writing their
        keys/values at those indices. `start`: the first position when the host knows it (then attention reads
        only what can be visible; see blocks.Step); a fixed-shape step passes None. `observe=False` while a step
        is being captured. `rows`: how many of the T rows are real (the rest pad an exact-mode tile), for the
        block counters."""
        if start is not None and start + hidden.shape[1] > cache.capacity:
            raise RuntimeError(f"KV cache overflow: {start + hidden.shape[1]} > {cache.capacity} positions")
        step = self._with_rotary(Step(to_device(positions, hidden.device), cache, start, device=hidden.device,
                                      rows=rows))
        if self.attention_backends is None:
            return self._blocks(hidden, step, first, last, phase, observe)
        with sdpa_kernel(self.attention_backends, set_priority=True):
            return self._blocks(hidden, step, first, last, phase, observe)

    def _with_rotary(self, step: Step) -> Step:
        if self.rotary is not None:
            step.cos, step.sin = self.rotary.rows(step.positions, step.key_span(None)[1])
        return step

    def _step_on(self, step: Step, device: torch.device) -> Step:
        """The pass as blocks on another device see it: positions, rotary rows and masks on that device."""
        if device not in step.moved:
            step.moved[device] = self._with_rotary(Step(to_device(step.positions, device), step.cache, step.start,
                                                        device=device, rows=step.rows))
        return step.moved[device]

    def _blocks(self, hidden: torch.Tensor, step: Step, first: int, last: int, phase: str,
                observe: bool) -> torch.Tensor:
        policy = self.policy
        skipped = policy.begin(phase) if policy is not None else ()
        observers, counters = (self.observers, self.counters) if observe else ((), ())
        for block in self.blocks[first:last]:
            if block.position in skipped:
                policy.skipped_block(block, hidden, phase)
                continue
            if block.device != hidden.device:
                hidden = to_device(hidden, block.device)
            here = step if block.device == step.device else self._step_on(step, block.device)
            # a compiled block runs fixed-shape steps only: an eager pass's span changes with every position
            out = block(hidden, here, self.block_compute if step.start is None else None)
            for count in counters:
                count(block, step.real_rows, phase)
            for observe in observers:
                observe(block, hidden, out, phase)
            if policy is not None:
                policy.observe(block, hidden, out, phase)
            hidden = out
        if policy is not None:
            policy.end(phase)
        return hidden

    def run(self, cache: KVCache, start: int, first: int, last: int, input_ids: torch.Tensor | None = None,
            hidden: torch.Tensor | None = None, phase: str = DECODE) -> torch.Tensor:
        """Blocks [first, last) on tokens at positions start.., from ids (embedded here) or from the hidden
        states entering block `first`. A decode or verification pass whose shape has a prepared static step
        replays it; in exact mode every such pass over the shared cache runs in fixed tiles (engine.exact)."""
        inputs = input_ids if hidden is None else hidden
        if self.position_weight is not None and start + inputs.shape[1] > self.position_weight.shape[0]:
            raise IndexError(f"position {start + inputs.shape[1] - 1} is past the model's "
                             f"{self.position_weight.shape[0]} learned positions")
        if phase != PREFILL and cache is self.cache:
            if self.exact_rows:
                return self._run_tiles(start, first, last, inputs, hidden is None, phase)
            if self.static is not None:
                step = self.static.find(first, last, inputs)
                if step is not None:
                    return step(start, inputs, phase, self.static.replaying)
        positions = torch.arange(start, start + inputs.shape[1], device=inputs.device)
        if hidden is None:
            hidden = self.embed(input_ids, positions)
        return self.forward(hidden, cache, positions, first, last, phase, start=start)

    def _run_tiles(self, start: int, first: int, last: int, inputs: torch.Tensor, from_ids: bool,
                   phase: str) -> torch.Tensor:
        """An exact-mode pass: tiles of exactly R rows (the last padded), each a fixed-shape step."""
        rows, cache = self.exact_rows, self.cache
        spans = exact.tile_spans(inputs.shape[1], rows)
        if start + spans[-1][0] + rows > cache.capacity:
            raise RuntimeError(f"KV cache overflow: {start + spans[-1][0] + rows} > {cache.capacity} positions")
        outs = []
        for a, b in spans:
            tile = exact.pad_rows(inputs[:, a:b], rows)
            step = self.static.find(first, last, tile) if self.static is not None else None
            if step is not None:
                out = step(start + a, tile, phase, self.static.replaying, rows=b - a)
            else:
                positions = torch.arange(start + a, start + a + rows, device=tile.device)
                hidden = self.embed(tile, positions) if from_ids else tile
                out = self.forward(hidden, cache, positions, first, last, phase, rows=b - a)
            outs.append(out[:, : b - a])
        return outs[0] if len(outs) == 1 else torch.cat(outs, dim=1)

    def count_blocks(self, first: int, last: int, tokens: int, phase: str) -> None:
        """Tell the counters about blocks [first, last) that a replayed step ran."""
        for block in self.blocks[first:last]:
            for count in self.counters:
                count(block, tokens, phase)

    def logits(self, hidden: torch.Tensor, step: bool = False) -> torch.Tensor:
        """Final norm and LM head (with Gemma 2's final soft-capping), returned on the input device. `step`: the
        rows of a decode, draft or verification step (in exact mode computed in the steps' fixed tiles)."""
        return self._per_step(self._logits, hidden, step)

    def _per_step(self, fn: Callable[[torch.Tensor], torch.Tensor], hidden: torch.Tensor, step: bool
                  ) -> torch.Tensor:
        return exact.tiled(fn, hidden, self.exact_rows) if step and self.exact_rows else fn(hidden)

    def _logits(self, hidden: torch.Tensor) -> torch.Tensor:
        normed = self.final_norm(to_device(hidden, self.placement.final_norm))
        logits = self.head(to_device(normed, self.placement.head))
        if self.final_softcap is not None:
            logits = torch.tanh(logits / self.final_softcap) * self.final_softcap
        return to_device(logits, self.device)

    def _adapted(self, hidden: torch.Tensor, exit_block: int) -> torch.Tensor:
        if exit_block not in self.exit_adapters:
            return hidden
        adapter, device = self.exit_adapters[exit_block]
        hidden = to_device(hidden, device)
        return hidden + adapter(hidden)

    def exit_logits(self, hidden: torch.Tensor, exit_block: int, step: bool = False) -> torch.Tensor:
        """Logits from the hidden state after block exit_block - 1 (an engine block index), through its exit
        adapter when one is fitted."""
        return self._per_step(lambda h: self._logits(self._adapted(h, exit_block)), hidden, step)

    def draft_logits(self, hidden: torch.Tensor, exit_block: int, step: bool = False) -> torch.Tensor:
        """Like exit_logits, but with a draft head, if one is fitted, scoring only its vocabulary (every other
        token gets -inf): drafts are proposals, so they may be approximate; verification scores every token."""
        if self.draft_head is None:
            return self.exit_logits(hidden, exit_block, step)
        return self._per_step(lambda h: self._draft_head_logits(h, exit_block), hidden, step)

    def _draft_head_logits(self, hidden: torch.Tensor, exit_block: int) -> torch.Tensor:
        project, token_ids, vocab_size, device = self.draft_head
        normed = self.final_norm(to_device(self._adapted(hidden, exit_block), self.placement.final_norm))
        scores = project(to_device(normed, device))
        if self.final_softcap is not None:
            scores = torch.tanh(scores / self.final_softcap) * self.final_softcap
        logits = scores.new_full((*scores.shape[:-1], vocab_size), float("-inf"))
        return to_device(logits.index_copy_(-1, token_ids, scores), self.device)
