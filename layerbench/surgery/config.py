"""PruneModel's configuration: the settings every method shares, plus the options of every registered method
(each method's options dataclass, merged; a flag two methods share is declared by both, identically), and the
checks that need no model (the CLI runs them before loading one)."""
from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass

from layerbench.errors import UsageError
from layerbench.flags import copied_fields, copy_field, merge_options
from layerbench.surgery.method import PruneMethod
from layerbench.surgery.methods import BASELINE, PRUNE_METHODS

STAND_INS = ("none", "linear")


@dataclass
class SharedPruneConfig:
    method: str = BASELINE
    calibration_samples: int = 32
    calibration_max_length: int = 512
    stand_in: str = "none"  # methods that remove layers: "linear" fits a map in place of each removed run
    # keep dense originals of factorized matrices so adjust_compression_level can re-factorize (Python API);
    # the benchmark releases them so that it holds only what the compressed model needs
    keep_originals: bool = True


def method_fields(methods: typing.Iterable[PruneMethod]) -> dict[str, tuple[object, dataclasses.Field, dict[str, str]]]:
    """Every option of the methods: name -> (type, field, {method: its help for the option})."""
    return merge_options({method.name: method.options for method in methods})


def _build_config() -> type:
    shared = copied_fields(SharedPruneConfig)
    options = [(name, kind, copy_field(f)) for name, (kind, f, _) in method_fields(PRUNE_METHODS.values()).items()]
    return dataclasses.make_dataclass("PruneConfig", shared + options, namespace={"__module__": __name__})


PruneConfig = _build_config()
PruneConfig.__doc__ = ("PruneModel's configuration, built by keyword: `method`, the shared settings of "
                       "SharedPruneConfig, and the options of every method in PRUNE_METHODS.")


def method_of(config) -> PruneMethod:
    """The method a PruneConfig (`method`) or the flags (`prune_method`) choose."""
    name = getattr(config, "method", None) or getattr(config, "prune_method", None)
    if name not in PRUNE_METHODS:
        raise UsageError(f"--prune_method {name!r} unknown; choose from {', '.join(PRUNE_METHODS)}")
    return PRUNE_METHODS[name]


def validate_config(config) -> None:
    """Checks that need no model; depth-dependent checks happen when the method decides."""
    method = method_of(config)
    method.validate(config)
    if config.stand_in not in STAND_INS:
        raise UsageError(f"--stand_in must be one of {', '.join(STAND_INS)}, got {config.stand_in!r}")
    if config.stand_in != "none" and not method.removes_layers:
        raise UsageError(f"--stand_in only applies to methods that remove layers, not {config.method}")
    if config.calibration_samples < 1 or config.calibration_max_length < 2:
        raise UsageError("--calibration_samples must be >= 1 and --calibration_max_length >= 2")
