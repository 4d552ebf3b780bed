"""Run logs: one JSON document per run (rewritten atomically) plus a JSONL of per-sample records that is
appended and flushed as each sample finishes, so a crash loses no finished sample."""
from __future__ import annotations

import datetime
import glob
import json
import os
import platform
import subprocess
import tempfile
import uuid

SCHEMA_VERSION = 2  # 2: sentence_bleu/corpus_bleu, perplexity, model.num_bytes, peak memory by source


def _write_atomic(path: str, text: str) -> None:
    """Write to a temporary file beside `path`, fsync, then rename: readers see the old or the new file."""
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(os.path.abspath(path)), prefix=".tmp_")
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def write_json_atomic(path: str, doc: dict) -> None:
    _write_atomic(path, json.dumps(doc, indent=1))


def git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=os.path.dirname(os.path.abspath(__file__)),
                             capture_output=True, text=True, timeout=5)
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def environment(device, world_size: int) -> dict:
    """Versions and hardware of this run (`device`: a torch.device)."""
    import torch  # here, not at the top: resume reads logs before torch is imported
    import transformers

    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "platform": platform.platform(),
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu",
        "torch_threads": torch.get_num_threads(),
        "world_size": world_size,
        "git_commit": git_commit(),
    }


def new_run_id() -> str:
    return f"{datetime.datetime.now():%Y%m%d_%H%M%S}_{uuid.uuid4().hex[:8]}"


class RunLog:
    """Paths of one run's files. Rank 0 owns the run JSON and the samples file; other ranks of a torchrun
    job append to their own part file, which rank 0 merges into the samples file at the end."""

    def __init__(self, output_dir: str, run_id: str, rank: int = 0) -> None:
        self.run_id = run_id
        self.path = os.path.join(output_dir, f"benchmark_{run_id}.json")
        self.samples_path = os.path.join(output_dir, f"benchmark_{run_id}_samples.jsonl")
        self.part_path = self.samples_path if rank == 0 else os.path.join(
            output_dir, f"benchmark_{run_id}_samples.rank{rank}.jsonl")
        self._samples = None

    def other_rank_parts(self) -> list[str]:
        """Existing part files of ranks >= 1 of this run (left behind by an interrupted torchrun job)."""
        pattern = os.path.join(os.path.dirname(self.samples_path), f"benchmark_{self.run_id}_samples.rank*.jsonl")
        return sorted(glob.glob(pattern))

    def write(self, doc: dict) -> None:
        write_json_atomic(self.path, doc)

    def append_sample(self, record: dict) -> None:
        if self._samples is None:
            self._samples = open(self.part_path, "a", encoding="utf-8")
        self._samples.write(json.dumps(record) + "\n")
        self._samples.flush()
        os.fsync(self._samples.fileno())

    def close(self) -> None:
        if self._samples is not None:
            self._samples.close()
            self._samples = None


def write_samples_atomic(path: str, records: list[dict]) -> None:
    _write_atomic(path, "".join(json.dumps(r) + "\n" for r in records))


def read_samples(path: str) -> list[dict]:
    """Per-sample records; a torn last line (a crash mid-write) is ignored."""
    records = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                break
    return records
