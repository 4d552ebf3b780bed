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
from dataclasses import dataclass
from typing import Callable

from tabulate import tabulate

from layerbench.errors import OneLineArgumentParser, run_script
from result_columns import ADAPTER_COLUMNS, DRAFT_CONFIDENCE_COLUMNS, STAND_IN_COLUMNS


@dataclass
class Section:
    title: str
    pattern: str  # glob under the results directory
    command: str
    about: str
    render: Callable[[list[tuple[str, dict]]], str]
    per_sample: bool = False  # the files hold per-sample values, so the tables carry 95% intervals


def table(rows: list, headers: list[str], floatfmt: str = ".3f") -> str:
    return tabulate(rows, headers, tablefmt="github", floatfmt=floatfmt)


def environment_line(doc: dict) -> str:
    env = doc.get("environment", {})
    return (f"{env.get('device_name', '?')}, torch {env.get('torch', '?')}, "
            f"transformers {env.get('transformers', '?')},"
            f" {env.get('torch_threads', '?')} threads, commit {str(env.get('git_commit', '?'))[:7]}")


def side_by_side(files: list[tuple[str, dict]], key: str, fmt: str) -> str:
    """One row per key of doc[key], one column per file."""
    names = list(dict.fromkeys(k for _, d in files for k in d.get(key, {})))
    rows = [[n, *(fmt.format(d[key][n]) if n in d.get(key, {}) else "" for _, d in files)] for n in names]
    return table(rows, [key, *(os.path.basename(p) for p, _ in files)])


def render_ratio_tables(files: list[tuple[str, dict]]) -> str:
    return "\n\n".join([side_by_side(files, "tokens_per_second", "{:.2f}"), side_by_side(files, "ratios", "{:.3f}"),
                        side_by_side(files, "checks", "{}")])


def render_speed(files: list[tuple[str, dict]]) -> str:
    kernels = [f"{os.path.basename(p)}: linear kernel {d.get('linear_kernel')}" for p, d in files]
    return render_ratio_tables(files) + "\n\n" + "\n".join(f"- {k}" for k in kernels)


def render_kernels(files: list[tuple[str, dict]]) -> str:
    out = []
    for path, doc in files:
        out.append(f"`{os.path.basename(path)}` (tuned kernel picks the few-row product at rows "
                   f"{doc.get('tuned_few_row_mm_rows')}):\n\n" + table(doc["rows"], doc["columns"], ".2f"))
    return "\n\n".join(out)


def render_draft_confidence(files: list[tuple[str, dict]]) -> str:
    return "\n\n".join(f"`{os.path.basename(p)}`, exit adapter fit: relative error "
                       f"{d['exit_adapter']['relative_error_before']:.3f} -> "
                       f"{d['exit_adapter']['relative_error_after']:.3f} in {d['exit_adapter']['fit_seconds']:.1f} s:"
                       f"\n\n" + table(d["rows"], DRAFT_CONFIDENCE_COLUMNS) for p, d in files)


def render_fit_choices(files: list[tuple[str, dict]]) -> str:
    return "\n\n".join(f"`{os.path.basename(p)}`, angular n={d['args']['prune_n']} removes "
                       f"{d['context']['removed_layers']}:\n\n" + table(d["stand_in"], STAND_IN_COLUMNS) + "\n\n"
                       + table(d["exit_adapter"], ADAPTER_COLUMNS) for p, d in files)


def render_equivalence(files: list[tuple[str, dict]]) -> str:
    out = []
    for path, doc in files:
        rows = [[name, " ".join(r["flags"]) or "(base)", f"{r['identical_predictions']}/{r['samples']}",
                 r.get("removed_layers", [[]])[0], r.get("acceptance_rate", [None])[0]]
                for name, r in doc["runs"].items()]
        out.append(f"`{os.path.basename(path)}`: {doc['what']}\n\n"
                   + table(rows, ["run", "flags", "identical predictions", "removed layers", "acceptance"]))
    return "\n\n".join(out)


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


def grid_table(rows: list[dict], value: str) -> str:
    """`value` over the sweep's grid: one row per (draft confidence, d), one column per exit layer E."""
    layers = sorted({r["exit_layer"] for r in rows})
    keys = sorted({(r["draft_confidence"] or 0.0, r["num_speculations"]) for r in rows})
    cells = {(r["draft_confidence"] or 0.0, r["num_speculations"], r["exit_layer"]): r[value] for r in rows}
    body = [[c or "off", d, *(cells.get((c, d, E)) for E in layers)] for c, d in keys]
    return table(body, ["draft confidence", "d \\ E", *(str(E) for E in layers)])


def render_exit_sweep(files: list[tuple[str, dict]]) -> str:
    out = []
    for path, doc in files:
        a, best = doc["args"], doc["best"]
        equal = sum(r["greedy_equal_to_autoregressive"] for r in doc["rows"])
        conf = f" c={best['draft_confidence']}" if best["draft_confidence"] is not None else ""
        pngs = " ".join(f"[{k[:-4]}](../{os.path.relpath(os.path.join(os.path.dirname(path), doc['files'][k]))})"
                        for k in ("speedup_png", "acceptance_png"))
        out.append(
            f"`{os.path.basename(path)}`: exit adapter {a['exit_adapter']}, {doc['model']} ({doc['num_layers']} "
            f"layers), {doc['prompts']} prompt(s) x {a['max_tokens']} tokens, {a['rounds']} timed round(s); "
            f"autoregressive {doc['autoregressive_tokens_per_second']:.2f} tok/s. Command: `{doc['command']}`\n\n"
            f"Speed-up against autoregressive decoding:\n\n{grid_table(doc['rows'], 'speedup')}\n\n"
            f"Acceptance:\n\n{grid_table(doc['rows'], 'acceptance')}\n\n"
            f"Best cell: E={best['exit_layer']} d={best['num_speculations']}{conf}, speed-up {best['speedup']:.3f}, "
            f"acceptance {best['acceptance']:.3f}. Greedy outputs equal to autoregressive in {equal}/"
            f"{len(doc['rows'])} cells. Contour plots: {pngs}")
    return "\n\n".join(out)


def metric_cell(entry: dict, base: dict | None) -> str:
    value, stderr = entry["value"], entry.get("stderr")
    text = f"{value:.4g}" + (f" ± {stderr:.2g}" if stderr else "")
    if base is not None and base is not entry:
        text += f" ({value - base['value']:+.3g})"
    return text


def render_lm_eval_table(files: list[tuple[str, dict]]) -> str:
    out = []
    for path, doc in files:
        rows = doc["rows"]
        columns = [(task, metric) for task, entry in rows[0]["tasks"].items() for metric in entry["metrics"]]
        base = next((r for r in rows if r["name"] == "base"), None)
        body = [[r["name"], r["num_parameters"], r["prune"]["num_layers_after"],
                 *(metric_cell(r["tasks"][t]["metrics"][m], base["tasks"][t]["metrics"][m] if base else None)
                   for t, m in columns), f"{r['seconds']:.0f}"] for r in rows]
        limits = ", ".join(f"{t} {n}" for t, n in doc["limits"].items())
        out.append(f"`{os.path.basename(path)}` ({doc['model']}; documents per task: {limits}). Command: "
                   f"`{doc['command'].strip()}`\n\n"
                   + table(body, ["configuration", "parameters", "layers", *(f"{t} {m}" for t, m in columns),
                                  "seconds"], floatfmt=".4g"))
    return "\n\n".join(out)


def render_lm_eval_speed(files: list[tuple[str, dict]]) -> str:
    body = [[os.path.basename(p), d["documents"], d["args"]["batch_size"], f"{d['best_seconds']['hf']:.1f}",
             f"{d['best_seconds']['layerbench']:.1f}", f"{d['ratio_layerbench_over_hf']:.3f}", d["same_perplexity"],
             " ".join(f"{x:.1f}" for x in d["load_average_1_5_15"])] for p, d in files]
    return table(body, ["file", "documents", "batch size", "hf s (best)", "layerbench s (best)",
                        "layerbench / hf", "same perplexity", "load average"])


SECTIONS = [
    Section("Speed on CPU (bench/speed.py)", "cpu/speed_*.json",
            "python bench/speed.py --samples 2 --max_tokens 40 --exit_layer 20 --num_speculations 4 --prune_n 6",
            "Every run alternates over the same prompts in one process; each column is one process. Ratios of "
            "different processes are not comparable beyond the 10-20% noise of this machine.", render_speed),
    Section("Previous loop against the own-forward engine (bench/old_engine_vs_new.py, since removed)",
            "cpu/old_engine_vs_new_*.json",
            "python bench/old_engine_vs_new.py --old_checkout DIR  (DIR: a checkout of commit 827625c with its venv; "
            "the script ran only against that commit and its transformers version, which the lock no longer has, "
            "so it was removed: `git checkout 35faa24 -- bench/old_engine_vs_new.py bench/old_engine_runs.py` "
            "restores it)",
            "The loop that called HF decoder layers (commit 827625c) and this engine, in one process. The file "
            "is kept as it was measured.",
            render_ratio_tables),
    Section("Linear kernels for few-row products (bench/linear_kernels.py)", "cpu/linear_kernels_*.json",
            "python bench/linear_kernels.py --rows 1 2 3 4 5 8 16 17",
            "Milliseconds per step over all decoder layers and over the LM head; the last two columns time the "
            "q/k/v and gate/up products as one fused matrix against separate ones.", render_kernels),
    Section("Adaptive draft length and draft vocabulary (bench/draft_confidence.py)",
            "cpu/draft_confidence_*.json",
            "python bench/draft_confidence.py  (the second file: --confidences 0.5 0.6 0.7 --vocabularies 0 2048 8192)",
            "Self-speculative decoding at E=20, d=4 with a fitted exit adapter, against autoregressive decoding in "
            "the same process.", render_draft_confidence),
    Section("Fitting choices for stand-ins and exit adapters (bench/fit_choices.py)", "quality/fit_choices_*.json",
            "python bench/fit_choices.py --prune_n 6 --exit_layers 20 24",
            "Calibration on 32 aclsum train texts, evaluation on 20 test samples (test perplexity of the reference "
            "given the chat prompt). The first file predates the position-0 constant update: its `skip_first=True` "
            "rows leave position 0 out of the map without giving it an update of its own.", render_fit_choices),
    Section("Greedy outputs before and after the own forward", "equivalence/*.json",
            "python benchmark.py --num_samples 3 --max_steps 48 --seed 7 <flags>, once per checkout",
            "Predictions of the loop that called HF decoder layers against this engine's.", render_equivalence),
    Section("Pruning sweep on the embedded model (run_tests_base, run_tests)", "sweep/*.json",
            "OUTPUT_DIR=results/sweep NUM_SAMPLES=10 MAX_STEPS=64 ./run_tests_base && "
            "OUTPUT_DIR=results/sweep NUM_SAMPLES=10 MAX_STEPS=64 ./run_tests",
            "Tables as `python analyze_logs.py results/sweep` prints them. Runs are separate processes: their "
            "speed columns carry this machine's 10-20% noise, which the intervals (sampling noise over the 10 "
            "samples) do not include; bench/speed.py gives side-by-side ratios.",
            render_sweep, per_sample=True),
    Section("Exit layer x speculations (bench/sweep_exit.py)", "sweep_exit/*.json",
            "python bench/sweep_exit.py --exit_layers 6 12 18 24 --speculations 2 4 6 --samples 2 --max_tokens 24 "
            "--rounds 2 --calibration_samples 8 [--exit_adapter linear]",
            "LayerSkip's sweep: self-speculative decoding at each exit layer E and draft length d, every cell "
            "alternated with autoregressive decoding in one process on the same prompts (one file per process). "
            "The grid was sized to finish in about ten minutes on the shared 2-core CPU; speed-ups of different "
            "files are not comparable beyond this machine's noise.", render_exit_sweep),
    Section("Every configuration on the local lm-eval tasks (bench/lm_eval_table.py)", "lm_eval/table_*.json",
            "python bench/lm_eval_table.py",
            "lm-eval's own evaluator through the `layerbench` model, one process, on the offline tasks in tasks/ "
            "(aclsum_mc: which of four summaries belongs to an abstract; aclsum_ppl: rolling perplexity of the "
            "reference summaries; aclsum_summarize: greedy summaries scored by BLEU and chrF). Cells: value ± "
            "lm-eval's stderr where lm-eval gives one (it gives none for perplexities and corpus BLEU/chrF), and "
            "in brackets the change against the base model. Seconds are wall time including calibration, not a "
            "speed comparison.", render_lm_eval_table, per_sample=True),
    Section("lm-eval rolling perplexity: layerbench vs lm-eval's hf model (bench/lm_eval_speed.py)",
            "lm_eval/speed_*.json", "python bench/lm_eval_speed.py --rounds 3",
            "aclsum_ppl over the 100 aclsum test references, both models in one process, runs alternated after a "
            "warm-up; the best of the rounds. The first file ran while other jobs loaded the machine (load "
            "average above 3); the second ran on an idle machine before the scorer batched lone requests into "
            "padded passes, the third after.", render_lm_eval_speed),
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
