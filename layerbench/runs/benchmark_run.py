"""One benchmark run, step by step after the plan (flags, data; `layerbench.runs.cli`): prepare (model, pruning,
engine), create the output folder and write the run JSON, generate (timed), merge every rank's records and write
the final document."""
from __future__ import annotations

import sys

from layerbench.errors import UsageError
from layerbench.evaluation.sandbox import isolation_in_force, summary
from layerbench.runs import distributed
from layerbench.runs.arguments import BenchmarkArguments
from layerbench.runs.device_checks import check_devices
from layerbench.runs.document import finish, initial_document, peak_memory
from layerbench.runs.folders import create_folder
from layerbench.runs.generate import run_samples
from layerbench.runs.lm_eval_step import task_entries
from layerbench.runs.plan import Plan
from layerbench.runs.prepare import Prepared, prepare
from layerbench.runs.run_lock import acquire
from layerbench.runs.run_log import RunLog, new_run_id, write_samples_atomic


def run(plan: Plan) -> int:
    info = plan.info
    check_devices(plan.args.benchmark)
    b = plan.args.benchmark
    sandbox = sandbox_in_force(b.execution_timeout) if b.execute_code and info.is_main else None
    prepared = prepare(plan)
    create_folder(plan.output_dir, "--output_dir")  # only now: a refused run leaves no folder behind
    resumed = plan.resumed
    run_id = resumed.run_id if resumed else distributed.broadcast(new_run_id() if info.is_main else None, info)
    lock = plan.lock or (acquire(plan.output_dir, run_id, "--output_dir") if info.is_main else None)
    try:
        return run_locked(plan, prepared, run_id, sandbox)
    finally:
        if lock is not None:
            lock.release()


def run_locked(plan: Plan, prepared: Prepared, run_id: str, sandbox: dict | None) -> int:
    """The run once it owns its files: the initial document, generation, and the final document."""
    info, resumed = plan.info, plan.resumed
    log = RunLog(plan.output_dir, run_id, info.rank)
    done = {r["sample_id"]: r for r in (resumed.records if resumed else []) if r["sample_id"] in prepared.prompts}
    todo = [s for k, s in enumerate(plan.samples) if k % info.world_size == info.rank and s.sample_id not in done]
    doc = initial_document(plan, prepared, run_id, log)
    if sandbox is not None:
        doc["code_execution"] = {"sandbox": sandbox}
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
        doc["lm_eval"] = score_on_lm_eval(plan.args.benchmark, prepared)
    return finish(plan, log, doc, done, parts)


def sandbox_in_force(timeout: float) -> dict:
    """--execute_code: what isolation the code sandbox gives on this machine (one stderr line; a warning where a
    part of it is missing), for the run JSON's `code_execution.sandbox`."""
    try:
        isolation = isolation_in_force(timeout)
    except RuntimeError as exc:
        raise UsageError(f"--execute_code: {exc}") from exc
    if isolation["own_network"] and isolation["read_only"] and isolation["counted"]:
        print(f"--execute_code: model-written code runs sandboxed ({summary(isolation)})", file=sys.stderr)
    else:
        print(f"warning: --execute_code: the sandbox is weaker on this machine ({summary(isolation)}); run the "
              f"benchmark in a container without network for more", file=sys.stderr)
    return isolation


def score_on_lm_eval(b: BenchmarkArguments, prepared: Prepared) -> dict:
    """The run JSON's `lm_eval` section: the prepared model, as generation used it, scored on
    lm-evaluation-harness tasks (rank 0 only; layer-call counting paused)."""
    from layerbench.harness.lm import LayerbenchLM
    from layerbench.harness.tasks import evaluate
    lm = LayerbenchLM(batch_size=b.lm_eval_batch_size, prepared=prepared, seed=b.seed)
    with prepared.pruner.counting_paused():
        return evaluate(lm, task_entries(b), b.lm_eval_limit, b.lm_eval_num_fewshot, b.seed)
