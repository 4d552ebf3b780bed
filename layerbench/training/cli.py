"""train.py's entry point: flags parsed and checked, and the training records read, before torch or transformers
is imported (a bad flag is one `error:` line and exit status 2, at once); then the training itself."""
from __future__ import annotations

import os
import sys

from layerbench.errors import UsageError
from layerbench.training.arguments import parse_args
from layerbench.training.data import load_records
from layerbench.training.flag_checks import check_flags


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    is_main = int(os.environ.get("RANK", 0)) == 0
    try:
        args = parse_args(argv)
        check_flags(args)
        records = load_records(args.data)
        from layerbench.training.trainer import train  # the heavy imports, once the flags are known to be good
        return train(args, records, argv)
    except UsageError as exc:  # includes model loading errors
        if is_main:  # every process checks the same flags; one line is enough
            print(f"error: {exc}", file=sys.stderr)
        return 2
    except SystemExit as exc:  # argparse has already printed its one line (or the help)
        return exc.code if isinstance(exc.code, int) else 2
