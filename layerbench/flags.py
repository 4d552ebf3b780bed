"""An argparse parser built from dataclasses, as transformers' HfArgumentParser builds one (the same flag names,
`--flag True/False` for booleans plus `--no_flag` for those that default to True, `nargs="+"` for lists, and
dashed aliases), without importing transformers; flags are grouped by a `group` in their metadata, each with its
help, its choices and its default printed once."""
from __future__ import annotations

import argparse
import math
import types
import typing
from dataclasses import MISSING, Field, field, fields
from typing import Any

TRUE = ("yes", "true", "t", "y", "1")
FALSE = ("no", "false", "f", "n", "0")


def option(default, help: str, choices: typing.Sequence[str] | None = None, group: str | None = None):
    """A dataclass field with the help text, choices and help-section group the parser shows."""
    metadata = {"help": help}
    if choices:
        metadata["choices"] = list(choices)
    if group:
        metadata["group"] = group
    return field(default=default, metadata=metadata)


def to_bool(text: str) -> bool:
    """argparse type: the truthy and falsy spellings HfArgumentParser accepts (case-insensitive)."""
    if text.lower() in TRUE:
        return True
    if text.lower() in FALSE:
        return False
    raise argparse.ArgumentTypeError(f"expected True or False (or yes/no, t/f, y/n, 1/0), got {text!r}")


def to_int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid int value: {text!r}") from None


def to_finite_float(text: str) -> float:
    """argparse type: a float that is a number (nan and inf are refused for every flag)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid float value: {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a finite number, got {text}")
    return value


CONVERTERS: dict[type, typing.Callable[[str], object]] = {bool: to_bool, int: to_int, float: to_finite_float,
                                                            str: str}
METAVARS = {bool: "BOOL", int: "N", float: "X", str: "TEXT"}


def _unwrap(hint) -> tuple[type, bool]:
    """(element type, is a list) of a field's annotation, Optional removed."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        hint = next(a for a in typing.get_args(hint) if a is not type(None))
    if typing.get_origin(hint) is list:
        return typing.get_args(hint)[0], True
    return hint, False


def element_type(hint) -> type:
    """The type of one value of a flag annotated `hint` (int for `Optional[int]` and `list[int]`)."""
    return _unwrap(hint)[0]


def _help(f: Field, default) -> str:
    text = f.metadata.get("help", "").replace("%", "%%")  # argparse expands %-formats in help
    return text if default is None or default is MISSING else f"{text} (default: {default})"


def _add_field(group: argparse._ArgumentGroup, f: Field, hint) -> None:
    kind, is_list = _unwrap(hint)
    kwargs: dict = {"dest": f.name, "default": f.default, "type": CONVERTERS[kind],
                    "help": _help(f, f.default), "metavar": METAVARS[kind]}
    if "choices" in f.metadata:
        kwargs.update(choices=f.metadata["choices"], metavar=None)
    if is_list:
        kwargs["nargs"] = "+"
    elif kind is bool:  # `--flag` alone means True, as in HfArgumentParser
        kwargs.update(nargs="?", const=True)
    group.add_argument(f"--{f.name}", **kwargs)
    if "_" in f.name:  # HfArgumentParser's dashed spelling, accepted but not listed
        group.add_argument(f"--{f.name.replace('_', '-')}", **{**kwargs, "default": argparse.SUPPRESS,
                                                                 "help": argparse.SUPPRESS})
    if kind is bool and f.default is True:
        group.add_argument(f"--no_{f.name}", dest=f.name, action="store_false", help=f"same as --{f.name} False")


def add_dataclass_flags(parser: argparse.ArgumentParser, classes: typing.Sequence[type],
                        groups: dict[str, str], default_groups: dict[type, str]) -> None:
    """One argument group per entry of `groups` (title -> description), in that order; a field goes to its
    metadata's group, else to its class's entry in `default_groups`."""
    sections = {title: parser.add_argument_group(title, description) for title, description in groups.items()}
    for cls in classes:
        hints = typing.get_type_hints(cls)
        for f in fields(cls):
            _add_field(sections[f.metadata.get("group", default_groups[cls])], f, hints[f.name])


class _Unset:
    def __repr__(self) -> str:
        return "<unset>"


UNSET = _Unset()


def parse_noting_explicit(parser: argparse.ArgumentParser, argv: list[str] | None
                          ) -> tuple[argparse.Namespace, frozenset[str]]:
    """Parse as `parser.parse_args` does, and also say which destinations the command line set (a flag given
    with its default value counts as given): argparse fills in a default only where the namespace has no value
    yet, so every destination starts as UNSET and those still UNSET afterwards get their defaults."""
    dests = {a.dest for a in parser._actions if a.default is not argparse.SUPPRESS}  # not --help's
    namespace = parser.parse_args(argv, namespace=argparse.Namespace(**{d: UNSET for d in dests}))
    explicit = frozenset(d for d in dests if getattr(namespace, d) is not UNSET)
    for action in parser._actions:  # as argparse does: the first action of a destination with a default wins
        if getattr(namespace, action.dest, None) is UNSET and action.default is not argparse.SUPPRESS:
            setattr(namespace, action.dest, action.default)
    return namespace, explicit


def build_dataclasses(namespace: argparse.Namespace, classes: typing.Sequence[type]) -> list:
    """The dataclass instances, built by keyword from the parsed flags."""
    return [cls(**{f.name: getattr(namespace, f.name) for f in fields(cls)}) for cls in classes]


def merge_options(options_by_owner: dict[str, type | None]) -> dict[str, tuple[Any, Field, dict[str, str]]]:
    """The fields of several owners' option dataclasses (pruning methods, generation strategies): name ->
    (type, field, {owner: its help}). An option two owners declare must have the same type and default."""
    merged: dict[str, tuple[Any, Field, dict[str, str]]] = {}
    for owner, options in options_by_owner.items():
        if options is None:
            continue
        hints = typing.get_type_hints(options)
        for f in fields(options):
            if f.name in merged:
                kind, first, helps = merged[f.name]
                if (kind, first.default) != (hints[f.name], f.default):
                    raise TypeError(f"option {f.name} of {owner} differs from the one of {next(iter(helps))}")
                helps[owner] = f.metadata.get("help", "")
            else:
                merged[f.name] = (hints[f.name], f, {owner: f.metadata.get("help", "")})
    return merged


def copy_field(f: Field, **metadata) -> Field:
    """A fresh field like `f` (a Field object belongs to one class), with metadata entries replaced."""
    default = {"default": f.default} if f.default is not MISSING else {"default_factory": f.default_factory}
    return field(**default, metadata={**f.metadata, **metadata})


def owned_help(helps: dict[str, str]) -> str:
    """An owned flag's help, prefixed with its owners ("lowrank/gated: ..."), or each owner's own
    ("angular: ...; block_influence: ...") where they differ."""
    if len(set(helps.values())) == 1:
        return f"{'/'.join(helps)}: {next(iter(helps.values()))}"
    return "; ".join(f"{owner}: {text}" for owner, text in helps.items())


def copied_fields(cls: type) -> list[tuple[str, Any, Field]]:
    """(name, type, fresh field) of each field of a dataclass, for `dataclasses.make_dataclass`."""
    hints = typing.get_type_hints(cls)
    return [(f.name, hints[f.name], copy_field(f)) for f in fields(cls)]


def owned_fields(options_by_owner: dict[str, type | None]) -> list[tuple[str, Any, Field]]:
    """The merged options of several owners, each with its help prefixed by its owners."""
    return [(name, kind, copy_field(f, help=owned_help(helps)))
            for name, (kind, f, helps) in merge_options(options_by_owner).items()]
