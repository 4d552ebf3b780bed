"""Builds the data files of the local lm-eval tasks in this folder from the installed aclsum package (read as
layerbench.evaluation.datasets reads it). Deterministic: rerunning it rewrites the same files.

    python tasks/build_tasks.py
"""
from __future__ import annotations

import json
import os
import random

from layerbench.evaluation import datasets

HERE = os.path.dirname(os.path.abspath(__file__))
NUM_CHOICES = 4
SEED = 0


def write_jsonl(name: str, rows: list[dict]) -> None:
    with open(os.path.join(HERE, "data", name), "w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")


def multiple_choice(samples: list[datasets.Sample], rng: random.Random) -> list[dict]:
    """Each abstract with its own summary and NUM_CHOICES - 1 summaries of other abstracts of the same split,
    in a seeded order; `label` is the index of the right one."""
    rows = []
    for i, sample in enumerate(samples):
        others = rng.sample([s.reference for j, s in enumerate(samples) if j != i], NUM_CHOICES - 1)
        choices = others + [sample.reference]
        rng.shuffle(choices)
        rows.append({"id": sample.sample_id, "abstract": sample.input, "choices": choices,
                     "label": choices.index(sample.reference)})
    return rows


def main() -> None:
    options = datasets.DatasetOptions()
    splits = {split: datasets.load_split("aclsum_summarization", split, options)[1] for split in ("train", "test")}
    rng = random.Random(SEED)
    for split, samples in splits.items():
        write_jsonl(f"aclsum_mc_{split}.jsonl", multiple_choice(samples, rng))
        write_jsonl(f"aclsum_{split}.jsonl", [{"id": s.sample_id, "abstract": s.input, "summary": s.reference}
                                              for s in samples])


if __name__ == "__main__":
    main()
