"""Side-by-side decoding speed, in ONE process, on the same prompts and model, runs alternated after warm-up.

Compares: HF generate (greedy) vs our autoregressive; HF generate(assistant_early_exit=E) vs our
self_speculative at the same E and d; our angular-pruned model (n layers) vs our base, against the ideal implied
by the measured share of time spent in the removed layers; low-rank (half the parameters of each cold matrix) and
gated skipping (60% decode compute) vs base; a mechanics check on a model whose layers >= E are
exact identities (every draft accepted) against the theoretical bound; and the fraction of the memory-bandwidth
bound our decoding reaches. Ratios are the result; absolute numbers are context.

    .venv/bin/python bench/speed.py --samples 2 --max_tokens 40 --exit_layer 20 --num_speculations 4 --prune_n 6
"""
from __future__ import annotations

import argparse
import copy
import datetime
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402
from tabulate import tabulate  # noqa: E402
from torch import nn  # noqa: E402

import data  # noqa: E402
from errors import OneLineArgumentParser, UsageError, positive_int, run_script  # noqa: E402
from decoding import Decoder, autoregressive, self_speculative  # noqa: E402
from fast_linear import FewRowLinear  # noqa: E402
from layer_surgery import make_identity_layers  # noqa: E402
from model_loading import load_model  # noqa: E402
from pruned_model import Calibration, PruneConfig, PruneModel  # noqa: E402
from run_log import environment  # noqa: E402
from sampling import SamplingConfig, StopCondition, TokenChooser  # noqa: E402


def parse() -> argparse.Namespace:
    ap = OneLineArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default=None, help="default: embedded SmolLM2-135M-Instruct")
    ap.add_argument("--dataset", default="aclsum_summarization")
    ap.add_argument("--samples", type=positive_int, default=2)
    ap.add_argument("--max_tokens", type=positive_int, default=40)
    ap.add_argument("--rounds", type=positive_int, default=2, help="timed passes over the prompts (runs alternate)")
    ap.add_argument("--exit_layer", type=positive_int, default=20)
    ap.add_argument("--num_speculations", type=positive_int, default=4)
    ap.add_argument("--prune_n", type=positive_int, default=6)
    ap.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16", "float16"])
    ap.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    ap.add_argument("--skip_hf_early_exit", action="store_true", help="HF assisted early exit is slow on CPU")
    ap.add_argument("--out", default="logs", help="directory for speed_<timestamp>.json")
    return ap.parse_args()


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def hf_runner(model, tokenizer, device, T, **extra):
    def run(prompt):
        ids = torch.tensor([prompt], device=device)
        sync(device)
        t0 = time.perf_counter()
        out = model.generate(ids, max_new_tokens=T, min_new_tokens=T, do_sample=False,
                             pad_token_id=tokenizer.eos_token_id, **extra)
        sync(device)
        return out[0, len(prompt):].tolist(), time.perf_counter() - t0, None
    return run


def our_runner(decoder, strategy, T, **extra):
    def run(prompt):
        res = strategy(decoder, torch.tensor([prompt], device=decoder.device), T, TokenChooser(SamplingConfig()),
                       StopCondition(), **extra)
        return res.token_ids, res.total_time, res
    return run


class LayerTimer:
    """Wall time spent inside each decoder layer (forward pre/post hooks, synchronized on CUDA)."""

    def __init__(self, layers, device):
        self.device, self.total, self._start = device, [0.0] * len(layers), {}
        self.handles = []
        for i, layer in enumerate(layers):
            self.handles.append(layer.register_forward_pre_hook(lambda m, a, i=i: self._begin(i)))
            self.handles.append(layer.register_forward_hook(lambda m, a, o, i=i: self._end(i)))

    def _begin(self, i):
        sync(self.device)
        self._start[i] = time.perf_counter()

    def _end(self, i):
        sync(self.device)
        self.total[i] += time.perf_counter() - self._start[i]

    def remove(self):
        for h in self.handles:
            h.remove()


def measure_bandwidth(device, dtype, reps=20) -> dict[str, float]:
    """One-row product read bandwidth (GB/s) through torch's nn.Linear and through our FewRowLinear, on
    ~200 MB of matrices (more than any cache)."""
    n = 48 if dtype == torch.float32 else 96
    x = torch.randn(1, 1024, device=device, dtype=dtype)
    out = {}
    for name, cls in (("torch_linear", nn.Linear), ("few_row_linear", FewRowLinear)):
        layers = [cls(1024, 4096, bias=False, device=device, dtype=dtype) for _ in range(n)]
        nbytes = sum(m.weight.numel() * m.weight.element_size() for m in layers)
        with torch.no_grad():
            for _ in range(3):
                [m(x) for m in layers]
            sync(device)
            t0 = time.perf_counter()
            for _ in range(reps):
                [m(x) for m in layers]
            sync(device)
        out[name] = nbytes * reps / (time.perf_counter() - t0) / 1e9
        del layers
    return out


def weight_bytes_per_token(model: nn.Module) -> int:
    """Bytes of weights one decode step reads: every parameter except the embedding table (one row is read),
    unless it is tied to the LM head, which reads all of it."""
    emb = model.get_input_embeddings().weight
    head = model.get_output_embeddings().weight
    total = sum(p.numel() * p.element_size() for p in model.parameters())
    return total if emb is head else total - emb.numel() * emb.element_size()


def main() -> None:
    a = parse()
    loaded = load_model(a.model, a.dtype, a.device)
    hf_model, tok = loaded.model, loaded.tokenizer
    device = next(hf_model.parameters()).device
    L, E, d, T = hf_model.config.num_hidden_layers, a.exit_layer, a.num_speculations, a.max_tokens
    if E >= L or a.prune_n >= L:
        raise UsageError(f"--exit_layer and --prune_n must be < {L} (model layers), got {E} and {a.prune_n}")

    spec = data.get_spec(a.dataset)
    _, samples = data.load_split(a.dataset, None, data.DatasetOptions())
    chosen = data.select_samples(samples, a.samples, 42, True)
    use_chat = data.use_chat_template(tok, "auto")
    prompts = [data.build_prompt(tok, spec.template.format(input=s.input), use_chat) for s in chosen]

    base = Decoder(copy.deepcopy(hf_model))
    # angular pruning calibrated on the train split, as benchmark.py does
    pruned_model = copy.deepcopy(hf_model)
    _, train = data.load_split(a.dataset, spec.train_split, data.DatasetOptions())
    calib = [tok(spec.template.format(input=s.input) + " " + s.reference)["input_ids"] for s in train[:32]]
    pm = PruneModel(pruned_model, tok, PruneConfig("angular", prune_n=a.prune_n),
                    lambda: Calibration(calib, {"dataset": a.dataset, "split": spec.train_split}))
    removed = pm.apply()["removed_layers"]
    pruned = Decoder(pruned_model)
    # low-rank at half the parameters of each cold matrix, and gated skipping at 60% decode compute
    lowrank_model = copy.deepcopy(hf_model)
    lowrank_report = PruneModel(lowrank_model, tok, PruneConfig("lowrank", compression_ratio=0.5)).apply()
    lowrank = Decoder(lowrank_model)
    gated_model = copy.deepcopy(hf_model)
    gated_pm = PruneModel(gated_model, tok, PruneConfig("gated", skip_threshold=0.0, available_compute=0.6))
    gated_pm.apply()
    gated = Decoder(gated_model)
    # identity model: layers >= E add nothing (zeroed output projections), so every draft is accepted
    ident_model = copy.deepcopy(hf_model)
    make_identity_layers(ident_model, range(E, L))
    ident = Decoder(ident_model)

    runners = {
        "hf_generate": hf_runner(hf_model, tok, device, T),
        "ours_autoregressive": our_runner(base, autoregressive, T),
        "ours_self_speculative": our_runner(base, self_speculative, T, exit_layer=E, num_speculations=d),
        "ours_early_exit": our_runner(base, autoregressive, T, exit_layer=E),
        "ours_pruned_autoregressive": our_runner(pruned, autoregressive, T),
        "ours_lowrank_autoregressive": our_runner(lowrank, autoregressive, T),
        "ours_gated_autoregressive": our_runner(gated, autoregressive, T),
        "identity_autoregressive": our_runner(ident, autoregressive, T),
        "identity_self_speculative": our_runner(ident, self_speculative, T, exit_layer=E, num_speculations=d),
        "identity_early_exit": our_runner(ident, autoregressive, T, exit_layer=E),
    }
    if not a.skip_hf_early_exit:
        runners["hf_assistant_early_exit"] = hf_runner(
            hf_model, tok, device, T, assistant_early_exit=E, num_assistant_tokens=d,
            num_assistant_tokens_schedule="constant", assistant_confidence_threshold=0.0)

    for name, run in runners.items():  # warm-up
        run(prompts[0][:64])
    stats = {name: {"tokens": 0, "seconds": 0.0, "decode_seconds": 0.0, "drafted": 0, "accepted": 0}
             for name in runners}
    outputs: dict[str, list[list[int]]] = {name: [] for name in runners}
    names = list(runners)
    for r in range(a.rounds):
        for i, prompt in enumerate(prompts):
            order = names[(r + i) % len(names):] + names[: (r + i) % len(names)]  # rotate to spread drift
            for name in order:
                tokens, seconds, res = runners[name](prompt)
                s = stats[name]
                s["tokens"] += len(tokens)
                s["seconds"] += seconds
                if res is not None:
                    s["decode_seconds"] += res.total_time - res.time_to_first_token
                    s["drafted"] += res.num_drafted
                    s["accepted"] += res.num_accepted
                if r == 0:
                    outputs[name].append(tokens)
            print(f"round {r + 1}/{a.rounds} prompt {i + 1}/{len(prompts)} done", file=sys.stderr)

    # share of generation time spent inside the layers angular pruning removed (measured on the base model)
    timer = LayerTimer(base.layers, device)
    t0 = time.perf_counter()
    for prompt in prompts:
        runners["ours_autoregressive"](prompt)
    total = time.perf_counter() - t0
    timer.remove()
    removed_share = sum(timer.total[i] for i in removed) / total

    tps = {n: s["tokens"] / s["seconds"] for n, s in stats.items()}
    dtpt = {n: s["decode_seconds"] / (s["tokens"] - len(prompts) * a.rounds)
            for n, s in stats.items() if s["decode_seconds"]}
    bandwidth = measure_bandwidth(device, base.dtype)
    bw = max(bandwidth.values())
    wbytes = weight_bytes_per_token(base.model)
    t_full, t_draft = dtpt["identity_autoregressive"], dtpt["identity_early_exit"]
    bound = (d + 1) * t_full / (d * t_draft + t_full)
    ident_speedup = tps["identity_self_speculative"] / tps["identity_autoregressive"]
    prune_speedup = tps["ours_pruned_autoregressive"] / tps["ours_autoregressive"]
    ideal_prune = 1 / (1 - removed_share)

    ratios = {
        "ours_autoregressive / hf_generate": tps["ours_autoregressive"] / tps["hf_generate"],
        "ours_self_speculative / ours_autoregressive": tps["ours_self_speculative"] / tps["ours_autoregressive"],
        f"angular pruned (n={a.prune_n}) / base": prune_speedup,
        "  ideal from removed-layer time share": ideal_prune,
        "  achieved fraction of ideal": prune_speedup / ideal_prune,
        "lowrank (rho=0.5) / base": tps["ours_lowrank_autoregressive"] / tps["ours_autoregressive"],
        "  targeted matrices: kept parameter fraction": lowrank_report["targeted_params_after"]
        / lowrank_report["targeted_params_before"],
        "gated (compute=0.6) / base": tps["ours_gated_autoregressive"] / tps["ours_autoregressive"],
        "  decode layer calls executed (fraction)": 1 - gated_pm.get_metrics()["decode_skip_ratio"],
        "identity model: self_speculative / autoregressive": ident_speedup,
        "  theoretical bound (d+1)t_full/(d t_draft + t_full)": bound,
        "  achieved fraction of bound": ident_speedup / bound,
        "decode bandwidth fraction (weight bytes/token / time per token / measured GB/s)":
            wbytes / dtpt["ours_autoregressive"] / 1e9 / bw,
    }
    if "hf_assistant_early_exit" in tps:
        ratios["ours_self_speculative / hf_assistant_early_exit"] = (
            tps["ours_self_speculative"] / tps["hf_assistant_early_exit"])
        ratios["hf_assistant_early_exit / hf_generate"] = tps["hf_assistant_early_exit"] / tps["hf_generate"]
    checks = {
        "ours_autoregressive == hf_generate (greedy tokens)": outputs["ours_autoregressive"] == outputs["hf_generate"],
        "ours_self_speculative == ours_autoregressive": outputs["ours_self_speculative"] == outputs["ours_autoregressive"],
        "identity self_speculative == identity autoregressive":
            outputs["identity_self_speculative"] == outputs["identity_autoregressive"],
    }
    rows = [[n, s["tokens"], f"{s['seconds']:.2f}", f"{tps[n]:.2f}",
             f"{s['accepted'] / s['drafted']:.3f}" if s["drafted"] else ""] for n, s in stats.items()]
    print(tabulate(rows, ["run", "tokens", "seconds", "tokens/s", "acceptance"], tablefmt="github"))
    print()
    print(tabulate([[k, f"{v:.3f}"] for k, v in ratios.items()], ["ratio", "value"], tablefmt="github"))
    print()
    print(tabulate([[k, v] for k, v in checks.items()], ["check", "ok"], tablefmt="github"))
    print(f"\ncontext: {loaded.name}, {L} layers, E={E}, d={d}, {len(prompts)} prompts x {a.rounds} rounds, "
          f"{T} tokens each, removed layers {removed} ({removed_share:.1%} of generation time), "
          f"one-row product bandwidth {bw:.1f} GB/s (torch nn.Linear {bandwidth['torch_linear']:.1f}, our "
          f"FewRowLinear {bandwidth['few_row_linear']:.1f}), {wbytes / 1e6:.0f} MB of weights read per token, "
          f"device {device}, dtype {base.dtype}")
    os.makedirs(a.out, exist_ok=True)
    path = os.path.join(a.out, f"speed_{datetime.datetime.now():%Y%m%d_%H%M%S}.json")
    with open(path, "w") as f:
        json.dump({"args": vars(a), "environment": environment(device, 1), "model": loaded.name,
                   "stats": stats, "tokens_per_second": tps, "decode_time_per_token": dtpt, "ratios": ratios,
                   "checks": checks, "removed_layers": removed, "removed_time_share": removed_share,
                   "bandwidth_gb_s": bandwidth, "weight_bytes_per_token": wbytes}, f, indent=1)
    print(f"wrote {path}")


if __name__ == "__main__":
    run_script(main)
