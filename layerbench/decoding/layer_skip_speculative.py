"""Layer-skip self-speculative decoding (Draft & Verify, Zhang et al. 2024; SWIFT, Xia et al. 2025): the draft is
the full model with a set of layers skipped, the full model verifies.

With f the first skipped block, a draft token runs blocks [0, f), then the blocks of [f, L) that are not skipped,
then the final norm and head. Blocks [0, f) compute exactly what the full model computes, so their KV is kept and
verification runs only blocks [f, L), from the hidden states entering block f that the drafts already computed:
the blocks below the first skipped one never run twice for a token. Verification rewrites the KV of blocks
[f, L) at every verified position, so what the drafts wrote there is never read by the full model. Acceptance,
the bonus token and streaming are self-speculative decoding's (this strategy is that loop with another draft).

The skipped layers are ORIGINAL layer indices: given (`--draft_skip_layers 10-15` or `8,10-12`), or chosen on
calibration text by a pruning method that removes layers (`--draft_skip angular:6`, `--draft_skip
block_influence:6`): the layers it would remove are the ones the draft skips.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Optional

from layerbench.decoding.self_speculative import NUM_SPECULATIONS_HELP, SelfSpeculative
from layerbench.decoding.strategy import GenerationConfig
from layerbench.engine.phases import DECODE
from layerbench.errors import UsageError
from layerbench.flags import option
from layerbench.lazy import lazy
from layerbench.surgery.methods import PRUNE_METHODS

if TYPE_CHECKING:
    from layerbench.engine.engine import Engine
    from layerbench.engine.kv_cache import KVCache
    from layerbench.surgery.prune_model import PruneModel

base = lazy("layerbench.decoding.base")


@dataclass
class LayerSkipOptions:
    num_speculations: int = option(-1, NUM_SPECULATIONS_HELP)
    draft_skip_layers: Optional[str] = option(None, "ORIGINAL layers the draft skips: ranges and single layers, "
                                                    "e.g. 10-15 or 8,10-12")
    draft_skip: Optional[str] = option(None, "choose the layers the draft skips on calibration text: METHOD:N, the N "
                                             "layers a pruning method that removes layers would remove (e.g. "
                                             "angular:6, block_influence:6)")


@dataclass
class LayerSkipSettings:
    skipped_layers: list[int]  # original indices
    skipped_blocks: list[int]  # engine blocks
    shared_blocks: int  # f: blocks [0, f) are computed once for draft and verification
    draft_segments: list[tuple[int, int]]  # [a, b) block ranges the draft runs after block f
    chosen_by: str  # "--draft_skip_layers" or the method and N


def parse_layers(text: str) -> list[int]:
    """"8,10-12" -> [8, 10, 11, 12]."""
    layers: set[int] = set()
    for part in text.split(","):
        first, dash, last = part.strip().partition("-")
        if not first.isdigit() or (dash and not last.isdigit()):
            raise UsageError(f"--draft_skip_layers: expected layers and ranges like 10-15 or 8,10-12, got {text!r}")
        low, high = int(first), int(last) if dash else int(first)
        if high < low:
            raise UsageError(f"--draft_skip_layers: range {part.strip()} is empty")
        layers.update(range(low, high + 1))
    return sorted(layers)


def parse_method(text: str) -> tuple[str, int]:
    """"angular:6" -> ("angular", 6), for a registered method that removes layers and takes --prune_n."""
    name, _, count = text.partition(":")
    usable = [m.name for m in PRUNE_METHODS.values() if m.removes_layers and m.options is not None
              and "prune_n" in {f.name for f in dataclasses.fields(m.options)}]
    if name not in usable or not count.isdigit() or int(count) < 1:
        raise UsageError(f"--draft_skip: expected METHOD:N with METHOD one of {', '.join(usable)} and N >= 1, "
                         f"got {text!r}")
    return name, int(count)


class ChoosingTarget:
    """The pruned model as a pruning method sees it, with the method and N of --draft_skip as its config."""

    def __init__(self, pruner: PruneModel, method: str, n: int) -> None:
        self._pruner = pruner
        self.config = dataclasses.replace(pruner.config, method=method, prune_n=n)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._pruner, name)


class LayerSkipSpeculative(SelfSpeculative):
    name = "layer_skip_speculative"
    summary = ("draft with the whole model minus skipped layers (--draft_skip_layers or --draft_skip METHOD:N), "
               "verify with the whole model; layers before the first skipped one run once")
    short = "LS"
    options = LayerSkipOptions

    def validate(self, flags: Any) -> None:
        if flags.num_speculations <= 0:
            raise UsageError(f"--num_speculations must be > 0 for {self.name}")
        if (flags.draft_skip_layers is None) == (flags.draft_skip is None):
            raise UsageError(f"{self.name} needs one of --draft_skip_layers and --draft_skip")
        if flags.exit_layer != -1:
            raise UsageError(f"--exit_layer does not apply to {self.name}: its draft leaves the model at the last "
                             "layer (the skipped layers are --draft_skip_layers or --draft_skip)")
        if flags.draft_skip_layers is not None:
            parse_layers(flags.draft_skip_layers)
        else:
            parse_method(flags.draft_skip)

    def check_depth(self, flags: Any, num_layers: int) -> None:
        if flags.draft_skip_layers is not None:
            layers = parse_layers(flags.draft_skip_layers)
            if layers[-1] >= num_layers:
                raise UsageError(f"--draft_skip_layers: layer {layers[-1]} is not below the model's {num_layers}")
        elif parse_method(flags.draft_skip)[1] >= num_layers:
            raise UsageError(f"--draft_skip: N must be below the model's {num_layers} layers")

    def mode(self, exit_layer: int) -> str:
        return self.name

    def configure(self, flags: Any, pruner: PruneModel, engine: Engine, exit_block: int) -> GenerationConfig:
        layers, chosen_by = self._skipped_layers(flags, pruner)
        block_of = {pruner.kept_layers[b.position]: i for i, b in enumerate(engine.blocks) if b.position is not None}
        gone = [layer for layer in layers if layer not in block_of]
        if gone:
            raise UsageError(f"the draft cannot skip layers {gone}: they were pruned")
        skipped = sorted(block_of[layer] for layer in layers)
        if skipped[0] == 0:
            raise UsageError("the draft must compute the first block: do not skip layer "
                             f"{pruner.kept_layers[engine.blocks[0].position]}")
        first = skipped[0]
        segments: list[tuple[int, int]] = []  # the runs of blocks after `first` that the draft computes
        for block in range(first, engine.num_blocks):
            if block in skipped:
                continue
            if segments and segments[-1][1] == block:
                segments[-1] = (segments[-1][0], block + 1)
            else:
                segments.append((block, block + 1))
        settings = LayerSkipSettings(skipped_layers=layers, skipped_blocks=skipped, shared_blocks=first,
                                     draft_segments=segments, chosen_by=chosen_by)
        return GenerationConfig(max_steps=flags.max_steps, exit_block=first, num_speculations=flags.num_speculations,
                                settings=settings)

    @staticmethod
    def _skipped_layers(flags: Any, pruner: PruneModel) -> tuple[list[int], str]:
        if flags.draft_skip_layers is not None:
            return parse_layers(flags.draft_skip_layers), "--draft_skip_layers"
        method, n = parse_method(flags.draft_skip)
        if pruner.stand_in_runs:
            raise UsageError("--draft_skip chooses layers on a model without stand-ins; give --draft_skip_layers")
        if n >= pruner.num_decoder_layers:
            raise UsageError(f"--draft_skip {flags.draft_skip}: the pruned model has {pruner.num_decoder_layers} "
                             "layers")
        decision = PRUNE_METHODS[method].decide(ChoosingTarget(pruner, method, n))
        return sorted(decision.remove_layers), f"{method}:{n}"

    def static_shapes(self, engine: Engine, config: GenerationConfig) -> list[tuple[int, int, int, bool]]:
        draft = [(a, b, 1, False) for a, b in config.settings.draft_segments]
        return [(0, config.exit_block, 1, True)] + draft + [
            (config.exit_block, engine.num_blocks, rows, False) for rows in range(1, config.num_speculations + 2)]

    @staticmethod
    def _draft_step(engine: Engine, cache: KVCache, pos: int, token: int, config: GenerationConfig):
        shared = engine.run(cache, pos, 0, config.exit_block, input_ids=base.token_tensor(token, engine.device),
                            phase=DECODE)
        hidden = shared
        for first, last in config.settings.draft_segments:
            hidden = engine.run(cache, pos, first, last, hidden=hidden, phase=DECODE)
        return shared, engine.logits(hidden[:, -1], step=True)[0]


STRATEGY = LayerSkipSpeculative()
