"""Bad user input: one error type the CLIs turn into a single stderr line and exit status 2, and argument
parsers whose own errors look the same."""
from __future__ import annotations

import argparse
import sys
from typing import Callable, NoReturn


class UsageError(ValueError):
    """Bad input from the user: a flag value, a missing file, an unreachable dataset."""


class OneLineErrors:
    """Parser mixin: argparse errors become one `error: ...` line on stderr and exit status 2 (no usage dump)."""

    def error(self, message: str) -> NoReturn:
        print(f"error: {message}", file=sys.stderr)
        sys.exit(2)


class OneLineArgumentParser(OneLineErrors, argparse.ArgumentParser):
    pass


def _int_at_least(text: str, minimum: int) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid int value: {text!r}") from None
    if value < minimum:
        raise argparse.ArgumentTypeError(f"must be >= {minimum}, got {value}")
    return value


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1."""
    return _int_at_least(text, 1)


def non_negative_int(text: str) -> int:
    """argparse type: an integer >= 0."""
    return _int_at_least(text, 0)


def seed_int(text: str) -> int:
    """argparse type: a seed numpy, torch and random all accept, in [0, 2**32 - 1]."""
    value = _int_at_least(text, 0)
    if value > 2**32 - 1:
        raise argparse.ArgumentTypeError(f"must be in [0, 2**32 - 1], got {value}")
    return value


def folder_name(text: str) -> str:
    """argparse type: a folder path that is not empty."""
    if not text.strip():
        raise argparse.ArgumentTypeError(f"must name a folder, got {text!r}")
    return text


def run_script(main: Callable[[], object]) -> NoReturn:
    """Run a script's main(); a UsageError becomes one `error: ...` line and exit status 2."""
    try:
        code = main()
    except UsageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    sys.exit(code if isinstance(code, int) else 0)
