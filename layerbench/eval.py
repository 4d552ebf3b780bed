"""`python -m layerbench.eval [lm-eval's own run flags]`: lm-eval's CLI with the `layerbench` model registered.

lm-eval 0.4.13 discovers models only through its own registry (no plugin entry point), so this module registers
`layerbench` and hands the command line to lm-eval. The repository's offline tasks (`tasks/`) are on the include
path unless --include_path is given, and every task named in --tasks is loaded once before the run, so a task that
cannot be loaded (a hub task offline) is one line `error: ...` naming it, exit status 2.

    python -m layerbench.eval --model layerbench --model_args prune_method=angular,prune_n=6,stand_in=linear \\
        --tasks aclsum_mc,aclsum_ppl --limit 20 --batch_size 8
"""
from __future__ import annotations

import argparse
import sys

from layerbench.errors import UsageError


def _preflight(argv: list[str]) -> list[str]:
    """Check every --tasks entry loads; returns argv with the local task folder as default include path."""
    from layerbench.harness.tasks import LOCAL_TASKS, load_tasks, resolve
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--tasks", "-t", default=None)
    parser.add_argument("--include_path", default=None)
    known, _ = parser.parse_known_args(argv)
    if known.tasks is None or known.tasks == "list" or known.tasks.startswith("list_"):
        return argv
    names, paths = resolve([t for t in known.tasks.split(",") if t])
    if known.include_path:
        paths.append(known.include_path)
    load_tasks(names, paths)
    return argv if known.include_path else [*argv, "--include_path", LOCAL_TASKS]


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    import layerbench.harness.lm  # noqa: F401 - registers the `layerbench` model
    from lm_eval.__main__ import cli_evaluate
    try:
        if argv and argv[0] not in ("ls", "validate", "-h", "--help"):
            argv = _preflight(argv[1:] if argv[0] == "run" else argv)
            argv = ["run", *argv]
        sys.argv = ["lm-eval", *argv]
        cli_evaluate()
    except UsageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
