"""Compares the greedy predictions of two sets of benchmark.py runs (for example two checkouts, or two
environments) run by the same commands, one output directory per configuration tag:

    python bench/compare_predictions.py BEFORE_DIR AFTER_DIR --what "..." --out results/equivalence/NAME.json

BEFORE_DIR/TAG and AFTER_DIR/TAG each hold one run's benchmark_*.json and its _samples.jsonl. The JSON records,
per tag, the flags, how many predictions and token counts are identical, and each side's removed layers,
acceptance rate and ROUGE-L; flags are the arguments that differ from the run tagged `base`.
"""
from __future__ import annotations

import glob
import json
import os
import sys

from layerbench.errors import OneLineArgumentParser, UsageError, run_script
from doc_tables import Section, table


def read_run(directory: str) -> tuple[dict, list[dict]]:
    docs = [p for p in glob.glob(os.path.join(directory, "benchmark_*.json"))]
    samples = glob.glob(os.path.join(directory, "benchmark_*_samples.jsonl"))
    if len(docs) != 1 or len(samples) != 1:
        raise UsageError(f"{directory}: expected one benchmark_*.json and one _samples.jsonl")
    with open(docs[0]) as f:
        doc = json.load(f)
    with open(samples[0]) as f:
        return doc, [json.loads(line) for line in f]


def flags_beyond(args: dict, base_args: dict) -> list[str]:
    """The run's arguments that differ from the base run's, as command-line flags."""
    flags = []
    for key, value in args.items():
        if key != "output_dir" and value != base_args.get(key):
            flags += [f"--{key}", *(map(str, value) if isinstance(value, list) else [str(value)])]
    return flags


def compare(before_dir: str, after_dir: str, tag: str, base_args: dict) -> dict:
    (doc_a, rows_a), (doc_b, rows_b) = read_run(os.path.join(before_dir, tag)), read_run(os.path.join(after_dir, tag))
    pairs = list(zip(rows_a, rows_b))
    return {
        "flags": flags_beyond(doc_b["args"], base_args),
        "samples": len(pairs),
        "identical_predictions": sum(a["prediction"] == b["prediction"] for a, b in pairs),
        "identical_token_counts": sum(a.get("num_tokens") == b.get("num_tokens")
                                      for a, b in pairs),
        "removed_layers": [d["prune"].get("removed_layers") for d in (doc_a, doc_b)],
        "acceptance_rate": [d["metrics"].get("acceptance_rate") for d in (doc_a, doc_b)],
        "rougeL": [d["metrics"].get("rougeL") for d in (doc_a, doc_b)],
        "predictions_before": [a["prediction"] for a, _ in pairs],
        "predictions_after": [b["prediction"] for _, b in pairs],
    }


def main() -> None:
    ap = OneLineArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("before_dir", help="one folder per configuration tag, each holding one run")
    ap.add_argument("after_dir", help="the same tags, run by the other side")
    ap.add_argument("--what", required=True, help="what the two sides are (stored in the JSON)")
    ap.add_argument("--command", default="python benchmark.py --num_samples 3 --max_steps 48 --seed 7 <flags>",
                    help="the command both sides ran (stored in the JSON)")
    ap.add_argument("--base_tag", default="base", help="the tag whose arguments the other runs' flags are relative to")
    ap.add_argument("--out", required=True, help="the JSON file to write")
    a = ap.parse_args()
    tags = sorted(t for t in os.listdir(a.before_dir) if os.path.isdir(os.path.join(a.before_dir, t))
                  and os.path.isdir(os.path.join(a.after_dir, t)))
    if not tags:
        raise UsageError(f"no configuration directory is in both {a.before_dir} and {a.after_dir}")
    base_args = read_run(os.path.join(a.after_dir, a.base_tag))[0]["args"] if a.base_tag in tags else {}
    runs = {t: compare(a.before_dir, a.after_dir, t, base_args) for t in tags}
    os.makedirs(os.path.dirname(a.out) or ".", exist_ok=True)
    with open(a.out, "w") as f:
        json.dump({"what": a.what, "command": a.command, "runs": runs}, f, indent=1)
    for t, r in runs.items():
        print(f"{t:12s} identical predictions {r['identical_predictions']}/{r['samples']}")
    print(f"wrote {a.out}", file=sys.stderr)


def render(files: list[tuple[str, dict]]) -> str:
    out = []
    for path, doc in files:
        rows = [[name, " ".join(r["flags"]) or "(base)", f"{r['identical_predictions']}/{r['samples']}",
                 r.get("removed_layers", [[]])[0], r.get("acceptance_rate", [None])[0]]
                for name, r in doc["runs"].items()]
        out.append(f"`{os.path.basename(path)}`: {doc['what']}\n\n"
                   + table(rows, ["run", "flags", "identical predictions", "removed layers", "acceptance"]))
    return "\n\n".join(out)


SECTION = Section("Greedy outputs before and after a change (bench/compare_predictions.py)", "equivalence/*.json",
                  "python benchmark.py --num_samples 3 --max_steps 48 --seed 7 <flags>, once per checkout, then "
                  "python bench/compare_predictions.py BEFORE AFTER --what ... --out results/equivalence/NAME.json",
                  "Each file holds the predictions of two checkouts on the same runs; its first line says which "
                  "(the first: the loop that called HF decoder layers against this engine's).", render)


if __name__ == "__main__":
    run_script(main)
