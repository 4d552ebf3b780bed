"""Where a decode step's time goes: torch.profiler over autoregressive decoding of one prompt with our engine, per
way of computing the steps (eager; fixed-shape steps; over compiled blocks; on CUDA over captured graphs, plain
and compiled), the kernel time grouped by kind (matrix products, attention, norms, rotary and other elementwise
work, cache writes and copies), beside the wall time per token.

    python -m bench profile --max_tokens 32                       # CPU: operator self time
    python -m bench profile --model /tmp/models/m1b --dtype bfloat16 --device cuda   # GPU: kernel time

On CUDA the device time of every kernel (graph replays included) is summed; on a CPU the operators' self time.
The difference between wall time and kernel time per token is what the host adds (launches, Python, sync).
"""
from __future__ import annotations

import argparse
import time

from doc_tables import Section, environment_line, table
from layerbench.errors import OneLineArgumentParser, run_script
from layerbench.lazy import lazy
from runner import add_model_and_prompt_flags, load_prompts, our_runner, sync, write_result

torch = lazy("torch")

# kernel or operator name fragment -> kind (first match wins; lower case)
KINDS = (
    ("attention", ("flash", "fmha", "attention", "sdpa", "softmax", "_efficient_attention")),
    ("matrix products", ("gemm", "gemv", "cutlass", "xmma", "cublas", "aten::mm", "aten::addmm", "aten::linear",
                         "aten::matmul", "aten::bmm", "mkldnn", "aten::baddbmm", "splitk")),
    ("cache writes and copies", ("index_copy", "indexcopy", "copy", "memcpy", "memset", "aten::cat", "catarray",
                                 "aten::to", "aten::clone", "contiguous")),
    ("norms and reductions", ("rsqrt", "mean", "reduce", "aten::pow", "aten::sum", "norm")),
    ("compiled (fused) blocks", ("triton", "cpp_fused", "compiledfunction", "inductor")),
    ("elementwise", ("elementwise", "vectorized", "aten::mul", "aten::add", "aten::sub", "aten::silu", "aten::neg",
                     "aten::cos", "aten::sin", "aten::where", "aten::tanh", "aten::gelu", "aten::div", "aten::fill")),
)


def kind_of(name: str) -> str:
    low = name.lower()
    return next((kind for kind, fragments in KINDS if any(f in low for f in fragments)), "other")


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    ap = OneLineArgumentParser(description=__doc__.split("\n\n")[0])
    groups = add_model_and_prompt_flags(ap, samples=1, max_tokens=32, rounds=1)
    groups["timing"].add_argument("--exact", default="auto", choices=("auto", "on", "off"),
                                  help="exact mode, as benchmark.py --exact (auto: on in bfloat16 and float16)")
    groups["timing"].add_argument("--no_compile", action="store_true", help="leave out the compiled configurations")
    groups["timing"].add_argument("--out", default=None, help="folder for profile_<timestamp>.json (default: "
                                                              "results/<cpu|gpu>)")
    return ap.parse_args(argv)


def configurations(model, rows: int, prompt_length: int, max_tokens: int, compile_too: bool) -> dict:
    """Name -> a runner of greedy autoregressive decoding, each over its own engine, prepared (and compiled or
    captured) here."""
    from layerbench.decoding import STRATEGIES, GenerationConfig
    from layerbench.engine.compiled import compile_blocks
    from layerbench.engine.engine import Engine, EngineOptions
    from layerbench.engine.static_steps import install_static_steps
    config = GenerationConfig(max_steps=max_tokens)
    cuda = next(model.parameters()).device.type == "cuda"
    out = {"eager": our_runner(Engine(model, EngineOptions(exact_rows=rows)), "autoregressive", config)}
    modes = [("fixed-shape steps", "eager", False)] + ([("compiled blocks", "eager", True)] if compile_too else [])
    if cuda:
        modes += [("CUDA graphs", "cuda", False)] + ([("CUDA graphs, compiled blocks", "cuda", True)]
                                                    if compile_too else [])
    for name, mode, compiled in modes:
        engine = Engine(model, EngineOptions(exact_rows=rows))
        if compiled:
            compile_blocks(engine)
        install_static_steps(engine, prompt_length + max_tokens + 8,
                             STRATEGIES["autoregressive"].static_shapes(engine, config), mode)
        out[name] = our_runner(engine, "autoregressive", config)
    return out


def profile(run, prompt: list[int], device) -> dict:
    """Wall seconds per token and kernel (CUDA) or operator self (CPU) seconds per token by kind."""
    from torch.profiler import ProfilerActivity
    run(prompt)  # warm: compile, allocate
    sync(device)
    t0 = time.perf_counter()
    tokens, _, _ = run(prompt)
    sync(device)
    wall = (time.perf_counter() - t0) / len(tokens)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with torch.profiler.profile(activities=activities) as prof:
        t0 = time.perf_counter()
        tokens, _, _ = run(prompt)
        sync(device)
        profiled = (time.perf_counter() - t0) / len(tokens)
    kinds: dict[str, float] = {}
    for event in prof.key_averages():
        seconds = (event.self_device_time_total if device.type == "cuda" else event.self_cpu_time_total) / 1e6
        if seconds > 0 and (device.type != "cuda" or event.device_type.name == "CUDA"):
            kinds[kind_of(event.key)] = kinds.get(kind_of(event.key), 0.0) + seconds / len(tokens)
    return {"wall_ms_per_token": wall * 1e3, "profiled_wall_ms_per_token": profiled * 1e3,
            "kernel_ms_per_token": sum(kinds.values()) * 1e3,
            "by_kind_ms_per_token": {k: v * 1e3 for k, v in sorted(kinds.items(), key=lambda kv: -kv[1])}}


def main(argv: list[str] | None = None) -> None:
    a = parse(argv)
    from layerbench.models.loading import load_model
    from layerbench.runs.step_modes import HALF_PRECISION
    from layerbench.engine.exact import ROWS
    loaded = load_model(a.model, a.dtype, a.device)
    device = next(loaded.model.parameters()).device
    prompts, _ = load_prompts(a, loaded.tokenizer)
    rows = ROWS if a.exact == "on" or (a.exact == "auto" and loaded.model.dtype in HALF_PRECISION) else 0
    with torch.inference_mode():
        runs = configurations(loaded.model, rows, len(prompts[0]), a.max_tokens, not a.no_compile)
        result = {name: profile(run, prompts[0], device) for name, run in runs.items()}
    for name, r in result.items():
        print(f"{name}: {r['wall_ms_per_token']:.2f} ms/token wall ({r['profiled_wall_ms_per_token']:.2f} profiled), "
              f"{r['kernel_ms_per_token']:.2f} in kernels: "
              + ", ".join(f"{k} {v:.2f}" for k, v in r["by_kind_ms_per_token"].items()))
    doc = {"command": "python -m bench profile " + " ".join(argv or []), "model": loaded.name,
           "dtype": str(loaded.model.dtype), "exact_rows": rows, "prompt_tokens": len(prompts[0]),
           "max_tokens": a.max_tokens, "configurations": result}
    write_result(a.out or f"results/{'gpu' if device.type == 'cuda' else 'cpu'}", "profile", doc, device)


def render(files: list[tuple[str, dict]]) -> str:
    parts = []
    for path, doc in files:
        kinds = list(dict.fromkeys(k for r in doc["configurations"].values() for k in r["by_kind_ms_per_token"]))
        rows = [[name, f"{r['wall_ms_per_token']:.2f}", f"{r.get('profiled_wall_ms_per_token', 0):.2f}",
                 f"{r['kernel_ms_per_token']:.2f}",
                 *(f"{r['by_kind_ms_per_token'].get(k, 0):.2f}" for k in kinds)]
                for name, r in doc["configurations"].items()]
        parts.append(f"{doc['model']}, {doc['dtype']}, exact rows {doc['exact_rows']}, {doc['prompt_tokens']}-token "
                     f"prompt ({environment_line(doc)}), ms per token:\n\n"
                     + table(rows, ["steps", "wall", "wall while profiled", "in kernels", *kinds], floatfmt=".2f"))
    return "\n\n".join(parts)


SECTION = Section("Where a decode step's time goes (bench/profile_step.py)", "*/profile_*.json",
                  "python -m bench profile --max_tokens 32",
                  "torch.profiler over greedy autoregressive decoding: operator self time on a CPU, kernel time on "
                  "CUDA, grouped by kind, beside the wall time per token.", render)


if __name__ == "__main__":
    run_script(main)
