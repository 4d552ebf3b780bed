"""Which lm-eval tasks to run and their results in the run JSON.

`--lm_eval_tasks` entries are task (or group) names, a folder of task YAMLs (added to lm-eval's include path;
every task its YAMLs define runs), or one YAML file. The repository's offline tasks (`tasks/`) are always on the
include path. Each task is loaded on its own, so a task whose data cannot be loaded (a hub task offline) fails
with one line naming it and the cause.
"""
from __future__ import annotations

import glob
import logging
import os

from layerbench.errors import UsageError

LOCAL_TASKS = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "tasks")


class _NoMetadataHint(logging.Filter):
    """Drops lm-eval's hint that a task with a `custom_dataset` takes --metadata: the local tasks' loader only
    resolves their data files against their folder, and the hint would break the one-line error contract."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "Custom kwargs can be passed to `--metadata`" not in record.getMessage()


def quiet_metadata_hint() -> None:
    task_logger = logging.getLogger("lm_eval.api.task")
    if not any(isinstance(f, _NoMetadataHint) for f in task_logger.filters):
        task_logger.addFilter(_NoMetadataHint())


def task_names(files: list[str]) -> list[str]:
    """The `task` each YAML file defines."""
    from lm_eval.tasks._yaml_loader import load_yaml
    return [load_yaml(f, resolve_func=False).get("task") for f in files]


def defined_tasks(paths: list[str]) -> set[str]:
    """Every task the YAML files in these folders define."""
    return set(task_names([f for path in paths for f in sorted(glob.glob(os.path.join(path, "*.yaml")))]))


def resolve(entries: list[str]) -> tuple[list[str], list[str]]:
    """(task names, include paths) for the given entries."""
    names, paths = [], [LOCAL_TASKS] if os.path.isdir(LOCAL_TASKS) else []
    for entry in entries:
        if os.path.isdir(entry):
            files = sorted(glob.glob(os.path.join(entry, "*.yaml")))
            if not files:
                raise UsageError(f"lm-eval task folder {entry}: no *.yaml task files")
            paths.append(os.path.abspath(entry))
            names += task_names(files)
        elif entry.endswith(".yaml"):
            if not os.path.isfile(entry):
                raise UsageError(f"lm-eval task file {entry}: no such file")
            paths.append(os.path.dirname(os.path.abspath(entry)))
            names += task_names([entry])
        else:
            names.append(entry)
    return [n for n in dict.fromkeys(names) if n], list(dict.fromkeys(paths))


def load_tasks(names: list[str], include_paths: list[str]):
    """(TaskManager, {name: task dict}) with every task loaded; a task that cannot be found or whose data cannot
    be read raises a UsageError naming it."""
    from lm_eval.tasks import TaskManager, get_task_dict
    quiet_metadata_hint()
    # lm-eval's own task index (thousands of YAMLs, seconds to build) only when a task is not in these folders
    local_only = set(names) <= defined_tasks(include_paths)
    manager = TaskManager(include_path=include_paths or None, include_defaults=not local_only)
    loaded = {}
    for name in names:
        try:
            loaded[name] = get_task_dict([name], manager)
        except KeyError:
            raise UsageError(f"lm-eval task {name!r}: not found (a registered task or group, a task folder, or a "
                             f"YAML file; local tasks are in {LOCAL_TASKS})") from None
        except Exception as exc:  # noqa: BLE001 - any data-loading failure (offline hub, missing files) is one line
            cause = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise UsageError(f"lm-eval task {name!r}: its data cannot be loaded ({cause})") from None
    return manager, loaded


def run_section(results: dict, limit: int | float | None) -> dict:
    """lm-eval's results -> the run JSON's `lm_eval` section: per task, its version, few-shot count, limit,
    samples scored and every metric with lm-eval's stderr."""
    section = {}
    for task, values in results["results"].items():
        metrics = {}
        for key, value in values.items():
            if "," not in key or "_stderr," in key:
                continue
            metric, filter_name = key.split(",", 1)
            name = metric if filter_name == "none" else f"{metric}[{filter_name}]"
            stderr = values.get(f"{metric}_stderr,{filter_name}")
            metrics[name] = {"value": value, "stderr": stderr if isinstance(stderr, (int, float)) else None}
        samples = results.get("n-samples", {}).get(task, {})
        section[task] = {"version": results.get("versions", {}).get(task),
                         "num_fewshot": results.get("n-shot", {}).get(task), "limit": limit,
                         "samples": samples.get("effective"), "metrics": metrics}
    return section


def evaluate(lm, entries: list[str], limit: int | None = None, num_fewshot: int | None = None,
             seed: int = 42) -> dict:
    """Run the tasks on an lm-eval LM with lm-eval's own evaluator; returns the run JSON's `lm_eval` section."""
    from lm_eval import simple_evaluate
    names, paths = resolve(entries)
    manager, _ = load_tasks(names, paths)  # every task checked (and named) before any is run
    results = simple_evaluate(model=lm, tasks=names,
                              num_fewshot=num_fewshot, limit=limit, task_manager=manager, log_samples=False,
                              random_seed=seed, numpy_random_seed=seed, torch_random_seed=seed,
                              fewshot_random_seed=seed)
    return run_section(results, limit)
