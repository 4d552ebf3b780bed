"""Aggregate benchmark.py run logs into metrics and timing tables (and plots).

    python analyze_logs.py [LOG_DIR_OR_FILE ...] [--format github|latex|csv|json] [--out DIR] [--plot]
        [--dataset NAME] [--model NAME] [--approach NAME] [--sort COLUMN] [--bootstrap_resamples N] [--seed S]

Corrupt, partial (`complete: false`) and foreign JSON files are skipped with one warning line each. Speedup and
quality change are relative to the base run with the same model, dataset, strategy, exit layer, speculations and
sample count (see layerbench.analysis.tables), paired over the shared sample ids with a paired-bootstrap 95%
interval where both runs have samples files (layerbench.analysis.paired).
"""
from __future__ import annotations

import argparse
import os
import sys

from layerbench.errors import OneLineArgumentParser, UsageError, folder_name, positive_int, seed_int


def parse(argv: list[str] | None) -> argparse.Namespace:
    ap = OneLineArgumentParser(description="Aggregate benchmark.py logs into tables.")
    ap.add_argument("paths", nargs="*", default=["logs"], help="run JSON files or folders of them (default: logs)")
    select = ap.add_argument_group("which runs")
    select.add_argument("--dataset", action="append", help="keep runs of this dataset (repeatable)")
    select.add_argument("--model", action="append", help="keep runs of this model (repeatable)")
    select.add_argument("--approach", action="append", help="keep runs of this approach (repeatable)")
    output = ap.add_argument_group("output")
    output.add_argument("--format", choices=["github", "latex", "csv", "json"], default="github",
                        help="table format (default: github)")
    output.add_argument("--sort", default=None, help="column to sort by")
    output.add_argument("--out", default=None, type=folder_name,
                        help="where summary CSVs and plots go (default: the first log dir)")
    output.add_argument("--plot", action="store_true", help="also plot quality vs speed and speedups")
    stats = ap.add_argument_group("intervals")
    stats.add_argument("--bootstrap_resamples", type=positive_int, default=1000,
                       help="resamples of the paired bootstrap behind each change's 95%% interval (default: 1000)")
    stats.add_argument("--seed", type=seed_int, default=0,
                       help="seed of the bootstrap resampling, in [0, 2**32 - 1] (default: 0)")
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    try:
        return report(args)
    except UsageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


def report(args: argparse.Namespace) -> int:
    # pandas, scipy and matplotlib come after the flags are read, so --help and a bad flag are answered at once
    from layerbench.analysis.agreement import agreement_rows, render_agreement, write_agreement_csv
    from layerbench.analysis.output_dir import check_writable_dir
    from layerbench.analysis.paired import legend
    from layerbench.analysis.plots import plot
    from layerbench.analysis import lm_eval_columns
    from layerbench.analysis.tables import (CONFIG, METRICS_COLUMNS, METRICS_DISPLAY, TIMING_COLUMNS, aggregate,
                                            load_runs, render, write_csvs)
    from layerbench.analysis.uncertainty import BootstrapConfig
    for p in args.paths:
        if not os.path.exists(p):
            print(f"error: {p}: no such file or directory", file=sys.stderr)
            return 2
    out_dir = args.out or (args.paths[0] if os.path.isdir(args.paths[0]) else os.path.dirname(args.paths[0]) or ".")
    check_writable_dir(out_dir, "--out" if args.out else "output folder (the first log folder; set --out)")
    warnings: list[str] = []
    runs, skipped = load_runs(args.paths, warn=warnings.append)
    for col, wanted in (("dataset", args.dataset), ("model", args.model), ("approach", args.approach)):
        if wanted and not runs.empty:
            runs = runs[runs[col].isin(wanted)]
    if args.plot and runs.empty:
        raise UsageError(f"--plot: no valid runs to plot in {', '.join(args.paths)} ({skipped} files skipped)")
    for w in warnings:
        print(w, file=sys.stderr)
    bootstrap = BootstrapConfig(resamples=args.bootstrap_resamples, seed=args.seed)
    table = aggregate(runs, bootstrap)
    if args.sort:
        if args.sort not in table.columns:
            print(f"error: --sort {args.sort}: no such column; columns: {', '.join(table.columns)}", file=sys.stderr)
            return 2
        table = table.sort_values(args.sort, kind="stable").reset_index(drop=True)
    print("## Metrics\n")
    print(render(table, METRICS_DISPLAY if args.format in ("github", "latex") else METRICS_COLUMNS, args.format))
    print("\n## Timing\n")
    print(render(table, TIMING_COLUMNS, args.format))
    lm_eval_table = lm_eval_columns.render(table, CONFIG + ["runs"], args.format)
    if lm_eval_table is not None:
        print("\n## lm-eval (value ± lm-eval stderr; change vs the matching base run ± combined stderr)\n")
        print(lm_eval_table)
    agreement = [r for r in agreement_rows(args.paths)
                 if all(not wanted or r[col] in wanted for col, wanted in (("dataset", args.dataset),
                                                                          ("model", args.model),
                                                                          ("approach", args.approach)))]
    if agreement:
        print("\n## Agreement with autoregressive decoding (greedy runs that promise its tokens, each against its "
              "matching plain autoregressive run)\n")
        print(render_agreement(agreement, args.format))
    if args.format in ("github", "latex"):
        print("\n" + legend(bootstrap))
    written = write_csvs(table, out_dir)
    if agreement:
        written.append(write_agreement_csv(agreement, out_dir))
    if args.plot:
        written += plot(table, out_dir)
    print(f"\n{len(runs)} runs in {len(table)} configurations; {skipped} files skipped; wrote {', '.join(written)}",
          file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
