"""PruneModel's configuration: the settings every method shares, plus the options of every registered method
(each method's options dataclass, merged; a flag two methods share is declared by both, identically), and the
checks that need no model (the CLI runs them before loading one)."""
from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass, field, fields

from layerbench.errors import UsageError
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
    """Every option of the methods: name -> (type, field, {method: its help for the option}). An option two
    methods declare must have the same type and default in both."""
    merged: dict[str, tuple[object, dataclasses.Field, dict[str, str]]] = {}
    for method in methods:
        if method.options is None:
            continue
        hints = typing.get_type_hints(method.options)
        for f in fields(method.options):
            if f.name in merged:
                kind, first, helps = merged[f.name]
                if (kind, first.default) != (hints[f.name], f.default):
                    raise TypeError(f"option {f.name} of {method.name} differs from the one of {next(iter(helps))}")
                helps[method.name] = f.metadata.get("help", "")
            else:
                merged[f.name] = (hints[f.name], f, {method.name: f.metadata.get("help", "")})
    return merged


def copy_field(f: dataclasses.Field, **metadata) -> dataclasses.Field:
    default = {"default": f.default} if f.default is not dataclasses.MISSING else {"default_factory": f.default_factory}
    return field(**default, metadata={**f.metadata, **metadata})


def _build_config() -> type:
    shared = [(f.name, typing.get_type_hints(SharedPruneConfig)[f.name], copy_field(f))
              for f in fields(SharedPruneConfig)]
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
