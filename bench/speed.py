"""Side-by-side decoding speed, in ONE process, on the same prompts and model, runs alternated after warm-up.

Compares our engine against HF generate (greedy; on CUDA also with SDPA forced to flash attention) and against
the weight-streaming bound (one matrix-vector product over every weight matrix per token); our engine with
torch's own linear kernel (so the loop and the kernel are credited separately); self-speculative decoding
against HF's assistant_early_exit at the same E and d, and with a fitted exit adapter, adaptive draft length and a
trimmed draft vocabulary;
angular pruning against the ideal implied by the measured time share of the removed layers; low-rank and gated
variants against base; and a mechanics check on a model whose layers >= E are exact identities (every draft
accepted) against the theoretical bound. Ratios are the result; absolute numbers are context.

    .venv/bin/python bench/speed.py --samples 2 --max_tokens 40 --exit_layer 20 --num_speculations 4 --prune_n 6
"""
from __future__ import annotations

import argparse
import os
import sys

from tabulate import tabulate

from doc_tables import Section, render_ratio_tables
from layerbench.errors import OneLineArgumentParser, UsageError, non_negative_int, positive_int, run_script
from runner import Stats, add_side_by_side_flags, load_prompts, run_alternating, write_result


def parse() -> argparse.Namespace:
    ap = OneLineArgumentParser(description=__doc__.split("\n\n")[0])
    groups = add_side_by_side_flags(ap, samples=2, max_tokens=40)
    spec = groups["self-speculation"]
    spec.add_argument("--draft_confidence", type=float, default=0.6,
                      help="adaptive draft length of the exit-adapter run (bench/draft_confidence.py measured 0.6; "
                           "default: 0.6)")
    spec.add_argument("--draft_vocabulary", type=non_negative_int, default=2048,
                      help="draft vocabulary of the exit-adapter run (0: the full vocabulary; default: 2048)")
    spec.add_argument("--skip_hf_early_exit", action="store_true", help="HF assisted early exit is slow on CPU")
    groups["model and prompts"].add_argument("--prune_n", type=positive_int, default=6,
                                             help="layers the angular-pruning run removes (default: 6)")
    groups["output"].add_argument("--out", default=None,
                                  help="folder for speed_<timestamp>.json (default: results/<cpu|gpu>)")
    return ap.parse_args()


def ratios(stats: dict[str, Stats], variants: dict, removed_share: float, bound_tps: float, a) -> dict[str, float]:
    tps = {n: s.tokens_per_second for n, s in stats.items()}
    dtpt = {n: s.decode_time_per_token for n, s in stats.items() if s.decode_seconds}
    d = a.num_speculations
    t_full, t_draft = dtpt["identity_autoregressive"], dtpt["identity_early_exit"]
    bound = (d + 1) * t_full / (d * t_draft + t_full)
    ident_speedup = tps["identity_self_speculative"] / tps["identity_autoregressive"]
    prune_speedup = tps["ours_pruned_autoregressive"] / tps["ours_autoregressive"]
    ideal_prune = 1 / (1 - removed_share)
    lowrank = variants["lowrank_report"]
    out = {
        "ours_autoregressive / weight_streaming_bound": 1 / dtpt["ours_autoregressive"] / bound_tps,
        "ours_autoregressive / hf_generate": tps["ours_autoregressive"] / tps["hf_generate"],
        "ours_autoregressive_torch_kernel / hf_generate": tps["ours_autoregressive_torch_kernel"] / tps["hf_generate"],
        "ours_autoregressive / ours_autoregressive_torch_kernel":
            tps["ours_autoregressive"] / tps["ours_autoregressive_torch_kernel"],
        "ours_self_speculative / ours_autoregressive": tps["ours_self_speculative"] / tps["ours_autoregressive"],
        "ours_self_speculative_adapter / ours_autoregressive":
            tps["ours_self_speculative_adapter"] / tps["ours_autoregressive"],
        f"angular pruned (n={a.prune_n}) / base": prune_speedup,
        "  ideal from removed-layer time share": ideal_prune,
        "  achieved fraction of ideal": prune_speedup / ideal_prune,
        "lowrank (rho=0.5) / base": tps["ours_lowrank_autoregressive"] / tps["ours_autoregressive"],
        "  targeted matrices: kept parameter fraction":
            lowrank["targeted_params_after"] / lowrank["targeted_params_before"],
        "gated (compute=0.6) / base": tps["ours_gated_autoregressive"] / tps["ours_autoregressive"],
        "  decode layer calls executed (fraction)": 1 - variants["gated_pruner"].get_metrics()["decode_skip_ratio"],
        "identity model: self_speculative / autoregressive": ident_speedup,
        "  theoretical bound (d+1)t_full/(d t_draft + t_full)": bound,
        "identity model: achieved fraction of bound": ident_speedup / bound,
    }
    if "ours_layer_skip_speculative" in tps:
        out.update({
            f"layer_skip_speculative (draft skips the angular n={a.prune_n} layers) / ours_autoregressive":
                tps["ours_layer_skip_speculative"] / tps["ours_autoregressive"],
            "  identity skipped layers (every draft accepted) / identity_autoregressive (same compute)":
                tps["identity_layer_skip_speculative"] / tps["identity_autoregressive"],
            "  bound if verifying cost one full step: (d+1)/(d(1-s)+1), s = skipped time share":
                (d + 1) / (d * (1 - removed_share) + 1)})
    for name in ("hf_generate_flash", "hf_assistant_early_exit"):
        if name in tps:
            out[f"ours_autoregressive / {name}"] = tps["ours_autoregressive"] / tps[name]
    if "ours_autoregressive_graphs" in tps:
        out["ours_autoregressive_graphs / ours_autoregressive"] = (
            tps["ours_autoregressive_graphs"] / tps["ours_autoregressive"])
        out["ours_autoregressive_graphs / weight_streaming_bound"] = (
            1 / dtpt["ours_autoregressive_graphs"] / bound_tps)
        for name in ("hf_generate", "hf_generate_flash"):
            if name in tps:
                out[f"ours_autoregressive_graphs / {name}"] = tps["ours_autoregressive_graphs"] / tps[name]
    if "ours_self_speculative_graphs" in tps:
        out["ours_self_speculative_graphs / ours_autoregressive_graphs"] = (
            tps["ours_self_speculative_graphs"] / tps.get("ours_autoregressive_graphs", tps["ours_autoregressive"]))
    if "hf_assistant_early_exit" in tps:
        out["ours_self_speculative / hf_assistant_early_exit"] = (
            tps["ours_self_speculative"] / tps["hf_assistant_early_exit"])
    return out


def checks(outputs: dict[str, list[list[int]]]) -> dict[str, bool]:
    ar = outputs["ours_autoregressive"]
    return {
        "ours_autoregressive == hf_generate (greedy tokens)": ar == outputs["hf_generate"],
        "ours_autoregressive == ours_autoregressive_torch_kernel": ar == outputs["ours_autoregressive_torch_kernel"],
        "ours_self_speculative == ours_autoregressive": outputs["ours_self_speculative"] == ar,
        "ours_self_speculative_adapter == ours_autoregressive": outputs["ours_self_speculative_adapter"] == ar,
        "identity self_speculative == identity autoregressive":
            outputs["identity_self_speculative"] == outputs["identity_autoregressive"],

        **{f"{name} == ours_autoregressive": outputs[name] == ar
           for name in ("ours_autoregressive_graphs", "ours_self_speculative_graphs", "ours_layer_skip_speculative")
           if name in outputs},
    }


def report(a, loaded, device, stats, outputs, variants, removed_share, bound) -> None:
    r = ratios(stats, variants, removed_share, bound["tokens_per_second"], a)
    c = checks(outputs)
    rows = [[n, s.tokens, f"{s.seconds:.2f}", f"{s.tokens_per_second:.2f}",
             f"{s.acceptance:.3f}" if s.drafted else "", f"{s.mean_draft_length:.2f}" if s.rounds else ""]
            for n, s in stats.items()]
    print(tabulate(rows, ["run", "tokens", "seconds", "tokens/s", "acceptance", "draft length"], tablefmt="github"))
    print()
    print(tabulate([[k, f"{v:.3f}"] for k, v in r.items()], ["ratio", "value"], tablefmt="github"))
    print()
    print(tabulate([[k, v] for k, v in c.items()], ["check", "ok"], tablefmt="github"))
    engine = variants["base_engine"]
    print(f"\ncontext: {loaded.name}, {engine.num_blocks} layers, E={a.exit_layer}, d={a.num_speculations}, "
          f"{a.samples} prompts x {a.rounds} rounds, {a.max_tokens} tokens each, removed layers "
          f"{variants['removed']} ({removed_share:.1%} of generation time), weight-streaming bound "
          f"{bound['tokens_per_second']:.1f} tokens/s ({bound['gb_per_s']:.1f} GB/s, {bound['how']}), "
          f"linear kernel {engine.linear_kernel} {engine.kernel.detail}, device {device}, dtype {engine.dtype}")
    out_dir = a.out or os.path.join("results", "gpu" if device.type == "cuda" else "cpu")
    doc = {"args": vars(a), "model": loaded.name,
           "stats": {n: vars(s) for n, s in stats.items()},
           "tokens_per_second": {n: s.tokens_per_second for n, s in stats.items()}, "ratios": r, "checks": c,
           "removed_layers": variants["removed"], "removed_time_share": removed_share,
           "weight_streaming_bound": bound, "linear_kernel": [engine.linear_kernel, engine.kernel.detail],
           "exit_adapter": variants["adapter_report"], "cuda_graphs": variants["cuda_graphs"]}
    write_result(out_dir, "speed", doc, device)


def main() -> None:
    a = parse()
    from layerbench.models.loading import load_model
    from speed_runs import add_graph_runners, build_runners, removed_time_share, weight_streaming_bound
    loaded = load_model(a.model, a.dtype, a.device)
    device = next(loaded.model.parameters()).device
    L = loaded.model.config.num_hidden_layers
    if a.exit_layer >= L or a.prune_n >= L:
        raise UsageError(f"--exit_layer and --prune_n must be < {L} (model layers), got {a.exit_layer} and {a.prune_n}")
    if not 0 < a.draft_confidence < 1:
        raise UsageError(f"--draft_confidence must be in (0, 1), got {a.draft_confidence}")
    prompts, calibration = load_prompts(a, loaded.tokenizer)
    runners, variants = build_runners(loaded, calibration, a)
    variants["cuda_graphs"] = add_graph_runners(runners, loaded, prompts, a) if device.type == "cuda" else {}
    print("prepared every variant; timing", file=sys.stderr)
    stats, outputs = run_alternating(runners, prompts, a.rounds)
    removed_share = removed_time_share(variants["base_engine"], runners["ours_autoregressive"], prompts,
                                       variants["removed_positions"])
    bound = weight_streaming_bound(variants["base_engine"])
    report(a, loaded, device, stats, outputs, variants, removed_share, bound)


def render(files: list[tuple[str, dict]]) -> str:
    return render_ratio_tables(files, lambda d: f"linear kernel {d.get('linear_kernel')}")


SECTION = Section("Speed on CPU (bench/speed.py)", "cpu/speed_*.json",
                  "python bench/speed.py --samples 2 --max_tokens 40 --exit_layer 20 --num_speculations 4 --prune_n 6",
                  "Every run alternates over the same prompts in one process; each column is one process. Ratios of "
                  "different processes are not comparable beyond the 10-20% noise of this machine.", render)


if __name__ == "__main__":
    run_script(main)
