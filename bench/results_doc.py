"""Writes docs/RESULTS.md from the result files committed under results/: every table in it is rendered from a
JSON file (named under the table) by this script, never typed by hand.

    python bench/results_doc.py [--results results] [--out docs/RESULTS.md]

Each section is a registered renderer over the files matching its pattern; a section whose files are missing is
left out with a line saying so.
"""
from __future__ import annotations

import glob
import json
import os

import compare_predictions
import draft_confidence
import engine_versions
import exactness
import profile_step
import fit_choices
import linear_kernels
import lm_eval_speed
import lm_eval_table
import speed
import sweep_exit
import train_early_exit
from doc_tables import Section, environment_line, render_ratio_tables, table
from layerbench.errors import OneLineArgumentParser, run_script


INTERVAL_METRICS = ["rougeL", "corpus_bleu", "perplexity", "tokens_per_second", "decode_tokens_per_second"]


def run_intervals(path: str, doc: dict) -> dict | None:
    """The run's `uncertainty` metrics: from the run JSON, else computed from its samples file (runs written
    before the section existed); None without per-sample values."""
    from layerbench.analysis.paired import read_records, samples_path
    from layerbench.analysis.uncertainty import BootstrapConfig
    from layerbench.runs.summary import uncertainty
    if "uncertainty" in doc:
        return doc["uncertainty"]["metrics"]
    samples = samples_path(path, doc)
    if samples is None:
        return None
    return uncertainty(read_records(samples), doc["metrics"], BootstrapConfig(seed=doc["args"].get("seed", 0)))["metrics"]


def interval_cell(e: dict | None) -> str:
    if e is None or e["value"] is None:
        return ""
    low, high = e["ci95"]
    return f"{e['value']:.4g}" + ("" if low is None else f" [{low:.3g}, {high:.3g}]")


def render_run_intervals(files: list[tuple[str, dict]]) -> str:
    """One row per run: its main metrics with their 95% bootstrap intervals over samples."""
    from layerbench.analysis.tables import run_row
    rows = []
    for path, doc in files:
        r, intervals = run_row(doc), run_intervals(path, doc)
        label = [r["strategy"], r["approach"], r["param"], r["samples"]]
        if intervals is None:
            rows.append(label + ["no per-sample values in this result"] + [""] * (len(INTERVAL_METRICS) - 1))
        else:
            rows.append(label + [interval_cell(intervals.get(m)) for m in INTERVAL_METRICS])
    rows.sort(key=lambda row: [str(x) for x in row[:3]])
    return table(rows, ["strategy", "approach", "param", "samples", *INTERVAL_METRICS])


def render_sweep(files: list[tuple[str, dict]]) -> str:
    from layerbench.analysis.paired import legend
    from layerbench.analysis.tables import METRICS_DISPLAY, TIMING_COLUMNS, aggregate, load_runs, render
    from layerbench.analysis.uncertainty import BootstrapConfig
    runs, _ = load_runs([os.path.dirname(files[0][0])], warn=lambda m: None)
    bootstrap = BootstrapConfig()
    summary = aggregate(runs, bootstrap)
    return (render(summary, METRICS_DISPLAY, "github") + "\n\n" + render(summary, TIMING_COLUMNS, "github")
            + "\n\n" + legend(bootstrap) + "\n\nEach run's values with their 95% intervals over samples (percentile "
            "bootstrap, 1000 resamples, seeded by the run's --seed):\n\n" + render_run_intervals(files))


SECTIONS = [
    speed.SECTION,
    Section("Previous loop against the own-forward engine (bench/old_engine_vs_new.py, since removed)",
            "cpu/old_engine_vs_new_*.json",
            "python bench/old_engine_vs_new.py --old_checkout DIR  (DIR: a checkout of commit 827625c with its venv; "
            "the script ran only against that commit and its transformers version, which the lock no longer has, "
            "so it was removed: `git checkout 35faa24 -- bench/old_engine_vs_new.py bench/old_engine_runs.py` "
            "restores it)",
            "The loop that called HF decoder layers (commit 827625c) and this engine, in one process. The file "
            "is kept as it was measured.",
            render_ratio_tables),
    engine_versions.SECTION,
    exactness.SECTION,
    profile_step.SECTION,
    linear_kernels.SECTION,
    draft_confidence.SECTION,
    fit_choices.SECTION,
    compare_predictions.SECTION,
    Section("Pruning sweep on the embedded model (run_tests_base, run_tests)", "sweep/*.json",
            "OUTPUT_DIR=results/sweep NUM_SAMPLES=10 MAX_STEPS=64 ./run_tests_base && "
            "OUTPUT_DIR=results/sweep NUM_SAMPLES=10 MAX_STEPS=64 ./run_tests",
            "Tables as `python analyze_logs.py results/sweep` prints them. Runs are separate processes: their "
            "speed columns carry this machine's 10-20% noise, which the intervals (sampling noise over the 10 "
            "samples) do not include; bench/speed.py gives side-by-side ratios.",
            render_sweep, per_sample=True),
    sweep_exit.SECTION,
    lm_eval_table.SECTION,
    lm_eval_speed.SECTION,
    train_early_exit.SECTION,
]


def write_section(section: Section, results: str) -> str:
    paths = sorted(glob.glob(os.path.join(results, section.pattern)))
    head = f"## {section.title}\n\n{section.about}\n\nCommand: `{section.command}`\n\n"
    if not paths:
        return head + f"No files match `results/{section.pattern}` yet.\n"
    files = []
    for p in paths:
        with open(p) as f:
            files.append((p, json.load(f)))
    envs = sorted({environment_line(d) for _, d in files if "environment" in d})
    if len(files) > 6:
        source = f"- {len(files)} files in `{os.path.relpath(os.path.dirname(paths[0]))}/`"
    else:
        source = "\n".join(f"- `{os.path.relpath(p)}`" for p, _ in files)
    no_intervals = ("" if section.per_sample else "These files hold aggregates only, no per-sample values, so "
                    "their numbers carry no intervals.\n\n")
    return head + section.render(files) + "\n\n" + no_intervals + ("Environment: " + "; ".join(envs) + "\n\n" if envs else "") \
        + "Files:\n" + source + "\n"


def main() -> None:
    ap = OneLineArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--results", default="results")
    ap.add_argument("--out", default=os.path.join("docs", "RESULTS.md"))
    a = ap.parse_args()
    intro = ("# Measured results\n\nGenerated by `python bench/results_doc.py` from the JSON files under "
             "`results/`; rerun it after adding a file. Each section names the command that wrote its files. "
             "Machine: the 2-core CPU this project is developed on, unless a file's environment says otherwise.\n")
    text = intro + "\n" + "\n".join(write_section(s, a.results) for s in SECTIONS)
    with open(a.out, "w") as f:
        f.write(text)
    print(f"wrote {a.out}")


if __name__ == "__main__":
    run_script(main)
