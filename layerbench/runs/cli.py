"""benchmark.py's entry point: flags are parsed and checked (and the data read) before torch or transformers is
imported, so --help and a bad flag are answered at once; then the run itself (`layerbench.runs.benchmark_run`)."""
from __future__ import annotations

import sys

from layerbench.errors import UsageError
from layerbench.runs.plan import make_plan
from layerbench.runs.ranks import from_environment


def main(argv: list[str] | None = None) -> int:
    info = from_environment()
    try:
        plan = make_plan(argv, info)
        from layerbench.runs.benchmark_run import run  # the heavy imports, once the flags are known to be good
        return run(plan)
    except UsageError as exc:  # includes model loading and unsupported-architecture errors
        # every rank that refuses says so: under torchrun the first rank to exit gets the others killed, so a
        # line left to rank 0 alone can be lost
        print(f"error: {exc}", file=sys.stderr, flush=True)
        return 2
    except SystemExit as exc:  # argparse has already printed its one line (or the help)
        return exc.code if isinstance(exc.code, int) else 2
    finally:
        if "layerbench.runs.distributed" in sys.modules:  # a process group exists only if the run got that far
            sys.modules["layerbench.runs.distributed"].shutdown(info)
