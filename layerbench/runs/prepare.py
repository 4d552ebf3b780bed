"""Step 2 of a benchmark run: load the model, prune it (calibrating once, on rank 0), fit exit adapters, and
build the engine and everything generation needs. Nothing here is timed; every kernel choice is made here."""
from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass

import torch

from layerbench.decoding import STRATEGIES, GenerationConfig, GenerationStrategy
from layerbench.decoding.sampling import StopCondition
from layerbench.engine.engine import Engine, EngineOptions
from layerbench.errors import UsageError
from layerbench.evaluation import datasets
from layerbench.models.fingerprint import model_content_hash
from layerbench.models.loading import EMBEDDED_NAME, LoadedModel, cache_root, embedded_model_source, load_model
from layerbench.runs import distributed
from layerbench.runs.flag_checks import validate_exit_layer
from layerbench.runs.graphs import prepare_graphs
from layerbench.runs.step_modes import apply_exact, prepare_compile
from layerbench.runs.model_checks import check_context, check_stop_token_ids
from layerbench.runs.plan import Plan
from layerbench.surgery.calibration import Calibration
from layerbench.surgery.calibration_cache import CalibrationCache
from layerbench.surgery.draft_vocabulary import choose_draft_vocabulary, install_draft_vocabulary
from layerbench.surgery.exit_adapter import fit_exit_adapter, install_exit_adapter, load_trained_exit_adapter
from layerbench.surgery.prune_model import PruneModel

CALIBRATION_FALLBACK = "aclsum_summarization"


@dataclass
class Prepared:
    loaded: LoadedModel
    pruner: PruneModel
    engine: Engine
    strategy: GenerationStrategy
    generation: GenerationConfig
    stop: StopCondition
    prompts: dict[str, list[int]]  # sample id -> prompt token ids
    use_chat: bool
    load_seconds: float
    exact: str = "off"
    compile: str = "off"
    compile_seconds: float | None = None
    cuda_graphs: str = "off"


def calibration_loader(plan: Plan, tokenizer):
    """Calibration text: the train split of the calibration dataset (default: --dataset, or aclsum when --dataset
    has no train split). Evaluated samples are always excluded."""
    p, d, seed = plan.args.prune, plan.args.dataset, plan.args.benchmark.seed
    eval_ids = {s.sample_id for s in plan.samples}

    def load() -> Calibration:
        name = p.calibration_dataset or (d.dataset if datasets.get_spec(d.dataset).train_split
                                         else CALIBRATION_FALLBACK)
        spec = datasets.get_spec(name)
        split = spec.train_split or spec.eval_split
        _, samples = datasets.load_split(name, split, plan.options)
        overlap = name == d.dataset and split == plan.split
        pool = [s for s in samples if not (overlap and s.sample_id in eval_ids)]
        chosen = datasets.select_samples(pool, min(p.calibration_samples, len(pool)), seed, shuffle=True)
        fmt = plan.template if name == d.dataset else spec.template
        ids = [tokenizer(datasets.fill_template(fmt, s.input) + " " + s.reference.strip())["input_ids"]
               for s in chosen]
        return Calibration(ids, {"dataset": name, "split": split, "seed": seed,
                                 "excluded_evaluated_samples": overlap})
    return load


def calibration_cache(plan: Plan, loaded: LoadedModel) -> CalibrationCache:
    """The on-disk cache of calibration products (off with --no_calibration_cache), keyed by the loaded
    checkpoint's content hash; status lines on rank 0."""
    log = (lambda line: print(line, file=sys.stderr, flush=True)) if plan.info.is_main else None
    if plan.args.prune.no_calibration_cache:
        return CalibrationCache(log=log)
    return CalibrationCache(os.path.join(cache_root(), "calibration"),
                            lambda: model_content_hash(loaded.model, loaded.source, cache_root()), log=log)


def prune(plan: Plan, loaded: LoadedModel, stop: StopCondition) -> tuple[PruneModel, dict | None]:
    """Apply the prune method; calibration runs once, on rank 0, and every other rank applies its decision.
    Also returns the draft vocabulary, chosen from the calibration text before calibrating (so a size the text
    cannot fill is refused at once) by every rank alike (it only counts tokens, so each rank refuses alike)."""
    info, g = plan.info, plan.args.generation
    pruner = PruneModel(loaded.model, loaded.tokenizer, plan.prune_config,
                        calibration_loader(plan, loaded.tokenizer), calibration_cache(plan, loaded))
    validate_exit_layer(g, pruner.num_layers_original)
    vocabulary = None
    if g.draft_vocabulary is not None:
        vocabulary = choose_draft_vocabulary(pruner, g.draft_vocabulary, stop.stop_token_ids)
        distinct = vocabulary["report"]["distinct_calibration_tokens"]
        if g.draft_vocabulary > distinct:
            raise UsageError(f"--draft_vocabulary {g.draft_vocabulary} exceeds the {distinct} distinct tokens of "
                             f"the calibration text")
    if info.is_main:
        pruner.apply()
    decision = distributed.broadcast(pruner.decision() if info.is_main else None, info)
    if not info.is_main:
        pruner.apply(decision)
    return pruner, vocabulary


def exit_block_of(plan: Plan, pruner: PruneModel) -> int:
    """--exit_layer (an ORIGINAL layer) as the engine block the pruned model exits before (-1: none)."""
    g = plan.args.generation
    exit_block = pruner.map_exit_layer(g.exit_layer) if g.exit_layer > 0 else -1
    if g.exit_layer > 0 and exit_block == 0:
        raise UsageError(f"--exit_layer {g.exit_layer}: every layer below it was pruned; the draft would be empty")
    if g.exit_adapter != "none" and exit_block >= pruner.num_blocks:
        raise UsageError(f"--exit_layer {g.exit_layer}: every layer from it on was pruned; an exit adapter there "
                         f"would have nothing to adapt")
    pruner.report["exit_layer_original"] = g.exit_layer
    pruner.report["exit_block"] = exit_block
    return exit_block


def adapter_for(plan: Plan, pruner: PruneModel, exit_block: int) -> dict:
    """--exit_adapter linear: fitted on calibration text; trained: the one train.py saved beside the checkpoint."""
    g = plan.args.generation
    if g.exit_adapter == "trained":
        return load_trained_exit_adapter(plan.args.benchmark.model, g.exit_layer, exit_block)
    return fit_exit_adapter(pruner, exit_block)


def stop_condition(plan: Plan, loaded: LoadedModel) -> StopCondition:
    g = plan.args.generation
    stop_ids = set(g.stop_token_ids or [])
    config = loaded.model.generation_config
    eos = config.eos_token_id if config else None
    for e in (eos if isinstance(eos, list) else [eos]) + [loaded.tokenizer.eos_token_id]:
        if e is not None:
            stop_ids.add(int(e))
    return StopCondition(stop_ids, list(g.stop_words or []), loaded.tokenizer)


def check_cuda(device: str, cuda_graphs: str) -> None:
    """CUDA asked for where there is none: refused before the model is loaded."""
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise UsageError(f"--device {device}: CUDA is not available on this machine")
    on_cuda = device.startswith("cuda") or (device == "auto" and torch.cuda.is_available())
    if cuda_graphs == "on" and not on_cuda:
        raise UsageError("--cuda_graphs on needs a CUDA device")


def load(plan: Plan) -> LoadedModel:
    """Load the model with a status line on stderr (main rank): `loading <model> ... 1.2 s`."""
    b = plan.args.benchmark
    device = distributed.init(plan.info, b.device)
    check_cuda(device, b.cuda_graphs)

    def status(text: str, end: str = "\n") -> None:
        if plan.info.is_main:
            print(text, end=end, file=sys.stderr, flush=True)

    # the embedded model's cache is checked first, so a damaged entry's warning gets a line of its own
    loaded_from = embedded_model_source(b.verify_cache)[1] if b.model is None else None
    status(f"loading {b.model or EMBEDDED_NAME} ...", end=" ")
    t0 = time.perf_counter()
    try:
        loaded = load_model(b.model, b.dtype, device, b.device_map, b.max_memory)
    except BaseException:
        status("failed")
        raise
    status(f"{time.perf_counter() - t0:.1f} s")
    loaded.loaded_from = loaded_from or loaded.loaded_from
    return loaded


def prompt_ids(plan: Plan, loaded: LoadedModel, use_chat: bool) -> dict[str, list[int]]:
    return {s.sample_id: datasets.build_prompt(loaded.tokenizer, plan.prompt_text(s), use_chat)
            for s in plan.samples}


def prepare_model(plan: Plan) -> Prepared:
    """Everything generation needs but the captured steps: the loaded and pruned model (checked against the
    prompts of the plan's samples, if any), its exit adapter and draft vocabulary, the engine and the generation
    settings (also what generate.py runs)."""
    b, d, g = plan.args.benchmark, plan.args.dataset, plan.args.generation
    torch.manual_seed(b.seed)
    loaded = load(plan)
    use_chat = datasets.use_chat_template(loaded.tokenizer, d.chat_template)
    prompts = prompt_ids(plan, loaded, use_chat)
    check_stop_token_ids(g, loaded.model.config.vocab_size)
    check_context(g, prompts, getattr(loaded.model.config, "max_position_embeddings", None))
    stop = stop_condition(plan, loaded)
    pruner, vocabulary = prune(plan, loaded, stop)
    exit_block = exit_block_of(plan, pruner)
    if g.exit_adapter != "none":  # fitted once, on rank 0
        fitted = adapter_for(plan, pruner, exit_block) if plan.info.is_main else None
        fitted = distributed.broadcast(fitted, plan.info)
        pruner.report["exit_adapter"] = install_exit_adapter(pruner, fitted)
    if vocabulary is not None:
        pruner.report["draft_vocabulary"] = install_draft_vocabulary(pruner, vocabulary)
    if plan.args.prune.save_pruned_model and plan.info.is_main:
        pruner.save(plan.args.prune.save_pruned_model)
        pruner.report["saved_to"] = os.path.abspath(plan.args.prune.save_pruned_model)
    options = EngineOptions(linear_kernel=b.linear_kernel, attention_backend=b.attention_backend)
    engine = pruner.attach(Engine(loaded.model, options))
    strategy = STRATEGIES[g.generation_strategy]
    generation = strategy.configure(g, pruner, engine, exit_block)
    return Prepared(loaded=loaded, pruner=pruner, engine=engine, strategy=strategy,
                    generation=generation, stop=stop, prompts=prompts, use_chat=use_chat,
                    load_seconds=loaded.load_seconds, exact=apply_exact(b.exact, engine))


def prepare(plan: Plan) -> Prepared:
    """prepare_model, then the steps as they will be timed: the shared cache sized for the longest prompt,
    compiled blocks (--compile) and captured graphs (--cuda_graphs), each proven on the longest prompt."""
    prepared = prepare_model(plan)
    b, engine = plan.args.benchmark, prepared.engine
    longest = max(prepared.prompts.values(), key=len)
    engine.new_cache(prepared.strategy.capacity(len(longest), prepared.generation))
    prepared.compile, prepared.compile_seconds = prepare_compile(b.compile, engine, prepared.strategy,
                                                                 prepared.generation, longest, prepared.stop)
    prepared.cuda_graphs = prepare_graphs(b.cuda_graphs, engine, prepared.strategy, prepared.generation, longest,
                                          prepared.stop)
    return prepared
