"""The runs bench/speed.py times: model variants (each built on first use, on its own copy, so a run that is not
asked for costs neither time nor memory: an 8B model has room for few copies), one runner per configuration
(`runner_factories`, chosen with --only), the time share of the layers angular pruning removes, and the two
bounds: the device's measured streaming bandwidth over the weight bytes, and one F.linear per weight matrix."""
from __future__ import annotations

import copy
import dataclasses
import time
import types
from functools import cached_property
from typing import Callable

import torch
from torch import nn

from layerbench.decoding import STRATEGIES, GenerationConfig
from layerbench.engine.compiled import compile_blocks
from layerbench.engine.engine import Engine, EngineOptions
from layerbench.engine.linear_kernels import bind_projection
from layerbench.engine.static_steps import install_static_steps
from layerbench.models.loading import LoadedModel
from layerbench.runs.graphs import capture_checked
from layerbench.surgery.config import PruneConfig
from layerbench.surgery.draft_vocabulary import choose_draft_vocabulary, install_draft_vocabulary
from layerbench.surgery.exit_adapter import fit_exit_adapter, install_exit_adapter
from layerbench.surgery.layers import make_identity_layers
from layerbench.surgery.prune_model import PruneModel
from runner import hf_runner, our_runner, pruned_copy, sync


class Variants:
    """The model variants the runs use, each built on first use on its own copy (no surgery leaks into another
    run); every engine computes its steps as benchmark.py would (exact mode in `rows`-row tiles, or off)."""

    def __init__(self, loaded: LoadedModel, calibration_ids: list[list[int]], a, exact_rows: int) -> None:
        self.loaded, self.calibration, self.a, self.rows = loaded, calibration_ids, a, exact_rows
        self.graph_status: dict[str, str] = {}

    @property
    def num_layers(self) -> int:
        return self.loaded.model.config.num_hidden_layers

    def engine(self, model: nn.Module, **options) -> Engine:
        return Engine(model, EngineOptions(exact_rows=self.rows, **options))

    def _copy(self, config: PruneConfig, calibrated: bool = False):
        return pruned_copy(self.loaded.model, self.loaded.tokenizer, config,
                           self.calibration if calibrated else None, self.a.dataset)

    @cached_property
    def base_engine(self) -> Engine:
        return self.engine(self.loaded.model)

    @cached_property
    def pruned(self) -> tuple[PruneModel, list[int]]:
        pm, report = self._copy(PruneConfig(method="angular", prune_n=self.a.prune_n), calibrated=True)
        return pm, report["removed_layers"]

    @cached_property
    def lowrank(self) -> tuple[PruneModel, dict]:
        return self._copy(PruneConfig(method="lowrank", compression_ratio=0.5))

    @cached_property
    def gated(self) -> PruneModel:
        return self._copy(PruneConfig(method="gated", skip_threshold=0.0, available_compute=0.6))[0]

    def identity_model(self, layers) -> nn.Module:
        """A copy whose `layers` add nothing (zeroed output maps): every draft that skips them is accepted."""
        model = copy.deepcopy(self.loaded.model)
        make_identity_layers(model, layers)
        return model

    @cached_property
    def identity(self) -> nn.Module:
        return self.identity_model(range(self.a.exit_layer, self.loaded.model.config.num_hidden_layers))

    @cached_property
    def adapted(self) -> tuple[PruneModel, dict]:
        pm, _ = self._copy(PruneConfig(method="base"), calibrated=True)
        report = install_exit_adapter(pm, fit_exit_adapter(pm, self.a.exit_layer))
        if self.a.draft_vocabulary:
            report["draft_vocabulary"] = install_draft_vocabulary(pm, choose_draft_vocabulary(
                pm, self.a.draft_vocabulary, {self.loaded.tokenizer.eos_token_id}))
        return pm, report


def layer_skip_config(engine: Engine, loaded: LoadedModel, skip: list[int], a) -> GenerationConfig:
    """The layer-skip strategy's settings for a draft that leaves out `skip` (original layers), through its own
    configure, as benchmark.py --draft_skip_layers would prepare them."""
    base = PruneModel(engine.model, loaded.tokenizer, PruneConfig())
    base.apply()
    flags = types.SimpleNamespace(max_steps=a.max_tokens, num_speculations=a.num_speculations,
                                  draft_skip_layers=",".join(map(str, skip)), draft_skip=None)
    return STRATEGIES["layer_skip_speculative"].configure(flags, base, engine, -1)


def fixed_step_runner(v: Variants, name: str, model: nn.Module, strategy: str, config: GenerationConfig,
                      prompts: list[list[int]], compiled: bool):
    """Our loop over fixed-shape steps prepared before timing: captured as CUDA graphs on CUDA (checked against
    their eager replay, as benchmark.py does), run eagerly elsewhere; with `compiled`, over compiled blocks.
    None when the capture fell back (its status is kept in v.graph_status)."""
    engine = v.engine(model)
    if compiled:
        compile_blocks(engine)
    capacity = STRATEGIES[strategy].capacity(max(map(len, prompts)), config)
    shapes = STRATEGIES[strategy].static_shapes(engine, config)
    check = our_runner(engine, strategy, dataclasses.replace(config, max_steps=16))
    if engine.device.type == "cuda":
        v.graph_status[name] = capture_checked(engine, capacity, shapes, "cuda", lambda: check(prompts[0])[0])
        if engine.static is None:
            return None
    else:
        install_static_steps(engine, capacity, shapes, "eager")
        check(prompts[0])  # compiles every step before timing
    return our_runner(engine, strategy, config)


def runner_factories(v: Variants, prompts: list[list[int]], a) -> dict[str, Callable[[], Callable | None]]:
    """Every run speed.py knows, by name -> a factory that builds its runner (and the variant it needs)."""
    loaded, T, E, d = v.loaded, a.max_tokens, a.exit_layer, a.num_speculations
    ar = GenerationConfig(max_steps=T)
    ss = GenerationConfig(max_steps=T, exit_block=E, num_speculations=d)
    ee = GenerationConfig(max_steps=T, exit_block=E)
    cuda = loaded.model.device.type == "cuda"
    base = loaded.model
    f = {
        "hf_generate": lambda: hf_runner(base, loaded.tokenizer, T),
        "ours_autoregressive": lambda: our_runner(v.base_engine, "autoregressive", ar),
        "ours_autoregressive_torch_kernel": lambda: our_runner(v.engine(base, linear_kernel="torch"),
                                                               "autoregressive", ar),
        "ours_self_speculative": lambda: our_runner(v.base_engine, "self_speculative", ss),
        "ours_self_speculative_adapter": lambda: our_runner(
            v.engine(v.adapted[0].model), "self_speculative", dataclasses.replace(ss, draft_confidence=a.draft_confidence)),
        "ours_early_exit": lambda: our_runner(v.base_engine, "autoregressive", ee),
        "ours_pruned_autoregressive": lambda: our_runner(v.engine(v.pruned[0].model), "autoregressive", ar),
        "ours_lowrank_autoregressive": lambda: our_runner(v.engine(v.lowrank[0].model), "autoregressive", ar),
        "ours_gated_autoregressive": lambda: our_runner(v.gated.attach(Engine(v.gated.model)), "autoregressive", ar),
        "identity_autoregressive": lambda: our_runner(v.engine(v.identity), "autoregressive", ar),
        "identity_self_speculative": lambda: our_runner(v.engine(v.identity), "self_speculative", ss),
        "identity_early_exit": lambda: our_runner(v.engine(v.identity), "autoregressive", ee),
        "ours_layer_skip_speculative": lambda: layer_skip_runner(v, base, a),
        "identity_layer_skip_speculative": lambda: layer_skip_runner(v, v.identity_model(v.pruned[1]), a),
        "ours_autoregressive_compiled": lambda: fixed_step_runner(v, "ours_autoregressive_compiled", base,
                                                                  "autoregressive", ar, prompts, True),
        "ours_self_speculative_compiled": lambda: fixed_step_runner(v, "ours_self_speculative_compiled", base,
                                                                    "self_speculative", ss, prompts, True),
    }
    if not a.skip_hf_early_exit:
        f["hf_assistant_early_exit"] = lambda: hf_runner(
            base, loaded.tokenizer, T, assistant_early_exit=E, num_assistant_tokens=d,
            num_assistant_tokens_schedule="constant", assistant_confidence_threshold=0.0)
    if cuda:
        f.update(cuda_factories(v, prompts, a, ar, ss, ee))
    return f


def cuda_factories(v: Variants, prompts, a, ar, ss, ee) -> dict[str, Callable[[], Callable | None]]:
    """The runs only a GPU has: HF with flash attention forced and HF's static cache + torch.compile recipe; our
    loops over captured CUDA graphs, plain and over compiled blocks (base, identity and pruned models)."""
    loaded, base = v.loaded, v.loaded.model

    def graphs(name, model, strategy, config, compiled=False):
        return lambda: fixed_step_runner(v, name, model(), strategy, config, prompts, compiled)
    return {
        "hf_generate_flash": lambda: hf_runner(base, loaded.tokenizer, a.max_tokens,
                                               torch.nn.attention.SDPBackend.FLASH_ATTENTION),
        "hf_generate_static_compiled": lambda: hf_static_compiled_runner(loaded, a.max_tokens),
        "ours_autoregressive_graphs": graphs("ours_autoregressive_graphs", lambda: base, "autoregressive", ar),
        "ours_self_speculative_graphs": graphs("ours_self_speculative_graphs", lambda: base, "self_speculative", ss),
        "ours_early_exit_graphs_compiled": graphs("ours_early_exit_graphs_compiled", lambda: base, "autoregressive",
                                                  ee, True),
        "ours_autoregressive_graphs_compiled": graphs("ours_autoregressive_graphs_compiled", lambda: base,
                                                      "autoregressive", ar, True),
        "ours_self_speculative_graphs_compiled": graphs("ours_self_speculative_graphs_compiled", lambda: base,
                                                        "self_speculative", ss, True),
        "ours_pruned_autoregressive_graphs_compiled": graphs("ours_pruned_autoregressive_graphs_compiled",
                                                             lambda: v.pruned[0].model, "autoregressive", ar, True),
        "identity_autoregressive_graphs_compiled": graphs("identity_autoregressive_graphs_compiled",
                                                          lambda: v.identity, "autoregressive", ar, True),
        "identity_early_exit_graphs_compiled": graphs("identity_early_exit_graphs_compiled", lambda: v.identity,
                                                      "autoregressive", ee, True),
        "identity_self_speculative_graphs_compiled": graphs("identity_self_speculative_graphs_compiled",
                                                            lambda: v.identity, "self_speculative", ss, True),
    }


def layer_skip_runner(v: Variants, model: nn.Module, a):
    """The layer-skip draft leaves out the layers angular pruning would remove (when it keeps the first one)."""
    removed = v.pruned[1]
    if min(removed) == 0:
        return None
    engine = v.engine(model)
    return our_runner(engine, "layer_skip_speculative", layer_skip_config(engine, v.loaded, removed, a))


def hf_static_compiled_runner(loaded: LoadedModel, tokens: int):
    """HF's documented fast path: a static cache and torch.compile of the forward ("reduce-overhead"), on a
    shallow copy of the model (the same weights; the other HF runs keep the plain forward)."""
    model = copy.copy(loaded.model)
    model.forward = torch.compile(model.forward, mode="reduce-overhead", fullgraph=True)
    return hf_runner(model, loaded.tokenizer, tokens, cache_implementation="static")


def build_runners(v: Variants, prompts: list[list[int]], a, only: list[str] | None) -> dict:
    """The runners of the runs asked for (--only; all by default) that this device and model allow."""
    factories = runner_factories(v, prompts, a)
    unknown = sorted(set(only or ()) - set(factories))
    if unknown:
        raise ValueError(f"--only: unknown or unavailable here: {', '.join(unknown)}; known: {', '.join(factories)}")
    runners = {name: factory() for name, factory in factories.items() if not only or name in only}
    return {name: run for name, run in runners.items() if run is not None}


class _TimedBlock:
    """A block that adds its own wall time (synchronized on CUDA) to totals[index]."""

    def __init__(self, block, index: int, totals: list[float], device: torch.device) -> None:
        self.block, self.index, self.totals, self.device = block, index, totals, device

    def __getattr__(self, name):
        return getattr(self.block, name)

    def __call__(self, x, step, compute=None):
        sync(self.device)
        t0 = time.perf_counter()
        out = self.block(x, step, compute)
        sync(self.device)
        self.totals[self.index] += time.perf_counter() - t0
        return out


def removed_time_share(engine: Engine, runner, prompts: list[list[int]], removed: list[int]) -> float:
    """Share of base-model generation time spent inside the blocks at `removed` positions."""
    blocks = engine.blocks
    totals = [0.0] * len(blocks)
    engine.blocks = [_TimedBlock(b, i, totals, engine.device) for i, b in enumerate(blocks)]
    try:
        t0 = time.perf_counter()
        for prompt in prompts:
            runner(prompt)
        total = time.perf_counter() - t0
    finally:
        engine.blocks = blocks
    return sum(totals[i] for i in removed) / total


def weight_linears(engine: Engine) -> list[nn.Linear]:
    """Every weight matrix a decode step reads: the layers' linear maps and the LM head (the embedding table is
    read one row per token and left out unless it is the head)."""
    layers = [m for layer in engine.family.layers(engine.model) for m in layer.modules() if type(m) is nn.Linear]
    return layers + [engine.family.head(engine.model)]


def best_seconds(step: Callable[[], object], device: torch.device, reps: int) -> float:
    best = float("inf")
    for _ in range(reps + 2):
        sync(device)
        t0 = time.perf_counter()
        step()
        sync(device)
        best = min(best, time.perf_counter() - t0)
    return best


@torch.inference_mode()
def streaming_bound(engine: Engine, reps: int = 20) -> dict:
    """Tokens/s if a decode step only read the model's weight bytes at the device's measured streaming
    bandwidth: the best of `reps` full reads (a sum) of a buffer as large as those weights. A device-to-device
    copy of it is measured too (read + write counted)."""
    nbytes = sum(m.weight.numel() * m.weight.element_size() for m in weight_linears(engine))
    buffer = torch.ones(nbytes // 4, dtype=torch.float32, device=engine.device)
    target = torch.empty_like(buffer)
    read = best_seconds(buffer.sum, engine.device, reps)
    copy_seconds = best_seconds(lambda: target.copy_(buffer), engine.device, reps)
    return {"tokens_per_second": 1 / read, "seconds_per_token": read, "bytes_per_token": nbytes,
            "read_gb_per_s": nbytes / read / 1e9, "copy_gb_per_s (read + write)": 2 * nbytes / copy_seconds / 1e9,
            "how": f"sum over a {nbytes / 1e9:.2f} GB float32 buffer, best of {reps}"}


@torch.inference_mode()
def linear_per_matrix_bound(engine: Engine, reps: int = 20) -> dict:
    """Tokens/s if a decode step did nothing but one matrix-vector product over every weight matrix of the model,
    with the engine's linear kernel; on CUDA the products are replayed as one CUDA graph. What F.linear itself
    streams, not what the device can."""
    linears = weight_linears(engine)
    projections = [bind_projection(m, engine.kernel) for m in linears]
    inputs = [torch.randn(1, 1, m.in_features, device=engine.device, dtype=engine.dtype) for m in linears]
    nbytes = sum(m.weight.numel() * m.weight.element_size() for m in linears)

    def one_pass():
        for p, x in zip(projections, inputs):
            p(x)
    how, step = f"{engine.linear_kernel} kernel, best of {reps}", one_pass
    if engine.device.type == "cuda":
        one_pass()
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            one_pass()
        step, how = graph.replay, f"one CUDA graph, best of {reps}"
    best = best_seconds(step, engine.device, reps)
    return {"tokens_per_second": 1 / best, "seconds_per_token": best, "bytes_per_token": nbytes,
            "gb_per_s": nbytes / best / 1e9, "how": how}
