"""What a generation strategy is: one object, registered in `layerbench.decoding.STRATEGIES`, that owns its name
and summary, its flags (an options dataclass), the checks of their values that need no model, how its settings
are prepared for a (pruned) model, how the log and analyze_logs describe its runs, and its decode loop. Strategy
files import torch only on first use (`layerbench.lazy`), so the command line lists and checks every strategy
without loading torch."""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, ClassVar

if TYPE_CHECKING:
    import torch

    from layerbench.decoding.sampling import StopCondition, TokenChooser
    from layerbench.engine.engine import Engine
    from layerbench.surgery.prune_model import PruneModel


@dataclass
class GenerationConfig:
    max_steps: int
    exit_block: int = -1  # engine block index E: early exit / draft with blocks [0, E); -1: the full model
    # (--exit_layer names an ORIGINAL layer; configure() maps it onto the pruned model's blocks)
    num_speculations: int = 0  # d: tokens drafted per round
    draft_confidence: float | None = None  # stop drafting once the draft token's probability is below this
    settings: Any = None  # what a strategy prepared for this model beyond the above (see configure)


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
    num_rounds: int = 0  # draft/verify rounds
    stopped: bool = False  # True when an EOS / stop word ended generation before max_steps


class GenerationStrategy(ABC):
    """Turns a prompt into generated token ids with an engine; every variant of a model runs through the same
    strategy code, so their timings are comparable."""

    name: ClassVar[str]
    summary: ClassVar[str]  # one line: --help
    short: ClassVar[str]  # plot labels
    options: ClassVar[type | None] = None  # dataclass of its own flags; a flag two strategies share is declared by both
    speculative: ClassVar[bool] = False  # drafts and verifies: logs acceptance, needs every layer's KV

    def validate(self, flags: Any) -> None:
        """Checks of the generation flags that need no model (UsageError: one line, exit 2)."""

    def check_depth(self, flags: Any, num_layers: int) -> None:
        """Checks of the flags against the loaded model's depth (before pruning)."""

    def mode(self, exit_layer: int) -> str:
        """The log's `generation.mode`."""
        return "full_model"

    def configure(self, flags: Any, pruner: PruneModel, engine: Engine, exit_block: int) -> GenerationConfig:
        """The settings of the decode loop for this (pruned) model; `exit_block` is --exit_layer mapped to
        engine blocks (-1: none)."""
        return GenerationConfig(max_steps=flags.max_steps, exit_block=exit_block,
                                num_speculations=max(getattr(flags, "num_speculations", 0) or 0, 0),
                                draft_confidence=getattr(flags, "draft_confidence", None))

    @abstractmethod
    def generate(self, engine: Engine, prompt: torch.Tensor, config: GenerationConfig, chooser: TokenChooser,
                 stop: StopCondition, on_commit: CommitListener | None = None) -> GenerationResult: ...

    @abstractmethod
    def static_shapes(self, engine: Engine, config: GenerationConfig) -> list[tuple[int, int, int, bool]]:
        """Every fixed-shape step (first block, last block, tokens, from ids) its decode loop runs, so the
        engine can prepare (capture) them all before timing starts."""

    @staticmethod
    def capacity(prompt_length: int, config: GenerationConfig) -> int:
        """KV-cache positions one generation needs: the same for every strategy, so that in exact mode every
        strategy's fixed-shape steps read one key span (a longer cache changes masked attention's reduction). No
        strategy writes past the prompt plus max_steps: speculative rounds draft at most the steps that remain."""
        return prompt_length + config.max_steps + 2
