"""Side-by-side decoding speed, in ONE process, on the same prompts and model, runs alternated after warm-up.

Compares our engine against HF generate (greedy; on CUDA also with SDPA forced to flash attention, and HF's own
fast path: a static cache with torch.compile) and against two bounds: the device's streaming bound (the weight
bytes at the bandwidth a full read of an equally large buffer measures) and one F.linear per weight matrix (what
F.linear itself streams); our engine with torch's own linear kernel (so the loop and the kernel are credited
separately) and over compiled blocks; self-speculative decoding against HF's assistant_early_exit at the same E
and d, and with a fitted exit adapter, adaptive draft length and a trimmed draft vocabulary; angular pruning
against the ideal implied by the measured time share of the removed layers; low-rank and gated variants against
base; and a mechanics check on a model whose layers >= E are exact identities (every draft accepted) against the
theoretical bound. On CUDA the same over captured graphs, plain and over compiled blocks. Our engines compute
their steps as benchmark.py does (--exact). Ratios are the result; absolute numbers are context. A run that is
not timed (--only) leaves out the ratios that need it.

    .venv/bin/python bench/speed.py --samples 2 --max_tokens 40 --exit_layer 20 --num_speculations 4 --prune_n 6
"""
from __future__ import annotations

import argparse
import os
import sys
from typing import Callable

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
    engine = ap.add_argument_group("engine")
    engine.add_argument("--exact", default="auto", choices=("auto", "on", "off"),
                        help="exact mode of our engines, as benchmark.py --exact (auto: on in bfloat16 and float16)")
    engine.add_argument("--only", nargs="+", default=None, metavar="RUN",
                        help="time only these runs (names as in the output; default: every run this device has)")
    groups["output"].add_argument("--out", default=None,
                                  help="folder for speed_<timestamp>.json (default: results/<cpu|gpu>)")
    return ap.parse_args()


def ratio_definitions(a, variants, removed_share: float, bounds: dict) -> dict[str, Callable]:
    """Ratio name -> f(tokens/s, decode seconds per token); a ratio whose runs were not timed is left out."""
    d = a.num_speculations
    share = (lambda: removed_share) if removed_share is not None else None

    def identity_bound(suffix: str = "") -> Callable:
        return lambda tps, t: (d + 1) * t[f"identity_autoregressive{suffix}"] / (
            d * t[f"identity_early_exit{suffix}"] + t[f"identity_autoregressive{suffix}"])

    def per_layer_ideal(tps, t):  # layers cost alike on the graph path: t_layer from full and early exit
        full, early = t["ours_autoregressive_graphs_compiled"], t["ours_early_exit_graphs_compiled"]
        t_layer = (full - early) / (variants.num_layers - a.exit_layer)
        return full / (full - a.prune_n * t_layer)
    out = {
        "ours_autoregressive / hf_generate": lambda tps, t: tps["ours_autoregressive"] / tps["hf_generate"],
        "ours_autoregressive_torch_kernel / hf_generate":
            lambda tps, t: tps["ours_autoregressive_torch_kernel"] / tps["hf_generate"],
        "ours_autoregressive / ours_autoregressive_torch_kernel":
            lambda tps, t: tps["ours_autoregressive"] / tps["ours_autoregressive_torch_kernel"],
        "ours_autoregressive_compiled / ours_autoregressive":
            lambda tps, t: tps["ours_autoregressive_compiled"] / tps["ours_autoregressive"],
        "ours_autoregressive_compiled / hf_generate":
            lambda tps, t: tps["ours_autoregressive_compiled"] / tps["hf_generate"],
        "ours_self_speculative / ours_autoregressive":
            lambda tps, t: tps["ours_self_speculative"] / tps["ours_autoregressive"],
        "ours_self_speculative_compiled / ours_autoregressive_compiled":
            lambda tps, t: tps["ours_self_speculative_compiled"] / tps["ours_autoregressive_compiled"],
        "ours_self_speculative_adapter / ours_autoregressive":
            lambda tps, t: tps["ours_self_speculative_adapter"] / tps["ours_autoregressive"],
        f"angular pruned (n={a.prune_n}) / base":
            lambda tps, t: tps["ours_pruned_autoregressive"] / tps["ours_autoregressive"],
        "  ideal from removed-layer time share": lambda tps, t: 1 / (1 - share()),
        "  achieved fraction of ideal":
            lambda tps, t: tps["ours_pruned_autoregressive"] / tps["ours_autoregressive"] * (1 - share()),
        "lowrank (rho=0.5) / base": lambda tps, t: tps["ours_lowrank_autoregressive"] / tps["ours_autoregressive"],
        "gated (compute=0.6) / base": lambda tps, t: tps["ours_gated_autoregressive"] / tps["ours_autoregressive"],
        "identity model: self_speculative / autoregressive":
            lambda tps, t: tps["identity_self_speculative"] / tps["identity_autoregressive"],
        "  theoretical bound (d+1)t_full/(d t_draft + t_full)": identity_bound(),
        "identity model: achieved fraction of bound": lambda tps, t: (
            tps["identity_self_speculative"] / tps["identity_autoregressive"] / identity_bound()(tps, t)),
        f"layer_skip_speculative (draft skips the angular n={a.prune_n} layers) / ours_autoregressive":
            lambda tps, t: tps["ours_layer_skip_speculative"] / tps["ours_autoregressive"],
        "  identity skipped layers (every draft accepted) / identity_autoregressive (same compute)":
            lambda tps, t: tps["identity_layer_skip_speculative"] / tps["identity_autoregressive"],
        "  bound if verifying cost one full step: (d+1)/(d(1-s)+1), s = skipped time share":
            lambda tps, t: (d + 1) / (d * (1 - share()) + 1),
        "ours_self_speculative / hf_assistant_early_exit":
            lambda tps, t: tps["ours_self_speculative"] / tps["hf_assistant_early_exit"],
    }
    out.update(graph_ratio_definitions(a, per_layer_ideal, identity_bound))
    for run in ("ours_autoregressive", "ours_autoregressive_compiled", "ours_autoregressive_graphs",
                "ours_autoregressive_graphs_compiled"):
        for bound in bounds:
            out[f"{run} / {bound}"] = lambda tps, t, run=run, bound=bound: 1 / t[run] / bounds[bound]
    for hf in ("hf_generate", "hf_generate_flash", "hf_assistant_early_exit", "hf_generate_static_compiled"):
        for run in ("ours_autoregressive", "ours_autoregressive_graphs", "ours_autoregressive_graphs_compiled"):
            out.setdefault(f"{run} / {hf}", lambda tps, t, run=run, hf=hf: tps[run] / tps[hf])
    return out


def graph_ratio_definitions(a, per_layer_ideal: Callable, identity_bound: Callable) -> dict[str, Callable]:
    """The ratios of the CUDA-graph runs (GPU only)."""
    return {
        "ours_autoregressive_graphs / ours_autoregressive":
            lambda tps, t: tps["ours_autoregressive_graphs"] / tps["ours_autoregressive"],
        "ours_autoregressive_graphs_compiled / ours_autoregressive_graphs":
            lambda tps, t: tps["ours_autoregressive_graphs_compiled"] / tps["ours_autoregressive_graphs"],
        "ours_self_speculative_graphs / ours_autoregressive_graphs":
            lambda tps, t: tps["ours_self_speculative_graphs"] / tps["ours_autoregressive_graphs"],
        "ours_self_speculative_graphs_compiled / ours_autoregressive_graphs_compiled":
            lambda tps, t: tps["ours_self_speculative_graphs_compiled"] / tps["ours_autoregressive_graphs_compiled"],
        f"graphs, compiled: angular pruned (n={a.prune_n}) / base": lambda tps, t: (
            tps["ours_pruned_autoregressive_graphs_compiled"] / tps["ours_autoregressive_graphs_compiled"]),
        "  ideal on the graph path: t_full / (t_full - n t_layer), t_layer from full and early-exit graphs":
            per_layer_ideal,
        "  achieved fraction of the graph-path ideal": lambda tps, t: (
            tps["ours_pruned_autoregressive_graphs_compiled"] / tps["ours_autoregressive_graphs_compiled"]
            / per_layer_ideal(tps, t)),
        "graphs, compiled: identity self_speculative / autoregressive": lambda tps, t: (
            tps["identity_self_speculative_graphs_compiled"] / tps["identity_autoregressive_graphs_compiled"]),
        "  its bound (d+1)t_full/(d t_draft + t_full)": identity_bound("_graphs_compiled"),
        "  achieved fraction of its bound": lambda tps, t: (
            tps["identity_self_speculative_graphs_compiled"] / tps["identity_autoregressive_graphs_compiled"]
            / identity_bound("_graphs_compiled")(tps, t)),
    }


def ratios(stats: dict[str, Stats], variants, removed_share: float | None, bounds: dict, a) -> dict[str, float]:
    tps = {n: s.tokens_per_second for n, s in stats.items()}
    dtpt = {n: s.decode_time_per_token for n, s in stats.items() if s.decode_seconds}
    out = {}
    for name, ratio in ratio_definitions(a, variants, removed_share, bounds).items():
        try:
            out[name] = ratio(tps, dtpt)
        except (KeyError, TypeError, ZeroDivisionError):  # a run it needs was not timed (or no share measured)
            continue
    return out


OWN_MODEL = ("identity_layer_skip_speculative",)  # its identities are the skipped layers: no AR run of that model
SUFFIXES = ("_graphs_compiled", "_graphs", "_compiled", "_torch_kernel", "_adapter", "")
NOT_EQUAL_BY_DESIGN = ("early_exit", "pruned", "lowrank", "gated")


def reference_of(name: str, outputs: dict) -> str | None:
    """The autoregressive run a run must equal: the same model (ours_ or identity_) computed the same way (the same
    suffix), else the plain one; None for runs that change the model's output by design."""
    prefix = next((p for p in ("ours_", "identity_") if name.startswith(p)), None)
    if prefix is None or name in OWN_MODEL or any(word in name for word in NOT_EQUAL_BY_DESIGN):
        return None
    suffix = next(x for x in SUFFIXES if name.endswith(x))
    for candidate in (f"{prefix}autoregressive{suffix}", f"{prefix}autoregressive"):
        if candidate in outputs and candidate != name:
            return candidate
    return None


def checks(outputs: dict[str, list[list[int]]]) -> dict[str, bool]:
    """Greedy tokens that must be equal: each of our runs against autoregressive decoding of the same model computed
    the same way (else plainly), and our plain autoregressive decoding against HF's generate runs."""
    out = {}
    for name, tokens in outputs.items():
        reference = reference_of(name, outputs)
        if reference is not None:
            out[f"{name} == {reference}"] = tokens == outputs[reference]
        if name.startswith("hf_") and name != "hf_assistant_early_exit":
            ours = "ours_autoregressive" if "ours_autoregressive" in outputs else None
            if ours:
                out[f"{ours} == {name} (greedy tokens)"] = outputs[ours] == tokens
    return out


def report(a, loaded, device, stats, outputs, variants, removed_share, bounds) -> None:
    r = ratios(stats, variants, removed_share, {k: b["tokens_per_second"] for k, b in bounds.items()}, a)
    c = checks(outputs)
    rows = [[n, s.tokens, f"{s.seconds:.2f}", f"{s.tokens_per_second:.2f}",
             f"{s.acceptance:.3f}" if s.drafted else "", f"{s.mean_draft_length:.2f}" if s.rounds else ""]
            for n, s in stats.items()]
    print(tabulate(rows, ["run", "tokens", "seconds", "tokens/s", "acceptance", "draft length"], tablefmt="github"))
    print()
    print(tabulate([[k, f"{v:.3f}"] for k, v in r.items()], ["ratio", "value"], tablefmt="github"))
    print()
    print(tabulate([[k, v] for k, v in c.items()], ["check", "ok"], tablefmt="github"))
    engine = variants.base_engine
    stream = bounds["streaming_bound"]
    print(f"\ncontext: {loaded.name}, {engine.num_blocks} layers, E={a.exit_layer}, d={a.num_speculations}, "
          f"{a.samples} prompts x {a.rounds} rounds, {a.max_tokens} tokens each, exact rows {variants.rows}, removed "
          f"layers {variants.pruned[1] if 'pruned' in vars(variants) else '-'}, streaming bound "
          f"{stream['tokens_per_second']:.1f} tokens/s ({stream['read_gb_per_s']:.1f} GB/s read), one F.linear per "
          f"matrix {bounds['linear_per_matrix_bound']['tokens_per_second']:.1f} tokens/s, linear kernel "
          f"{engine.linear_kernel} {engine.kernel.detail}, device {device}, dtype {engine.dtype}")
    out_dir = a.out or os.path.join("results", "gpu" if device.type == "cuda" else "cpu")
    built = vars(variants)
    doc = {"args": vars(a), "model": loaded.name,
           "stats": {n: vars(s) for n, s in stats.items()},
           "tokens_per_second": {n: s.tokens_per_second for n, s in stats.items()}, "ratios": r, "checks": c,
           "removed_layers": built["pruned"][1] if "pruned" in built else None, "removed_time_share": removed_share,
           "bounds": bounds, "exact_rows": variants.rows, "linear_kernel": [engine.linear_kernel, engine.kernel.detail],
           "exit_adapter": built["adapted"][1] if "adapted" in built else None, "cuda_graphs": variants.graph_status}
    write_result(out_dir, "speed", doc, device)


def exact_rows(requested: str, dtype) -> int:
    from layerbench.engine.exact import ROWS
    from layerbench.runs.step_modes import HALF_PRECISION
    return ROWS if requested == "on" or (requested == "auto" and dtype in HALF_PRECISION) else 0


def main() -> None:
    a = parse()
    from layerbench.models.loading import load_model
    from speed_runs import Variants, build_runners, linear_per_matrix_bound, removed_time_share, streaming_bound
    loaded = load_model(a.model, a.dtype, a.device)
    device = next(loaded.model.parameters()).device
    L = loaded.model.config.num_hidden_layers
    if a.exit_layer >= L or a.prune_n >= L:
        raise UsageError(f"--exit_layer and --prune_n must be < {L} (model layers), got {a.exit_layer} and {a.prune_n}")
    if not 0 < a.draft_confidence < 1:
        raise UsageError(f"--draft_confidence must be in (0, 1), got {a.draft_confidence}")
    prompts, calibration = load_prompts(a, loaded.tokenizer)
    variants = Variants(loaded, calibration, a, exact_rows(a.exact, loaded.model.dtype))
    try:
        runners = build_runners(variants, prompts, a, a.only)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    print("prepared every variant; timing", file=sys.stderr)
    stats, outputs = run_alternating(runners, prompts, a.rounds)
    removed_share = None
    if "ours_autoregressive" in runners and "pruned" in vars(variants):
        removed_share = removed_time_share(variants.base_engine, runners["ours_autoregressive"], prompts,
                                           variants.pruned[1])
    bounds = {"streaming_bound": streaming_bound(variants.base_engine),
              "linear_per_matrix_bound": linear_per_matrix_bound(variants.base_engine)}
    report(a, loaded, device, stats, outputs, variants, removed_share, bounds)


MISPAIRED = "identity_layer_skip_speculative == identity_autoregressive"


def note(doc: dict) -> str:
    text = f"linear kernel {doc.get('linear_kernel')}"
    if MISPAIRED in doc.get("checks", {}):
        text += (f"; its check `{MISPAIRED}` compared two different identity models (layers {doc['removed_layers']} "
                 f"against layers E..L-1), a pairing speed.py no longer makes")
    return text


def render(files: list[tuple[str, dict]]) -> str:
    return render_ratio_tables(files, note)


SECTION = Section("Speed on CPU (bench/speed.py)", "cpu/speed_*.json",
                  "python bench/speed.py --samples 2 --max_tokens 40 --exit_layer 20 --num_speculations 4 --prune_n 6",
                  "Every run alternates over the same prompts in one process; each column is one process. Ratios of "
                  "different processes are not comparable beyond the 10-20% noise of this machine.", render)


if __name__ == "__main__":
    run_script(main)
