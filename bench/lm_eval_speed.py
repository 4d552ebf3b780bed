"""lm-eval rolling perplexity over the 100 aclsum test references (the local task `aclsum_ppl`): this project's
`layerbench` model against lm-eval's own `hf` model on the same checkpoint, in ONE process, runs alternated after
a warm-up, so the ratio is measured side by side. Both must give the same perplexity (checked).

    .venv/bin/python bench/lm_eval_speed.py [--rounds 2] [--batch_size 16] [--limit 100]
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from layerbench.errors import OneLineArgumentParser, positive_int, run_script  # noqa: E402
from runner import write_result  # noqa: E402
from doc_tables import Section, table  # noqa: E402

TASK = "aclsum_ppl"


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    ap = OneLineArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=positive_int, default=2, help="timed runs of each model, alternated")
    ap.add_argument("--batch_size", type=positive_int, default=16, help="lm-eval batch_size of both models")
    ap.add_argument("--limit", type=positive_int, default=100, help="documents (the task has 100)")
    ap.add_argument("--out", default=os.path.join("results", "lm_eval"))
    return ap.parse_args(argv)


def timed(lm, limit: int, manager) -> tuple[float, dict]:
    from lm_eval import simple_evaluate
    start = time.perf_counter()
    out = simple_evaluate(model=lm, tasks=[TASK], limit=limit, task_manager=manager, log_samples=False)
    seconds = time.perf_counter() - start
    return seconds, {k: v for k, v in out["results"][TASK].items() if "," in k and "stderr" not in k}


def main(argv: list[str] | None = None) -> int:
    a = parse(argv)
    import torch
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    from layerbench.harness.lm import LayerbenchLM
    from layerbench.harness.tasks import LOCAL_TASKS, quiet_metadata_hint
    from layerbench.models.loading import embedded_model_source
    quiet_metadata_hint()
    manager = TaskManager(include_path=LOCAL_TASKS, include_defaults=False)
    models = {"hf": HFLM(pretrained=embedded_model_source()[0], dtype="float32", device="cpu",
                         batch_size=a.batch_size),
              "layerbench": LayerbenchLM(dtype="float32", device="cpu", batch_size=a.batch_size)}
    for lm in models.values():  # warm-up: one document each
        timed(lm, 1, manager)
    seconds = {name: [] for name in models}
    metrics = {}
    for _ in range(a.rounds):
        for name, lm in models.items():
            spent, metrics[name] = timed(lm, a.limit, manager)
            seconds[name].append(spent)
    best = {name: min(values) for name, values in seconds.items()}
    doc = {"args": vars(a), "task": TASK, "documents": a.limit, "seconds": seconds, "best_seconds": best,
           "ratio_layerbench_over_hf": best["layerbench"] / best["hf"], "metrics": metrics,
           "same_perplexity": all(abs(metrics["layerbench"][k] - v) <= 1e-4 * abs(v) for k, v in metrics["hf"].items()),
           "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(), "torch": torch.__version__}
    print(json.dumps({k: doc[k] for k in ("best_seconds", "ratio_layerbench_over_hf", "same_perplexity")}))
    write_result(a.out, "speed", doc)
    return 0


def render(files: list[tuple[str, dict]]) -> str:
    body = [[os.path.basename(p), d["documents"], d["args"]["batch_size"], f"{d['best_seconds']['hf']:.1f}",
             f"{d['best_seconds']['layerbench']:.1f}", f"{d['ratio_layerbench_over_hf']:.3f}", d["same_perplexity"],
             " ".join(f"{x:.1f}" for x in d["load_average_1_5_15"])] for p, d in files]
    return table(body, ["file", "documents", "batch size", "hf s (best)", "layerbench s (best)",
                        "layerbench / hf", "same perplexity", "load average"])


SECTION = Section("lm-eval rolling perplexity: layerbench vs lm-eval's hf model (bench/lm_eval_speed.py)",
                  "lm_eval/speed_*.json", "python bench/lm_eval_speed.py --rounds 3",
                  "aclsum_ppl over the 100 aclsum test references, both models in one process, runs alternated after a "
                  "warm-up; the best of the rounds. The first file ran while other jobs loaded the machine (load "
                  "average above 3); the second ran on an idle machine before the scorer batched lone requests into "
                  "padded passes, the third after.", render)


if __name__ == "__main__":
    run_script(main)
