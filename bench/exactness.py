"""Exact mode, measured: per kernel, whether a row's result depends on how many rows the call has (and, in exact
mode's fixed tiles, on where the row sits); per decoding path, how many greedy predictions equal autoregressive
decoding's with exact mode off and on; and what exact mode costs against the fastest path without it, runs
alternated in ONE process.

    python -m bench exactness --dtypes bfloat16 float16 float32 --samples 10 --max_tokens 128

The paths: self-speculative decoding at each --settings E:d, layer-skip speculation (the draft skips
--draft_skip_layers), fixed-shape steps (what `--cuda_graphs static` runs, and a captured graph replays), a model
loaded with `--device_map auto`, on CUDA autoregressive and self-speculative decoding over captured graphs, and
(--compile) compiled blocks. Each is compared with autoregressive decoding computed the same way (exact mode off
with off, on with on; compiled paths with compiled autoregressive decoding, which is compared with eager).
"""
from __future__ import annotations

import argparse
import copy
import os

from doc_tables import Section, environment_line, table
from layerbench.decoding.layer_skip_speculative import LayerSkipSettings, parse_layers
from layerbench.errors import OneLineArgumentParser, UsageError, run_script
from layerbench.lazy import lazy
from runner import add_model_and_prompt_flags, load_prompts, our_runner, run_alternating, write_result

torch = lazy("torch")
COMPILED_AR = "compiled autoregressive (against eager)"


def setting(text: str) -> tuple[int, int]:
    e, _, d = text.partition(":")
    if not (e.isdigit() and d.isdigit() and int(e) > 0 and int(d) > 0):
        raise argparse.ArgumentTypeError(f"expected E:d with positive integers, got {text!r}")
    return int(e), int(d)


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    ap = OneLineArgumentParser(description=__doc__.split("\n\n")[0])
    groups = add_model_and_prompt_flags(ap, samples=10, max_tokens=128, rounds=1)
    paths = ap.add_argument_group("paths")
    paths.add_argument("--dtypes", nargs="+", default=["bfloat16", "float32"],
                       choices=("bfloat16", "float16", "float32"), help="(default: bfloat16 float32)")
    paths.add_argument("--settings", nargs="+", type=setting, default=[(10, 3), (15, 4), (20, 6)],
                       help="self-speculative E:d settings (default: 10:3 15:4 20:6); the first d+1 <= 8 one is timed")
    paths.add_argument("--draft_skip_layers", default="18-23", help="layers the layer-skip draft skips (default: "
                                                                    "18-23)")
    paths.add_argument("--modes", nargs="+", default=["off", "on"], choices=("off", "on"),
                       help="exact modes whose agreement is measured (default: off on; the cost is always timed)")
    paths.add_argument("--skip_timing", action="store_true", help="measure agreement only, not exact mode's cost")
    paths.add_argument("--compile", action="store_true", help="also compiled blocks (slow to compile on a CPU)")
    groups["timing"].add_argument("--out", default=None, help="folder for exactness_<timestamp>.json (default: "
                                                             "results/<cpu|gpu>)")
    a = ap.parse_args(argv)
    try:
        a.skipped = parse_layers(a.draft_skip_layers)
    except UsageError as exc:
        ap.error(str(exc))
    return a


def rows_differing(kernel, x, rows: int) -> dict[str, int]:
    """Rows whose result differs (bitwise) from the row computed alone: in calls of 2..rows rows (no padding), and
    in exact mode's tiles of `rows` rows at every offset with other rows beside it."""
    from layerbench.engine.exact import pad_rows
    alone = [kernel(x[:, r:r + 1])[:, 0] for r in range(rows)]
    unpadded = sum(not torch.equal(kernel(x[:, :n])[:, r], alone[r]) for n in range(2, rows + 1) for r in range(n))
    alone_tiled = [kernel(pad_rows(x[:, r:r + 1], rows))[:, 0] for r in range(x.shape[1])]
    tiled = 0
    for shift in range(rows):
        out = kernel(torch.roll(x, shift, dims=1)[:, :rows])
        tiled += sum(not torch.equal(out[:, i], alone_tiled[(i - shift) % x.shape[1]]) for i in range(rows))
    return {"rows differing, unpadded calls of 2..R rows": unpadded, "rows differing, R-row tiles": tiled}


def kernel_probes(engine) -> dict[str, dict[str, int]]:
    """rows_differing for the engine's own kernels on its own weights (first layer, head), and for attention over
    the span an eager decode reads against the whole cache under a mask (what a fixed-shape step reads)."""
    from layerbench.engine.attention import attend, visible
    from layerbench.engine.exact import ROWS
    torch.manual_seed(0)
    block, dtype = engine.blocks[0], engine.dtype
    d = engine.embed_weight.shape[1]
    x = torch.randn(1, 2 * ROWS, d).to(dtype)
    probes = {"q/k/v projection": block.qkv[0], "attention output projection": block.o_proj,
              "LM head": engine.head, "attention norm": block.attn_norm,
              "MLP (up, gate, down)": block.mlp}
    out = {name: rows_differing(fn, x, ROWS) for name, fn in probes.items()}
    keys, values = (torch.randn(1, block.kv_heads, 256, block.head_dim).to(dtype) for _ in range(2))
    q = torch.randn(1, 2 * ROWS, block.heads * block.head_dim).to(dtype)

    def attention(qs):  # every query sees keys 0..99: the span an eager step reads, or the whole cache masked
        heads = qs.view(1, qs.shape[1], block.heads, block.head_dim).transpose(1, 2)
        mask = visible(torch.full((qs.shape[1],), 99), torch.arange(256), None)
        return attend(heads, keys, values, block.scale, mask).transpose(1, 2).flatten(2)
    out["attention, whole cache under a mask"] = rows_differing(attention, q, ROWS)
    span = attend(q[:, :1].view(1, 1, block.heads, -1).transpose(1, 2), keys[:, :, :100], values[:, :, :100],
                  block.scale, None)
    out["attention, whole cache under a mask"]["differs from the eager span [0, 100)"] = int(
        not torch.equal(span.transpose(1, 2).flatten(2)[:, 0], attention(q[:, :1])[:, 0]))
    return out


def layer_skip_config(engine, a, max_steps: int):
    from layerbench.decoding import GenerationConfig
    skipped = [b for b in a.skipped if b < engine.num_blocks]
    first = skipped[0]
    segments = [(b, b + 1) for b in range(first, engine.num_blocks) if b not in skipped]
    return GenerationConfig(max_steps=max_steps, exit_block=first, num_speculations=4, settings=LayerSkipSettings(
        skipped_layers=skipped, skipped_blocks=skipped, shared_blocks=first, draft_segments=segments,
        chosen_by="--draft_skip_layers"))


def path_runners(model, mapped, a, rows: int, longest: int) -> dict:
    """Every path of one exact mode (rows = 0: off), keyed by name; `autoregressive` is the reference. Every
    engine's cache is sized once for the longest prompt, as benchmark.py's preparation does."""
    from layerbench.decoding import STRATEGIES, GenerationConfig
    from layerbench.engine.compiled import compile_blocks
    from layerbench.engine.engine import Engine, EngineOptions
    from layerbench.engine.static_steps import install_static_steps
    options = EngineOptions(exact_rows=rows)
    engine, n = Engine(model, options), a.max_tokens
    ar = GenerationConfig(max_steps=n)
    capacity = STRATEGIES["autoregressive"].capacity(longest, ar)

    def sized(e: Engine) -> Engine:
        e.new_cache(capacity)
        return e
    sized(engine)
    runners = {"autoregressive": our_runner(engine, "autoregressive", ar)}
    for e, d in a.settings:
        runners[f"self_speculative E={e} d={d}"] = our_runner(
            engine, "self_speculative", GenerationConfig(max_steps=n, exit_block=e, num_speculations=d))
    runners["layer_skip_speculative"] = our_runner(engine, "layer_skip_speculative", layer_skip_config(engine, a, n))
    static = Engine(model, options)
    install_static_steps(static, capacity, STRATEGIES["autoregressive"].static_shapes(static, ar), "eager")
    runners["fixed-shape steps (--cuda_graphs static)"] = our_runner(static, "autoregressive", ar)
    runners["--device_map auto"] = our_runner(sized(Engine(mapped, options)), "autoregressive", ar)
    if engine.device.type == "cuda":  # the same steps captured as CUDA graphs, replayed
        e, d = a.settings[0]
        for strategy, config in (("autoregressive", ar),
                                 ("self_speculative", GenerationConfig(max_steps=n, exit_block=e, num_speculations=d))):
            graphed = Engine(model, options)
            install_static_steps(graphed, capacity, STRATEGIES[strategy].static_shapes(graphed, config), "cuda")
            label = strategy if strategy == "autoregressive" else f"{strategy} E={e} d={d}"
            runners[f"CUDA graphs: {label}"] = our_runner(graphed, strategy, config)
    if a.compile:  # compiled blocks: autoregressive against the eager one, the others against it
        compiled = sized(Engine(model, options))
        compile_blocks(compiled)
        e, d = a.settings[0]
        ss = GenerationConfig(max_steps=n, exit_block=e, num_speculations=d)
        install_static_steps(compiled, capacity, STRATEGIES["autoregressive"].static_shapes(compiled, ar)
                             + STRATEGIES["self_speculative"].static_shapes(compiled, ss), "eager")
        runners[COMPILED_AR] = our_runner(compiled, "autoregressive", ar)
        runners[f"compiled self_speculative E={e} d={d}"] = our_runner(compiled, "self_speculative", ss)
    return runners


def agreement(outputs: dict[str, list[list[int]]]) -> dict[str, dict]:
    """Per path: predictions identical to autoregressive decoding's (computed the same way: a compiled path against
    compiled autoregressive decoding), and the mean first differing token."""
    out = {}
    for name, tokens in outputs.items():
        if name == "autoregressive":
            continue
        reference = outputs[COMPILED_AR if name.startswith("compiled ") and name != COMPILED_AR else "autoregressive"]
        firsts = [next((i for i, (x, y) in enumerate(zip(t, r)) if x != y), min(len(t), len(r)))
                  for t, r in zip(tokens, reference) if t != r]
        out[name] = {"identical": len(reference) - len(firsts), "samples": len(reference),
                     "mean_first_difference_token": sum(firsts) / len(firsts) if firsts else None}
    return out


def exact_cost(model, mapped, prompts, a, longest: int) -> dict:
    """Tokens/s of autoregressive and self-speculative decoding with exact mode off and on, alternated."""
    e, d = next(((e, d) for e, d in a.settings if d + 1 <= 8), a.settings[0])
    timed = {}
    for mode, rows in (("off", 0), ("on", 8)):
        runners = path_runners(model, mapped, argparse.Namespace(**{**vars(a), "settings": [(e, d)], "compile": False}),
                               rows, longest)
        timed[f"autoregressive, exact {mode}"] = runners["autoregressive"]
        timed[f"self_speculative E={e} d={d}, exact {mode}"] = runners[f"self_speculative E={e} d={d}"]
    stats, _ = run_alternating(timed, prompts, a.rounds)
    tps = {name: s.tokens_per_second for name, s in stats.items()}
    ratios = {f"{strategy}: exact on / off": tps[f"{strategy}, exact on"] / tps[f"{strategy}, exact off"]
              for strategy in ("autoregressive", f"self_speculative E={e} d={d}")}
    return {"tokens_per_second": tps, "ratios": ratios}


def one_dtype(loaded, mapped, prompts, a, dtype: str) -> dict:
    from layerbench.engine.engine import Engine
    model = copy.deepcopy(loaded.model).to(getattr(torch, dtype))
    mapped = copy.deepcopy(mapped).to(getattr(torch, dtype))
    result = {"kernels": None, "agreement": {}, "tokens_per_second": {}, "ratios": {}}
    longest = max(len(p) for p in prompts)
    with torch.inference_mode():
        result["kernels"] = kernel_probes(Engine(model))
        for mode, rows in (m for m in (("off", 0), ("on", 8)) if m[0] in a.modes):
            _, outputs = run_alternating(path_runners(model, mapped, a, rows, longest), prompts, 1)
            result["agreement"][mode] = agreement(outputs)
        if not a.skip_timing:
            result.update(exact_cost(model, mapped, prompts, a, longest))
    return result


def main(argv: list[str] | None = None) -> None:
    a = parse(argv)
    from layerbench.models.loading import load_model
    loaded = load_model(a.model, "float32", a.device)
    mapped = load_model(a.model, "float32", a.device, device_map="auto").model
    prompts, _ = load_prompts(a, loaded.tokenizer)
    results = {dtype: one_dtype(loaded, mapped, prompts, a, dtype) for dtype in a.dtypes}
    device = loaded.model.device
    doc = {"command": "python -m bench exactness " + " ".join(argv if argv is not None else []),
           "settings": {"samples": a.samples, "max_tokens": a.max_tokens, "rounds": a.rounds,
                        "self_speculative": a.settings, "draft_skip_layers": a.skipped, "tile_rows": 8},
           "results": results}
    write_result(a.out or f"results/{'gpu' if device.type == 'cuda' else 'cpu'}", "exactness", doc, device)


def agreement_cell(a: dict | None) -> str:
    if a is None:
        return "not run"
    first = a["mean_first_difference_token"]
    cell = f"{a['identical']}/{a['samples']}"
    return cell if first is None else f"{cell} (first difference at token {first:.1f})"


# written before the fix that sizes every engine's cache for the longest prompt, as benchmark.py does
OWN_CACHE_SIZES = ("exactness_20261206_041840.json",)
OWN_CACHE_NOTE = ("In this file the fixed-shape and compiled paths ran over a 4096-position cache and the others over "
                  "caches sized per prompt: another key span for masked attention, which is what parts the fixed-shape "
                  "path here (exact mode now fixes the key span, and this experiment sizes every cache once).")


def render(files: list[tuple[str, dict]]) -> str:
    parts = []
    for path, doc in files:
        if os.path.basename(path) in OWN_CACHE_SIZES:
            parts.append(OWN_CACHE_NOTE)
        for dtype, r in doc["results"].items():
            paths = list(dict.fromkeys(p for mode in r["agreement"].values() for p in mode))
            rows = [[p, *(agreement_cell(r["agreement"].get(m, {}).get(p)) for m in ("off", "on"))] for p in paths]
            parts.append(f"**{dtype}** (`{doc['command']}`, {os.path.basename(path)}; {environment_line(doc)}): "
                         "predictions identical to autoregressive decoding\n\n"
                         + table(rows, ["path", "exact off", "exact on"]))
            kernels = [[k, *v.values()] for k, v in r["kernels"].items()]
            parts.append(table(kernels, ["kernel", *next(iter(r["kernels"].values())).keys()]))
            speed = [[k, f"{v:.2f}"] for k, v in r["tokens_per_second"].items()] + \
                    [[k, f"{v:.3f}"] for k, v in r["ratios"].items()]
            if speed:
                parts.append(table(speed, ["timed (tokens/s, alternated in one process)", "value"]))
    return "\n\n".join(parts)


SECTION = Section("Exact mode: agreement with autoregressive decoding, per-kernel row invariance, cost "
                  "(bench/exactness.py)", "*/exactness_*.json",
                  "python -m bench exactness --dtypes bfloat16 --samples 10 --max_tokens 128 --compile (exact off and "
                  "on, cost); then, every cache sized once: --dtypes bfloat16 --modes on --skip_timing, and --dtypes "
                  "float16 --modes on --skip_timing --settings 15:4",
                  "Each path's greedy predictions against autoregressive decoding computed the same way, with exact "
                  "mode off and on; each kernel's rows computed in calls of several rows against alone; and tokens/s "
                  "with exact mode on and off, alternated in one process.", render)


if __name__ == "__main__":
    run_script(main)
