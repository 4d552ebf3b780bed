"""generate.py's plan, made before torch is imported: benchmark.py's flag checks, plus generate.py's own refusals
(benchmark-run flags it would ignore, prompts that cannot be tokenized)."""
from __future__ import annotations

from layerbench.errors import UsageError
from layerbench.evaluation import datasets
from layerbench.runs.arguments import Arguments
from layerbench.runs.flag_checks import check_flags
from layerbench.runs.plan import Plan
from layerbench.runs.ranks import DistInfo


# benchmark.py flags generate.py has no use for: it scores nothing, writes no log and captures no steps
NOT_USED = ("output_dir", "resume", "warmup", "execute_code", "execution_timeout", "bootstrap_resamples", "perplexity",
            "cuda_graphs", "lm_eval_tasks", "lm_eval_limit", "lm_eval_num_fewshot", "lm_eval_batch_size", "split",
            "num_samples", "random_shuffle", "n_shot", "template", "data_path", "prompt_field", "response_field")


def interactive_plan(args: Arguments) -> Plan:
    """A benchmark plan without samples: the same checks of the model, prune and generation flags."""
    unused = [name for name in NOT_USED if name in args.explicit]
    if unused:
        raise UsageError(f"--{unused[0]} is a benchmark.py flag that generate.py does not use (it scores no dataset "
                         f"and writes no log)")
    info = DistInfo()
    prune_config = check_flags(args, info)
    d = args.dataset
    spec = datasets.get_spec(d.dataset)
    options = datasets.DatasetOptions(data_path=d.data_path, prompt_field=d.prompt_field,
                                      response_field=d.response_field)
    return Plan(args=args, info=info, prune_config=prune_config, resumed=None, output_dir=args.benchmark.output_dir,
                options=options, split=spec.eval_split, samples=[], template=d.template or spec.template, shots="")


def checked_prompt(text: str, where: str) -> str:
    """A prompt that can be tokenized: not empty, and valid Unicode (binary input read with surrogateescape, or
    a lone surrogate in an argument, is not)."""
    if not text:
        raise UsageError(f"{where}: an empty prompt")
    problem = datasets.text_problem(text)
    if problem:
        raise UsageError(f"{where}: the prompt {problem}")
    return text
