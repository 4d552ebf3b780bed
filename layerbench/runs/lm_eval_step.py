"""The flags of the optional last step of a benchmark run (--lm_eval_tasks), checked while planning, before any
model is loaded, so a task that cannot be loaded costs no run. The step itself (the prepared model scored on
lm-evaluation-harness tasks) is `benchmark_run.score_on_lm_eval`."""
from __future__ import annotations

from layerbench.errors import UsageError
from layerbench.runs.arguments import BenchmarkArguments


def task_entries(b: BenchmarkArguments) -> list[str]:
    return [t.strip() for t in (b.lm_eval_tasks or "").split(",") if t.strip()]


def check(b: BenchmarkArguments) -> None:
    """The lm-eval flags, and every task loaded once (one line naming a task that cannot be)."""
    if b.lm_eval_tasks is None:
        for flag in ("lm_eval_limit", "lm_eval_num_fewshot"):
            if getattr(b, flag) is not None:
                raise UsageError(f"--{flag} only applies with --lm_eval_tasks")
        return
    if not task_entries(b):
        raise UsageError("--lm_eval_tasks: no task given")
    if b.lm_eval_limit is not None and b.lm_eval_limit < 1:
        raise UsageError(f"--lm_eval_limit must be >= 1, got {b.lm_eval_limit}")
    if b.lm_eval_num_fewshot is not None and b.lm_eval_num_fewshot < 0:
        raise UsageError(f"--lm_eval_num_fewshot must be >= 0, got {b.lm_eval_num_fewshot}")
    if b.lm_eval_batch_size < 1:
        raise UsageError(f"--lm_eval_batch_size must be >= 1, got {b.lm_eval_batch_size}")
    from layerbench.harness.tasks import load_tasks, resolve
    load_tasks(*resolve(task_entries(b)))
