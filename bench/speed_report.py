"""What bench/speed.py computes from its runs: the prompts, the ratios, the output checks, the printed tables and
the JSON under results/."""
from __future__ import annotations

import argparse
import os
import sys

from tabulate import tabulate

from layerbench.errors import UsageError
from layerbench.evaluation import datasets
from layerbench.models.loading import load_model
from runner import Stats, run_alternating, write_result
from speed_runs import add_graph_runners, build_runners, removed_time_share, weight_streaming_bound


def load_prompts(a: argparse.Namespace, tokenizer) -> tuple[list[list[int]], list[list[int]]]:
    """(evaluation prompts, calibration texts from the train split or, without one, the other records)."""
    options = datasets.DatasetOptions(data_path=a.data_path)
    spec = datasets.get_spec(a.dataset)
    _, samples = datasets.load_split(a.dataset, None, options)
    chosen = datasets.select_samples(samples, a.samples, 42, True)
    use_chat = datasets.use_chat_template(tokenizer, "auto")
    prompts = [datasets.build_prompt(tokenizer, spec.template.format(input=s.input), use_chat) for s in chosen]
    if spec.train_split:
        _, pool = datasets.load_split(a.dataset, spec.train_split, options)
    else:
        pool = [s for s in samples if s not in chosen]
    calibration = [tokenizer(spec.template.format(input=s.input) + " " + s.reference)["input_ids"]
                   for s in pool[:a.calibration_samples]]
    return prompts, calibration


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


def run(a: argparse.Namespace) -> None:
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
