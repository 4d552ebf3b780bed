"""Continuing an interrupted run: the same configuration, the same log files, no finished sample redone."""
from __future__ import annotations

import json
import os
from dataclasses import dataclass

from layerbench.errors import UsageError
from layerbench.runs.run_log import RunLog, read_samples

# flags that may differ between the interrupted run and its continuation
IGNORED_FLAGS = {"resume", "output_dir", "warmup", "bootstrap_resamples", "no_calibration_cache", "verify_cache",
                 "reference"}


@dataclass
class ResumeState:
    run_id: str
    output_dir: str
    doc: dict
    records: list[dict]


def run_json_path(path: str) -> str:
    if path.endswith("_samples.jsonl"):
        return path[: -len("_samples.jsonl")] + ".json"
    return path


def load(path: str, args: dict) -> ResumeState:
    if os.path.isdir(path):
        raise UsageError(f"--resume {path}: is a directory; pass the interrupted run's JSON or samples file")
    json_path = run_json_path(path)
    if not os.path.isfile(json_path):
        raise UsageError(f"--resume {path}: no run log {json_path}")
    try:
        with open(json_path, encoding="utf-8") as f:
            doc = json.load(f)
        old_args = doc["args"]
        run_id = doc["run_id"]
    except (OSError, json.JSONDecodeError, KeyError, TypeError) as exc:
        raise UsageError(f"--resume {path}: not a benchmark run log ({type(exc).__name__})") from exc
    differing = sorted(k for k in set(args) | set(old_args)
                       if k not in IGNORED_FLAGS and args.get(k) != old_args.get(k))
    if differing:
        shown = ", ".join(f"--{k} ({old_args.get(k)!r} -> {args.get(k)!r})" for k in differing[:4])
        raise UsageError(f"--resume {path}: configuration differs from the interrupted run: {shown}")
    output_dir = os.path.dirname(os.path.abspath(json_path))
    log = RunLog(output_dir, run_id)
    records: dict[str, dict] = {}
    for part in [log.samples_path] + log.other_rank_parts():
        if os.path.exists(part):
            for r in read_samples(part):
                records.setdefault(r["sample_id"], r)
    return ResumeState(run_id, output_dir, doc, list(records.values()))
