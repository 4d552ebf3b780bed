"""Every configuration on the offline lm-eval tasks (tasks/): the embedded model as it is, pruned, compressed,
gated and exiting early, each scored by lm-eval's own evaluator through the `layerbench` model, in one process.
One JSON under results/lm_eval/ holds each configuration's metrics with lm-eval's stderr, its parameters and
its wall time; bench/results_doc.py renders it with the change against the base model.

    .venv/bin/python bench/lm_eval_table.py [--limits aclsum_mc=50,aclsum_ppl=100,aclsum_summarize=10]
"""
from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from layerbench.errors import OneLineArgumentParser, UsageError, run_script  # noqa: E402
from runner import write_result  # noqa: E402
from doc_tables import Section, table  # noqa: E402

# name -> model_args (benchmark.py flags); the calibration is the benchmark's default (32 aclsum train texts)
CONFIGURATIONS = {
    "base": {},
    "angular n=3": {"prune_method": "angular", "prune_n": 3},
    "angular n=3 + stand-in": {"prune_method": "angular", "prune_n": 3, "stand_in": "linear"},
    "angular n=6": {"prune_method": "angular", "prune_n": 6},
    "angular n=6 + stand-in": {"prune_method": "angular", "prune_n": 6, "stand_in": "linear"},
    "random p=0.2": {"prune_method": "random", "dropout_threshold": 0.2, "protected_layers": "0;1"},
    "lowrank rho=0.5": {"prune_method": "lowrank", "compression_ratio": 0.5},
    "gated compute=0.6": {"prune_method": "gated", "skip_threshold": 0.0, "available_compute": 0.6},
    "early exit E=24 + adapter": {"exit_layer": 24, "exit_adapter": "linear"},
}
DEFAULT_LIMITS = "aclsum_mc=50,aclsum_ppl=100,aclsum_summarize=10"


def parse_limits(text: str) -> dict[str, int]:
    limits = {}
    for item in text.split(","):
        task, _, value = item.partition("=")
        if not value.isdigit() or int(value) < 1:
            raise UsageError(f"--limits: expected task=N with N >= 1, got {item!r}")
        limits[task] = int(value)
    return limits


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    ap = OneLineArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--limits", default=DEFAULT_LIMITS, help="documents per task (task=N,...)")
    ap.add_argument("--configurations", nargs="+", choices=list(CONFIGURATIONS), default=list(CONFIGURATIONS))
    ap.add_argument("--batch_size", type=int, default=16)
    ap.add_argument("--out", default=os.path.join("results", "lm_eval"))
    return ap.parse_args(argv)


def score(name: str, model_args: dict, limits: dict[str, int], batch_size: int) -> dict:
    from layerbench.harness.lm import LayerbenchLM
    from layerbench.harness.tasks import LOCAL_TASKS, evaluate
    start = time.perf_counter()
    lm = LayerbenchLM(batch_size=batch_size, device="cpu", **model_args)
    tasks = {}
    for task, limit in limits.items():
        tasks.update(evaluate(lm, [os.path.join(LOCAL_TASKS, f"{task}.yaml")], limit=limit))
    pruner = lm.prepared.pruner
    return {"name": name, "model_args": model_args, "tasks": tasks, "seconds": time.perf_counter() - start,
            "num_parameters": pruner.get_metrics()["num_parameters"], "prune": {
                k: pruner.report.get(k) for k in ("removed_layers", "num_layers_after", "num_bytes_after")}}


def main(argv: list[str] | None = None) -> int:
    a = parse(argv)
    limits = parse_limits(a.limits)
    import torch

    from layerbench.harness.tasks import quiet_metadata_hint
    quiet_metadata_hint()
    rows = [score(name, CONFIGURATIONS[name], limits, a.batch_size) for name in a.configurations]
    doc = {"command": "python bench/lm_eval_table.py " + " ".join(argv if argv is not None else sys.argv[1:]),
           "limits": limits, "rows": rows, "torch": torch.__version__, "cpu_count": os.cpu_count(),
           "model": "SmolLM2-135M-Instruct (embedded)"}
    write_result(a.out, "table", doc)
    return 0


def metric_cell(entry: dict, base: dict | None) -> str:
    value, stderr = entry["value"], entry.get("stderr")
    text = f"{value:.4g}" + (f" ± {stderr:.2g}" if stderr else "")
    if base is not None and base is not entry:
        text += f" ({value - base['value']:+.3g})"
    return text


def render(files: list[tuple[str, dict]]) -> str:
    out = []
    for path, doc in files:
        rows = doc["rows"]
        columns = [(task, metric) for task, entry in rows[0]["tasks"].items() for metric in entry["metrics"]]
        base = next((r for r in rows if r["name"] == "base"), None)
        body = [[r["name"], r["num_parameters"], r["prune"]["num_layers_after"],
                 *(metric_cell(r["tasks"][t]["metrics"][m], base["tasks"][t]["metrics"][m] if base else None)
                   for t, m in columns), f"{r['seconds']:.0f}"] for r in rows]
        limits = ", ".join(f"{t} {n}" for t, n in doc["limits"].items())
        out.append(f"`{os.path.basename(path)}` ({doc['model']}; documents per task: {limits}). Command: "
                   f"`{doc['command'].strip()}`\n\n"
                   + table(body, ["configuration", "parameters", "layers", *(f"{t} {m}" for t, m in columns),
                                  "seconds"], floatfmt=".4g"))
    return "\n\n".join(out)


SECTION = Section("Every configuration on the local lm-eval tasks (bench/lm_eval_table.py)", "lm_eval/table_*.json",
                  "python bench/lm_eval_table.py",
                  "lm-eval's own evaluator through the `layerbench` model, one process, on the offline tasks in tasks/ "
                  "(aclsum_mc: which of four summaries belongs to an abstract; aclsum_ppl: rolling perplexity of the "
                  "reference summaries; aclsum_summarize: greedy summaries scored by BLEU and chrF). Cells: value ± "
                  "lm-eval's stderr where lm-eval gives one (it gives none for perplexities and corpus BLEU/chrF), and "
                  "in brackets the change against the base model. Seconds are wall time including calibration, not a "
                  "speed comparison.", render, per_sample=True)


if __name__ == "__main__":
    run_script(main)
