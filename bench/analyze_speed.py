"""How fast analyze_logs.py aggregates many runs: writes N synthetic run logs (edited copies of a real-schema
log) into a temp dir, then times load + aggregate + render.

    .venv/bin/python bench/analyze_speed.py --runs 10000
"""
from __future__ import annotations

import json
import os
import random
import tempfile
import time

from layerbench.analysis.tables import TIMING_COLUMNS, aggregate, load_runs, render
from layerbench.errors import OneLineArgumentParser, positive_int, run_script

TEMPLATE = {
    "schema_version": 2, "complete": True, "run_id": "x",
    "args": {"generation_strategy": "autoregressive", "exit_layer": -1, "num_speculations": -1,
             "prune_method": "base"},
    "environment": {"python": "3.11", "torch": "2.13.0"},
    "model": {"name": "synthetic", "num_layers": 30, "num_layers_original": 30, "num_parameters": 134515008,
              "num_parameters_original": 134515008},
    "prune": {"method": "base", "removed_layers": [], "kept_layers": list(range(30)), "layer_calls": [1000] * 30},
    "dataset": {"name": "aclsum_summarization", "split": "test", "num_samples": 10,
                "sample_ids": [f"id{i}" for i in range(10)]},
    "metrics": {}, "samples_file": "x_samples.jsonl",
}


def main() -> None:
    ap = OneLineArgumentParser()
    ap.add_argument("--runs", type=positive_int, default=10000)
    a = ap.parse_args()
    rng = random.Random(0)
    with tempfile.TemporaryDirectory() as d:
        for i in range(a.runs):
            doc = json.loads(json.dumps(TEMPLATE))
            method = rng.choice(["base", "angular", "random"])
            doc["prune"]["method"] = doc["args"]["prune_method"] = method
            doc["args"]["prune_n"] = rng.choice([1, 2, 3])
            doc["args"]["dropout_threshold"] = rng.choice([0.1, 0.2])
            doc["dataset"]["name"] = rng.choice(["aclsum_summarization", "human_eval"])
            doc["metrics"] = {"rouge1": rng.random(), "rouge2": rng.random(), "rougeL": rng.random(),
                              "corpus_bleu": 100 * rng.random(), "exact_match": 0.0, "tokens_per_second": 10 + rng.random(),
                              "time_per_token": 0.1, "total_time": 30.0, "acceptance_rate": None}
            with open(os.path.join(d, f"benchmark_{i:05d}.json"), "w") as f:
                json.dump(doc, f)
        t0 = time.perf_counter()
        runs, skipped = load_runs([d], warn=lambda m: None)
        t1 = time.perf_counter()
        table = aggregate(runs)
        render(table, TIMING_COLUMNS, "github")
        t2 = time.perf_counter()
    print(f"{len(runs)} run logs ({skipped} skipped) -> {len(table)} configurations: "
          f"load {t1 - t0:.2f} s, aggregate+render {t2 - t1:.2f} s, total {t2 - t0:.2f} s")


if __name__ == "__main__":
    run_script(main)
