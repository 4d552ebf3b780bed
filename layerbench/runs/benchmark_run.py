"""One benchmark run, step by step: plan (flags, data), prepare (model, pruning, engine), write the run JSON,
generate (timed), merge every rank's records and write the final document."""
from __future__ import annotations

import sys

from layerbench.errors import UsageError
from layerbench.runs import distributed, lm_eval_step
from layerbench.runs.document import finish, initial_document, peak_memory
from layerbench.runs.generate import run_samples
from layerbench.runs.plan import make_plan
from layerbench.runs.prepare import prepare
from layerbench.runs.run_log import RunLog, new_run_id, write_samples_atomic


def run(argv: list[str] | None, info: distributed.DistInfo) -> int:
    plan = make_plan(argv, info)
    if plan.args.benchmark.execute_code and info.is_main:
        print("warning: --execute_code runs model-written code on this machine (in a child process with a time "
              "limit, but without a sandbox)", file=sys.stderr)
    prepared = prepare(plan)
    resumed = plan.resumed
    run_id = resumed.run_id if resumed else distributed.broadcast(new_run_id() if info.is_main else None, info)
    log = RunLog(plan.output_dir, run_id, info.rank)
    done = {r["sample_id"]: r for r in (resumed.records if resumed else []) if r["sample_id"] in prepared.prompts}
    todo = [s for k, s in enumerate(plan.samples) if k % info.world_size == info.rank and s.sample_id not in done]
    doc = initial_document(plan, prepared, run_id, log)
    if info.is_main:
        if resumed:  # drop a torn last line left by a killed run, keep every finished sample
            write_samples_atomic(log.samples_path, list(done.values()))
        log.write(doc)

    records, status, wall = run_samples(plan, prepared, log, todo)
    pruner = prepared.pruner
    mine = {"records": records, "status": status, "layer_calls": pruner.layer_call_counts(),
            "run_metrics": pruner.get_metrics(), "peak_memory": peak_memory(prepared.engine.devices),
            "throughput": {"rank": info.rank, "samples": len(records),
                           "tokens": sum(r["num_tokens"] for r in records),
                           "generation_seconds": sum(r["total_time"] for r in records), "wall_seconds": wall}}
    parts = distributed.gather(mine, info)
    if not info.is_main:
        return 1 if status["error"] else (130 if status["interrupted"] else 0)
    if plan.args.benchmark.lm_eval_tasks and not any(p["status"]["error"] or p["status"]["interrupted"] for p in parts):
        doc["lm_eval"] = lm_eval_step.run(plan.args.benchmark, prepared)
    return finish(plan, log, doc, done, parts)


def main(argv: list[str] | None = None) -> int:
    info = distributed.from_environment()
    try:
        return run(argv, info)
    except UsageError as exc:  # includes model loading and unsupported-architecture errors
        if info.is_main:  # every rank validates the same flags; one line is enough
            print(f"error: {exc}", file=sys.stderr)
        return 2
    except SystemExit as exc:  # argparse has already printed its one line
        return exc.code if isinstance(exc.code, int) else 2
    finally:
        distributed.shutdown(info)
