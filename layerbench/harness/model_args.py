"""lm-eval model_args -> the benchmark's own flags, so the `layerbench` LM builds its model exactly as
benchmark.py does (the same Plan and prepare steps: load, prune, fit stand-ins and exit adapters, Engine)."""
from __future__ import annotations

import typing
from dataclasses import fields

from layerbench.errors import UsageError
from layerbench.flags import element_type
from layerbench.runs.arguments import BenchmarkArguments, GenerationArguments, PruneArguments
from layerbench.runs.ranks import DistInfo
from layerbench.runs.plan import make_plan
from layerbench.runs.prepare import Prepared, prepare

# benchmark flags that describe a benchmark run (its logs, timing, sample scoring), not the model
NOT_MODEL_ARGS = frozenset({"output_dir", "resume", "warmup", "execute_code", "execution_timeout",
                            "bootstrap_resamples", "perplexity", "cuda_graphs", "save_pruned_model", "max_steps",
                            "lm_eval_tasks", "lm_eval_limit", "lm_eval_num_fewshot", "lm_eval_batch_size"})
ALIASES = {"pretrained": "model"}  # lm-eval's hf model calls the checkpoint `pretrained`
MODEL_ARGS = tuple(f.name for group in (BenchmarkArguments, GenerationArguments, PruneArguments)
                   for f in fields(group) if f.name not in NOT_MODEL_ARGS)


def to_argv(model_args: dict) -> list[str]:
    """`{"prune_method": "angular", "prune_n": 6}` -> `["--prune_method", "angular", "--prune_n", "6"]`; list
    flags (protected_layers, hot_path, stop_words, ...) take values separated by spaces or semicolons."""
    argv: list[str] = []
    for key, value in model_args.items():
        name = ALIASES.get(key, key)
        if name not in MODEL_ARGS:
            raise UsageError(f"model_args {key!r} unknown; choose from {', '.join(MODEL_ARGS)}")
        if value is None:
            continue
        if isinstance(value, float) and value.is_integer() and _flag_type(name) is int:
            value = int(value)  # lm-eval's CLI reads `exit_layer=-1` as -1.0
        text = str(value)
        argv += [f"--{name}", *(text.replace(";", " ").split() if _is_list_flag(name) else [text])]
    return argv


def _flag_type(name: str) -> type:
    """The element type of a flag (int for `Optional[int]` and `list[int]`)."""
    group = next(g for g in (BenchmarkArguments, GenerationArguments, PruneArguments)
                 if name in {f.name for f in fields(g)})
    return element_type(typing.get_type_hints(group)[name])


def _is_list_flag(name: str) -> bool:
    group = next(g for g in (BenchmarkArguments, GenerationArguments, PruneArguments)
                 if name in {f.name for f in fields(g)})
    return "list" in str(next(f.type for f in fields(group) if f.name == name))


def build(model_args: dict) -> Prepared:
    """Plan and prepare a model from model_args, as `benchmark.py` with the same flags would (one sample of the
    default dataset is planned only because a plan needs samples; it is never generated; no log is written)."""
    argv = to_argv(model_args) + ["--num_samples", "1", "--cuda_graphs", "off", "--warmup", "False"]
    plan = make_plan(argv, DistInfo())
    return prepare(plan)
