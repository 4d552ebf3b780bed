"""The JSON training log, `--output_dir/training_log.json`, in the manner of the run logs: one document, rewritten
atomically (readers see the old or the new file), `complete: false` until the checkpoint is saved. It holds the
flags, the model, the data, the resolved recipe, the environment, one entry per `--log_every` steps (loss, each
active exit's cross-entropy, learning rate, tokens, seconds, fraction of layer-rows skipped) and, after a
`--resume`, the steps it resumed at (entries past the saved step are dropped: those steps run again)."""
from __future__ import annotations

import datetime
import json
import os

from layerbench.runs.run_log import write_json_atomic
from layerbench.training.checkpoint import LOG_FILE

SCHEMA_VERSION = 1


class TrainingLog:
    def __init__(self, output_dir: str, doc: dict) -> None:
        self.path = os.path.join(output_dir, LOG_FILE)
        self.doc = doc

    @classmethod
    def start(cls, output_dir: str, sections: dict) -> "TrainingLog":
        doc = {"kind": "layerbench training log", "schema_version": SCHEMA_VERSION, "complete": False,
               "started": datetime.datetime.now().isoformat(timespec="seconds"), **sections, "steps": [],
               "resumed_at_steps": []}
        return cls(output_dir, doc)

    @classmethod
    def resume(cls, output_dir: str, step: int, sections: dict) -> "TrainingLog":
        """The interrupted run's log, cut back to the saved step, with this process's sections."""
        path = os.path.join(output_dir, LOG_FILE)
        with open(path, encoding="utf-8") as f:
            doc = json.load(f)
        doc.update(sections, complete=False)
        doc["steps"] = [entry for entry in doc["steps"] if entry["step"] <= step]
        doc["resumed_at_steps"].append(step)
        return cls(output_dir, doc)

    def add(self, entry: dict) -> None:
        self.doc["steps"].append(entry)

    def finish(self, final: dict) -> None:
        self.doc.update(complete=True, final=final)

    def write(self) -> None:
        write_json_atomic(self.path, self.doc)
