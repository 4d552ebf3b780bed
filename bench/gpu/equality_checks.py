"""GPU equality checks, in one process: the same prompts through benchmark.py's own run code under settings that
must not change the output, each compared token for token with the eager single-device run.

    python3 bench/gpu/equality_checks.py --model /tmp/models/s135m --out $OUT/results/gpu
    python3 bench/gpu/equality_checks.py --model DIR --device cpu   # smoke test: 'static' steps, an all-cpu map

Runs (greedy, --perplexity True on references longer than --max_steps):
  eager        --cuda_graphs off (the reference)
  graphs       --cuda_graphs on (captured steps; static buffers must survive the long perplexity passes)
  split        --device_map: the first half of the layers on cuda:0, the rest (and nothing else) on the CPU
  ss_eager / ss_graphs   self-speculative decoding, graphs off / on (output must equal `eager`)
Writes equality_<timestamp>.json: per run the log's cuda_graphs and placement, per sample whether the tokens
equal the reference's, the first differing token, and the perplexity difference.
"""
from __future__ import annotations

import argparse
import glob
import json
import os
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PROMPTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "prompts.jsonl")


def parse() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", required=True, help="checkpoint directory (bench/gpu/build_models.py builds them)")
    ap.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    ap.add_argument("--dtype", default="float32", help="float32 keeps CPU and GPU arithmetic close")
    ap.add_argument("--samples", type=int, default=4)
    ap.add_argument("--max_steps", type=int, default=32)
    ap.add_argument("--exit_layer", type=int, default=None, help="self-speculative exit layer (default: half)")
    ap.add_argument("--out", default=os.path.join(ROOT, "results", "gpu"))
    return ap.parse_args()


def split_map(num_layers: int, device: str) -> dict:
    """Embedding, norm and head on the GPU with the first half of the layers; the second half on the CPU."""
    first = 0 if device == "cuda" else "cpu"
    layers = {f"model.layers.{i}": first if i < num_layers // 2 else "cpu" for i in range(num_layers)}
    return {"model.embed_tokens": first, **layers, "model.norm": first, "model.rotary_emb": first,
            "lm_head": first}


def run(name: str, base: list[str], extra: list[str], out: str) -> dict:
    import benchmark
    folder = os.path.join(out, "runs", name)
    t0 = time.perf_counter()
    code = benchmark.main([*base, *extra, "--output_dir", folder])
    [path] = glob.glob(os.path.join(folder, "benchmark_*.json")) or [None]
    doc = json.load(open(path)) if path else {}
    records = []
    if doc:
        with open(os.path.join(folder, doc["samples_file"])) as f:
            records = [json.loads(line) for line in f]
    return {"exit_code": code, "seconds": round(time.perf_counter() - t0, 1), "flags": extra,
            "cuda_graphs": doc.get("generation", {}).get("cuda_graphs"),
            "placement": doc.get("model", {}).get("placement"), "records": records}


def compare(result: dict, reference: dict) -> dict:
    ref = {r["sample_id"]: r for r in reference["records"]}
    rows = []
    for r in result["records"]:
        a, b = r["prediction"], ref[r["sample_id"]]["prediction"]
        first = next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), None if a == b else min(len(a), len(b)))
        nll = (r.get("perplexity") or {}).get("nll_sum"), (ref[r["sample_id"]].get("perplexity") or {}).get("nll_sum")
        rows.append({"sample_id": r["sample_id"], "equal": a == b, "first_difference_char": first,
                     "reference_tokens": (r.get("perplexity") or {}).get("tokens"),
                     "nll_difference": None if None in nll else abs(nll[0] - nll[1])})
    return {"equal": f"{sum(x['equal'] for x in rows)}/{len(rows)}", "samples": rows}


def main() -> int:
    a = parse()
    sys.path.insert(0, ROOT)
    from transformers import AutoConfig
    import torch
    num_layers = AutoConfig.from_pretrained(a.model).num_hidden_layers
    exit_layer = a.exit_layer or num_layers // 2
    on = "on" if a.device == "cuda" else "static"
    base = ["--model", a.model, "--device", a.device, "--dtype", a.dtype, "--dataset", "custom_jsonl",
            "--data_path", PROMPTS, "--prompt_field", "prompt", "--response_field", "response",
            "--num_samples", str(a.samples), "--max_steps", str(a.max_steps), "--perplexity", "True",
            "--warmup", "False"]
    ss = ["--generation_strategy", "self_speculative", "--exit_layer", str(exit_layer), "--num_speculations", "3"]
    runs = {"eager": ["--cuda_graphs", "off"], "graphs": ["--cuda_graphs", on],
            "split": ["--device_map", json.dumps(split_map(num_layers, a.device))],
            "ss_eager": [*ss, "--cuda_graphs", "off"], "ss_graphs": [*ss, "--cuda_graphs", on]}
    os.makedirs(a.out, exist_ok=True)
    results = {name: run(name, base, extra, a.out) for name, extra in runs.items()}
    report = {"device": torch.cuda.get_device_name(0) if a.device == "cuda" else "cpu", "torch": torch.__version__,
              "model": a.model, "dtype": a.dtype, "max_steps": a.max_steps, "exit_layer": exit_layer,
              "runs": {k: {key: v for key, v in r.items() if key != "records"} for k, r in results.items()},
              "versus_eager": {k: compare(r, results["eager"]) for k, r in results.items() if k != "eager"}}
    path = os.path.join(a.out, f"equality_{time.strftime('%Y%m%d_%H%M%S')}.json")
    with open(path, "w") as f:
        json.dump(report, f, indent=1)
    for name, cmp in report["versus_eager"].items():
        print(f"{name}: {cmp['equal']} equal to eager; cuda_graphs={report['runs'][name]['cuda_graphs']}")
    print(path)
    return 0 if all(r["exit_code"] == 0 for r in results.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
