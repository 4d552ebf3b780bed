"""The runs bench/speed.py times: model variants, one runner per configuration, the time share of the layers
angular pruning removes, and the weight-streaming bound."""
from __future__ import annotations

import copy
import dataclasses
import time
import types

import torch
from torch import nn

from layerbench.decoding import STRATEGIES, GenerationConfig
from layerbench.engine.engine import Engine, EngineOptions
from layerbench.engine.linear_kernels import bind_projection
from layerbench.models.loading import LoadedModel
from layerbench.surgery.config import PruneConfig
from layerbench.surgery.draft_vocabulary import choose_draft_vocabulary, install_draft_vocabulary
from layerbench.surgery.exit_adapter import fit_exit_adapter, install_exit_adapter
from layerbench.surgery.layers import make_identity_layers
from layerbench.surgery.prune_model import PruneModel
from runner import our_runner, hf_runner, pruned_copy, sync


def build_variants(loaded: LoadedModel, calibration_ids: list[list[int]], a) -> dict:
    """Every model variant, each on its own copy (so no surgery leaks into another run)."""
    model, tok = loaded.model, loaded.tokenizer
    L, E = model.config.num_hidden_layers, a.exit_layer
    pruned, report = pruned_copy(model, tok, PruneConfig(method="angular", prune_n=a.prune_n), calibration_ids,
                                 a.dataset)
    removed = report["removed_layers"]
    lowrank, lowrank_report = pruned_copy(model, tok, PruneConfig(method="lowrank", compression_ratio=0.5))
    gated, _ = pruned_copy(model, tok, PruneConfig(method="gated", skip_threshold=0.0, available_compute=0.6))
    identity = copy.deepcopy(model)  # layers >= E add nothing (zeroed output maps), so every draft is accepted
    make_identity_layers(identity, range(E, L))
    skip_identity = copy.deepcopy(model)  # the layers the layer-skip draft leaves out add nothing
    make_identity_layers(skip_identity, removed)
    adapted, _ = pruned_copy(model, tok, PruneConfig(method="base"), calibration_ids, a.dataset)
    adapter_report = install_exit_adapter(adapted, fit_exit_adapter(adapted, E))
    if a.draft_vocabulary:
        adapter_report["draft_vocabulary"] = install_draft_vocabulary(
            adapted, choose_draft_vocabulary(adapted, a.draft_vocabulary, {tok.eos_token_id}))
    return {"base_engine": Engine(model), "torch_engine": Engine(model, EngineOptions(linear_kernel="torch")),
            "pruned_engine": Engine(pruned.model), "lowrank_engine": Engine(lowrank.model),
            "gated_engine": gated.attach(Engine(gated.model)), "gated_pruner": gated,
            "identity_engine": Engine(identity), "adapter_engine": Engine(adapted.model),
            "skip_identity_engine": Engine(skip_identity),
            "removed": removed, "removed_positions": removed, "lowrank_report": lowrank_report,
            "adapter_report": adapter_report}


def layer_skip_config(engine: Engine, loaded: LoadedModel, skip: list[int], a) -> GenerationConfig:
    """The layer-skip strategy's settings for a draft that leaves out `skip` (original layers), through its own
    configure, as benchmark.py --draft_skip_layers would prepare them."""
    base = PruneModel(engine.model, loaded.tokenizer, PruneConfig())
    base.apply()
    flags = types.SimpleNamespace(max_steps=a.max_tokens, num_speculations=a.num_speculations,
                                  draft_skip_layers=",".join(map(str, skip)), draft_skip=None)
    return STRATEGIES["layer_skip_speculative"].configure(flags, base, engine, -1)


def build_runners(loaded: LoadedModel, calibration_ids: list[list[int]], a) -> tuple[dict, dict]:
    v = build_variants(loaded, calibration_ids, a)
    T, E, d = a.max_tokens, a.exit_layer, a.num_speculations
    ar = GenerationConfig(max_steps=T)
    ss = GenerationConfig(max_steps=T, exit_block=E, num_speculations=d)
    runners = {
        "hf_generate": hf_runner(loaded.model, loaded.tokenizer, T),
        "ours_autoregressive": our_runner(v["base_engine"], "autoregressive", ar),
        "ours_autoregressive_torch_kernel": our_runner(v["torch_engine"], "autoregressive", ar),
        "ours_self_speculative": our_runner(v["base_engine"], "self_speculative", ss),
        "ours_self_speculative_adapter": our_runner(
            v["adapter_engine"], "self_speculative",
            GenerationConfig(max_steps=T, exit_block=E, num_speculations=d, draft_confidence=a.draft_confidence)),
        "ours_early_exit": our_runner(v["base_engine"], "autoregressive", GenerationConfig(max_steps=T, exit_block=E)),
        "ours_pruned_autoregressive": our_runner(v["pruned_engine"], "autoregressive", ar),
        "ours_lowrank_autoregressive": our_runner(v["lowrank_engine"], "autoregressive", ar),
        "ours_gated_autoregressive": our_runner(v["gated_engine"], "autoregressive", ar),
        "identity_autoregressive": our_runner(v["identity_engine"], "autoregressive", ar),
        "identity_self_speculative": our_runner(v["identity_engine"], "self_speculative", ss),
        "identity_early_exit": our_runner(v["identity_engine"], "autoregressive",
                                          GenerationConfig(max_steps=T, exit_block=E)),
    }
    if min(v["removed"]) > 0:  # the layer-skip draft must compute the first layer
        runners["ours_layer_skip_speculative"] = our_runner(v["base_engine"], "layer_skip_speculative",
                                                            layer_skip_config(v["base_engine"], loaded, v["removed"], a))
        runners["identity_layer_skip_speculative"] = our_runner(
            v["skip_identity_engine"], "layer_skip_speculative",
            layer_skip_config(v["skip_identity_engine"], loaded, v["removed"], a))
    if v["base_engine"].device.type == "cuda":
        runners["hf_generate_flash"] = hf_runner(loaded.model, loaded.tokenizer, T,
                                                 torch.nn.attention.SDPBackend.FLASH_ATTENTION)
    if not a.skip_hf_early_exit:
        runners["hf_assistant_early_exit"] = hf_runner(
            loaded.model, loaded.tokenizer, T, assistant_early_exit=E, num_assistant_tokens=d,
            num_assistant_tokens_schedule="constant", assistant_confidence_threshold=0.0)
    return runners, v


def add_graph_runners(runners: dict, loaded: LoadedModel, prompts: list[list[int]], a) -> dict[str, str]:
    """On CUDA: our autoregressive and self-speculative loops over steps captured as CUDA graphs (checked against
    their eager replay as benchmark.py does). Returns each one's cuda_graphs status."""
    from layerbench.runs.graphs import capture_checked
    statuses = {}
    for name, strategy, config in (
            ("ours_autoregressive_graphs", "autoregressive", GenerationConfig(max_steps=a.max_tokens)),
            ("ours_self_speculative_graphs", "self_speculative",
             GenerationConfig(max_steps=a.max_tokens, exit_block=a.exit_layer, num_speculations=a.num_speculations))):
        engine = Engine(loaded.model)
        capacity = STRATEGIES[strategy].capacity(max(map(len, prompts)), config)
        check = our_runner(engine, strategy, dataclasses.replace(config, max_steps=16))
        statuses[name] = capture_checked(engine, capacity, STRATEGIES[strategy].static_shapes(engine, config), "cuda",
                                         lambda: check(prompts[0])[0])
        if engine.static is not None:
            runners[name] = our_runner(engine, strategy, config)
    return statuses


class _TimedBlock:
    """A block that adds its own wall time (synchronized on CUDA) to totals[index]."""

    def __init__(self, block, index: int, totals: list[float], device: torch.device) -> None:
        self.block, self.index, self.totals, self.device = block, index, totals, device

    def __getattr__(self, name):
        return getattr(self.block, name)

    def __call__(self, x, step):
        sync(self.device)
        t0 = time.perf_counter()
        out = self.block(x, step)
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


@torch.inference_mode()
def weight_streaming_bound(engine: Engine, reps: int = 20) -> dict:
    """Tokens/s if a decode step did nothing but one matrix-vector product over every weight matrix of the model
    (the embedding table is read one row per token and left out unless it is the LM head). On CUDA the products
    are replayed as one CUDA graph; on CPU they run with the engine's linear kernel, best of `reps`."""
    layers = [m for layer in engine.family.layers(engine.model) for m in layer.modules() if type(m) is nn.Linear]
    linears = layers + [engine.family.head(engine.model)]
    projections = [bind_projection(m, engine.kernel) for m in linears]
    inputs = [torch.randn(1, 1, m.in_features, device=engine.device, dtype=engine.dtype) for m in linears]
    nbytes = sum(m.weight.numel() * m.weight.element_size() for m in linears)

    def one_pass():
        for p, x in zip(projections, inputs):
            p(x)
    how = f"{engine.linear_kernel} kernel, best of {reps}"
    step = one_pass
    if engine.device.type == "cuda":
        one_pass()
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            one_pass()
        step, how = graph.replay, f"one CUDA graph, best of {reps}"
    best = float("inf")
    for _ in range(reps + 2):
        sync(engine.device)
        t0 = time.perf_counter()
        step()
        sync(engine.device)
        best = min(best, time.perf_counter() - t0)
    return {"tokens_per_second": 1 / best, "seconds_per_token": best, "bytes_per_token": nbytes,
            "gb_per_s": nbytes / best / 1e9, "how": how}
