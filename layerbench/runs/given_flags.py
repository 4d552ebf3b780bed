"""Flags given on the command line that the chosen configuration would ignore are refused (one `error:` line,
exit status 2) instead of silently doing nothing. Only flags the user gave count (`Arguments.explicit`; a flag
given with its default value counts too): a default never triggers these checks."""
from __future__ import annotations

import os

from layerbench.errors import UsageError
from layerbench.runs.arguments import Arguments
from layerbench.surgery.methods import PRUNE_METHODS

SAMPLING_FLAGS = ("temperature", "top_k", "top_p")
CALIBRATION_FLAGS = ("calibration_dataset", "calibration_samples", "calibration_max_length", "no_calibration_cache")


def calibration_users(args: Arguments) -> list[str]:
    """What in this configuration reads calibration text."""
    p, g = args.prune, args.generation
    users = [f"--prune_method {p.prune_method}"] if PRUNE_METHODS[p.prune_method].calibrates(p) else []
    users += ["--stand_in"] if p.stand_in != "none" else []
    users += ["--exit_adapter linear"] if g.exit_adapter == "linear" else []
    users += [f"--{name}" for name in ("draft_vocabulary", "draft_skip") if getattr(g, name, None) is not None]
    return users


def check_given_flags(args: Arguments) -> None:
    given, g = args.explicit, args.generation
    if not g.sample:
        for name in SAMPLING_FLAGS:
            if name in given:
                raise UsageError(f"--{name} only applies with --sample True; decoding is greedy without it")
    calibration = [name for name in CALIBRATION_FLAGS if name in given]
    if calibration and not calibration_users(args):
        raise UsageError(f"--{calibration[0]} only applies when something reads calibration text (a --prune_method "
                         f"that calibrates, --stand_in, --exit_adapter, --draft_vocabulary, --draft_skip); "
                         f"--prune_method {args.prune.prune_method} with these flags reads none")
    if "split" in given and args.dataset.dataset == "custom_jsonl":
        raise UsageError("--split does not apply to --dataset custom_jsonl: the --data_path file is its one split")
    if args.benchmark.verify_cache and args.benchmark.model is not None:
        raise UsageError("--verify_cache checks the embedded model's converted cache; a --model is loaded as it is")


def check_resume_folder(args: Arguments, resumed_folder: str) -> None:
    """--output_dir given with --resume must be the resumed run's folder (its files are continued in place)."""
    out = args.benchmark.output_dir
    if "output_dir" in args.explicit and os.path.abspath(out) != os.path.abspath(resumed_folder):
        raise UsageError(f"--output_dir {out}: --resume continues the run in its own folder {resumed_folder}; "
                         f"leave --output_dir out or give that folder")
