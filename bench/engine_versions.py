"""This checkout's engine against the engine of another commit, side by side in ONE process: the same model and
prompts, the same linear kernel, runs alternated, greedy outputs compared token for token.

The other commit's `layerbench` package is exported with `git archive` into a temporary folder and imported
under another name (`layerbench_<commit>`), so both versions live in one process and the machine's 10-20% drift
between processes does not enter the ratios. For refactors of the engine or the decoding loop:

    python -m bench engine_versions --before 7743c84 --samples 4 --max_tokens 64 --rounds 3
"""
from __future__ import annotations

import argparse
import dataclasses
import importlib
import os
import re
import subprocess
import sys
import tarfile
import tempfile
from types import ModuleType

from doc_tables import Section, render_ratio_tables
from layerbench.errors import OneLineArgumentParser, UsageError, positive_int, run_script
from layerbench.lazy import lazy
from runner import add_model_and_prompt_flags, load_prompts, run_alternating, write_result

torch = lazy("torch")

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
IMPORT_NAME = re.compile(r"(?<![\w/.])layerbench(?=\.)")  # `layerbench.x` in imports and lazy("layerbench.x")


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    ap = OneLineArgumentParser(description=__doc__.split("\n\n")[0])
    groups = add_model_and_prompt_flags(ap, samples=4, max_tokens=64, rounds=3)
    versions = ap.add_argument_group("versions")
    versions.add_argument("--before", default="HEAD", help="the commit compared against (default: HEAD, i.e. the "
                                                           "last commit against the working tree)")
    versions.add_argument("--linear_kernel", default="few_row_mm", choices=("few_row_mm", "torch"),
                          help="one fixed kernel for both versions, so a tuner's choice does not enter the ratio "
                               "(default: few_row_mm)")
    versions.add_argument("--exit_layer", type=positive_int, default=20, help="self-speculation's E (default: 20)")
    versions.add_argument("--num_speculations", type=positive_int, default=4, help="its d (default: 4)")
    groups["timing"].add_argument("--out", default=None, help="folder for versions_<timestamp>.json "
                                                             "(default: results/<cpu|gpu>)")
    a = ap.parse_args(argv)
    try:
        a.before_commit = subprocess.run(["git", "-C", REPO, "rev-parse", "--short", f"{a.before}^{{commit}}"],
                                         capture_output=True, text=True, check=True).stdout.strip()
    except (subprocess.CalledProcessError, FileNotFoundError):
        raise UsageError(f"--before {a.before!r} is not a commit of {REPO}") from None
    return a


def import_commit(commit: str, folder: str) -> ModuleType:
    """The `layerbench` package of `commit`, imported as `layerbench_<commit>` from `folder`."""
    name = f"layerbench_{commit}"
    archive = os.path.join(folder, "package.tar")
    subprocess.run(["git", "-C", REPO, "archive", "-o", archive, commit, "layerbench"], check=True)
    with tarfile.open(archive) as tar:
        tar.extractall(folder, filter="data")
    os.rename(os.path.join(folder, "layerbench"), os.path.join(folder, name))
    for root, _, files in os.walk(os.path.join(folder, name)):
        for file in (f for f in files if f.endswith(".py")):
            path = os.path.join(root, file)
            with open(path, encoding="utf-8") as f:
                text = IMPORT_NAME.sub(name, f.read())
            with open(path, "w", encoding="utf-8") as f:
                f.write(text)
    sys.path.insert(0, folder)
    return importlib.import_module(name)


def version_runner(package: str, model, strategy: str, config: dict, kernel: str):
    """Greedy generation with one version's engine, strategy registry, config and sampling classes."""
    engine_module = importlib.import_module(f"{package}.engine.engine")
    decoding = importlib.import_module(f"{package}.decoding")
    sampling = importlib.import_module(f"{package}.decoding.sampling")
    engine = engine_module.Engine(model, engine_module.EngineOptions(linear_kernel=kernel))
    if "exit_block" not in {f.name for f in dataclasses.fields(decoding.GenerationConfig)}:  # its older name
        config = {("exit_layer" if k == "exit_block" else k): v for k, v in config.items()}
    generation = decoding.GenerationConfig(**config)

    def run(prompt):
        res = decoding.STRATEGIES[strategy].generate(engine, torch.tensor([prompt]), generation,
                                                     sampling.TokenChooser(sampling.SamplingConfig()),
                                                     sampling.StopCondition())
        return res.token_ids, res.total_time, res
    return run


def build_runners(before: str, model, a: argparse.Namespace) -> dict:
    configs = {"autoregressive": ("autoregressive", {"max_steps": a.max_tokens}),
               "early_exit": ("autoregressive", {"max_steps": a.max_tokens, "exit_block": a.exit_layer}),
               "self_speculative": ("self_speculative", {"max_steps": a.max_tokens, "exit_block": a.exit_layer,
                                                         "num_speculations": a.num_speculations})}
    runners = {}
    for label, (strategy, config) in configs.items():
        for version, package in (("before", before), ("after", "layerbench")):
            runners[f"{version}_{label}"] = version_runner(package, model, strategy, config, a.linear_kernel)
    return runners


def summarize(stats: dict, outputs: dict) -> tuple[dict, dict, dict]:
    tps = {n: s.tokens_per_second for n, s in stats.items()}
    labels = [n.removeprefix("after_") for n in stats if n.startswith("after_")]
    ratios = {}
    for label in labels:
        ratios[f"after / before: {label} (tokens/s)"] = tps[f"after_{label}"] / tps[f"before_{label}"]
        ratios[f"after / before: {label} (decode time per token, before / after)"] = (
            stats[f"before_{label}"].decode_time_per_token / stats[f"after_{label}"].decode_time_per_token)
    checks = {f"{label}: after == before": outputs[f"after_{label}"] == outputs[f"before_{label}"]
              for label in labels}
    return tps, ratios, checks


def main(argv: list[str] | None = None) -> None:
    a = parse(argv)
    from tabulate import tabulate
    from layerbench.models.loading import load_model
    loaded = load_model(a.model, a.dtype, a.device)
    a.calibration_samples = 1
    prompts, _ = load_prompts(a, loaded.tokenizer)
    with tempfile.TemporaryDirectory() as folder:
        before = import_commit(a.before_commit, folder).__name__
        runners = build_runners(before, loaded.model, a)
        stats, outputs = run_alternating(runners, prompts, a.rounds)
    tps, ratios, checks = summarize(stats, outputs)
    print(tabulate([[n, f"{v:.2f}"] for n, v in tps.items()], ["run", "tokens/s"], tablefmt="github"))
    print(tabulate([[n, f"{v:.3f}"] for n, v in ratios.items()], ["ratio", "value"], tablefmt="github"))
    print(tabulate(list(checks.items()), ["check", "ok"], tablefmt="github"))
    device = next(loaded.model.parameters()).device
    out = a.out or os.path.join(REPO, "results", "gpu" if device.type == "cuda" else "cpu")
    after = subprocess.run(["git", "-C", REPO, "describe", "--always", "--dirty"], capture_output=True,
                           text=True).stdout.strip()
    write_result(out, "versions", {"args": vars(a), "before": a.before_commit, "after": after,
                                   "tokens_per_second": tps, "ratios": ratios, "checks": checks}, device)


def render(files: list[tuple[str, dict]]) -> str:
    return render_ratio_tables(files, lambda d: f"before = commit {d.get('before')}, after = {d.get('after')} "
                                                f"(-dirty: the working tree before it was committed)")


SECTION = Section("Engine versions side by side (bench/engine_versions.py)", "cpu/versions_*.json",
                  "python -m bench engine_versions --before <commit> --samples 4 --max_tokens 64 --rounds 3",
                  "Both versions run in one process on the same model, prompts and linear kernel, alternated; the "
                  "checks compare their greedy outputs token for token.", render)


if __name__ == "__main__":
    run_script(main)
