"""What a pruning method is: one object, registered in `layerbench.surgery.methods`, that owns everything about
the method: its name and summary, its flags (a dataclass whose fields are made with `option`), the checks of
their values that need no model, how it decides what to do to a model, and how analyze_logs labels a run of it.

A method never changes the model itself. Its `decide` reads the model through `Target` (calibration text,
calibrated products, the current layers) and returns a `Decision`; `PruneModel` applies it: removes the layers
(fitting a stand-in for each removed run when --stand_in asks), factorizes, or gates. Method files import torch
only inside functions, so the command line lists and checks every method without loading torch.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Protocol

from layerbench.errors import UsageError


@dataclass(frozen=True)
class Decision:
    """What to do to the model. `remove_layers`: ORIGINAL layer indices; `factorize`: keyword arguments of
    `PruneModel.apply_low_rank_factorization`; `gate`: wrap the layers in the temperature gate; `report`: the
    method's own log fields (merged into the run JSON's `prune` section)."""
    remove_layers: tuple[int, ...] = ()
    factorize: dict | None = None
    gate: bool = False
    report: dict = field(default_factory=dict)


class Target(Protocol):
    """What a method may read from the model it decides for (PruneModel provides it)."""

    config: Any  # the PruneConfig: every method's options plus the calibration settings
    model: Any
    kept_layers: list[int]  # original index of each current decoder layer, in order
    num_layers_original: int

    @property
    def num_decoder_layers(self) -> int: ...

    def calibration_sequences(self) -> tuple[list[list[int]], dict]: ...

    def calibrated(self, product: str, sequences: list[list[int]], info: dict, params: dict,
                   compute: Callable[[], Any], uses_model: bool = True) -> Any: ...


def no_check(config: Any) -> None:
    return None


def check_prune_n(method: str) -> Callable[[Any], None]:
    """The `validate` of a method that removes --prune_n layers: n >= 1 (the depth is checked by `prune_n_of`)."""
    def check(config: Any) -> None:
        if config.prune_n is None or config.prune_n < 1:
            raise UsageError(f"--prune_n must be >= 1 for --prune_method {method}, got {config.prune_n}")
    return check


def prune_n_of(target: Target) -> int:
    """--prune_n, checked against the layers the model has now."""
    n = target.config.prune_n
    if not 1 <= n < target.num_decoder_layers:
        raise UsageError(f"--prune_n must satisfy 1 <= n < {target.num_decoder_layers} (model layers), got {n}")
    return n


@dataclass(frozen=True)
class PruneMethod:
    name: str
    summary: str  # one line: --help and the README's method table
    decide: Callable[[Target], Decision]
    options: type | None = None  # dataclass of the method's own flags; a flag two methods share is declared by both
    validate: Callable[[Any], None] = no_check  # checks of the options that need no model (UsageError)
    label: Callable[[dict], str] = lambda values: ""  # analyze_logs' parameter column, from args + prune report
    removes_layers: bool = False  # --stand_in applies to it
    saveable: bool = True  # a standard HF checkpoint can describe its result (without stand-ins)
    per_sequence: bool = False  # decides per sequence at prefill, so drafts cannot be verified from its KV
    calibrates: Callable[[Any], bool] = lambda options: False  # reads calibration text with these flags
