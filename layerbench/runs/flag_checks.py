"""Checks of benchmark.py's flags that need no model and no data, run before anything is imported or loaded:
each bad value or meaningless combination becomes a UsageError (one `error:` line, exit status 2). Checks
against the loaded model are in `layerbench.runs.model_checks`."""
from __future__ import annotations

import os
import re
from dataclasses import fields

from layerbench import names
from layerbench.errors import UsageError
from layerbench.evaluation.sandbox import MAX_TIMEOUT
from layerbench.models.device_map import parse_device_map, parse_max_memory
from layerbench.models.folder import check_model_folder
from layerbench.decoding import STRATEGIES
from layerbench.runs.arguments import Arguments, BenchmarkArguments, DatasetArguments, method_flag_owners, \
    strategy_flag_owners
from layerbench.runs.folders import check_writable_folder
from layerbench.runs.given_flags import check_given_flags
from layerbench.runs.ranks import DistInfo
from layerbench.surgery.config import PruneConfig, method_of, validate_config
from layerbench.surgery.methods import PRUNE_METHODS

MAX_RESAMPLES = 100_000
SEED_RANGE = (0, 2**32 - 1)  # what numpy, torch and random all accept
TEMPLATE_FIELD = re.compile(r"\{([A-Za-z_]\w*)\}")  # {name}; other braces (JSON, code) are literal text

DATASET_FLAGS = {"data_path": ("custom_jsonl",), "prompt_field": ("custom_jsonl",),
                 "response_field": ("custom_jsonl",)}


def check_applies(group: object, flags: dict[str, tuple[str, ...]], chosen: str, chooser: str) -> None:
    defaults = {f.name: f.default for f in fields(group)}
    for name, allowed in flags.items():
        if getattr(group, name) != defaults[name] and chosen not in allowed:
            raise UsageError(f"--{name} only applies to {chooser} {' or '.join(allowed)}, not {chosen}")


def check_seed(value: int | None, flag: str) -> None:
    if value is not None and not SEED_RANGE[0] <= value <= SEED_RANGE[1]:
        raise UsageError(f"{flag} must be in [0, 2**32 - 1], got {value}")


def check_template(template: str) -> None:
    if "{input}" not in template:
        raise UsageError("--template must contain the placeholder {input}")
    unknown = sorted(set(TEMPLATE_FIELD.findall(template)) - {"input"})
    if unknown:
        raise UsageError(f"--template: unknown field {{{unknown[0]}}}; only {{input}} is replaced (other braces "
                         f"are kept as they are)")


def validate_generation(generation) -> None:
    g = generation
    strategy = STRATEGIES[g.generation_strategy]
    check_applies(g, strategy_flag_owners(), g.generation_strategy, "--generation_strategy")
    if g.max_steps < 1:
        raise UsageError(f"--max_steps must be >= 1, got {g.max_steps}")
    if g.exit_layer == 0 or g.exit_layer < -1:
        raise UsageError(f"--exit_layer must be -1 (none) or a layer >= 1, got {g.exit_layer}")
    strategy.validate(g)
    if g.exit_adapter != "none" and g.exit_layer <= 0:
        raise UsageError("--exit_adapter needs an exit layer: --exit_layer E > 0 (early exit or self_speculative)")
    if g.sample:
        if g.temperature <= 0:
            raise UsageError(f"--temperature must be > 0 when sampling, got {g.temperature}")
        if not 0 < g.top_p <= 1:
            raise UsageError(f"--top_p must be in (0, 1], got {g.top_p}")
        if g.top_k < 0:
            raise UsageError(f"--top_k must be >= 0, got {g.top_k}")
    if g.no_repeat_ngram_size is not None and g.no_repeat_ngram_size < 1:
        raise UsageError(f"--no_repeat_ngram_size must be >= 1, got {g.no_repeat_ngram_size}")
    if any(not w for w in g.stop_words or []):
        raise UsageError("--stop_words: an empty stop word would end every generation before its first token")
    if any(t < 0 for t in g.stop_token_ids or []):
        raise UsageError(f"--stop_token_ids must be >= 0, got {min(g.stop_token_ids)}")


def validate_dataset(dataset: DatasetArguments) -> None:
    d = dataset
    if d.num_samples is not None and d.num_samples < 1:
        raise UsageError(f"--num_samples must be >= 1, got {d.num_samples}")
    if d.n_shot < 0:
        raise UsageError(f"--n_shot must be >= 0, got {d.n_shot}")
    if d.template is not None:
        check_template(d.template)
    check_applies(d, DATASET_FLAGS, d.dataset, "--dataset")


def prune_config(prune, seed: int) -> PruneConfig:
    """The PruneModel configuration from the flags (those of every method, plus the shared ones), checked before
    any model is loaded; the random seed defaults to --seed."""
    check_applies(prune, method_flag_owners(), prune.prune_method, "--prune_method")
    check_seed(prune.prune_seed, "--prune_seed")
    values = {f.name: getattr(prune, f.name) for f in fields(PruneConfig) if hasattr(prune, f.name)}
    values.update(method=prune.prune_method, keep_originals=False,
                  prune_seed=prune.prune_seed if prune.prune_seed is not None else seed)
    config = PruneConfig(**values)
    validate_config(config)
    return config


def check_placement_and_logs(b: BenchmarkArguments, info: DistInfo) -> None:
    if b.device_map and info.enabled:
        raise UsageError("--device_map splits one model over the devices of a single process; torchrun runs one "
                         "model per process (data parallel): use one or the other")
    if b.device_map:
        parse_device_map(b.device_map)
    if b.max_memory:
        if not b.device_map:
            raise UsageError("--max_memory only applies with --device_map")
        parse_max_memory(b.max_memory)
    if not 1 <= b.bootstrap_resamples <= MAX_RESAMPLES:
        raise UsageError(f"--bootstrap_resamples must be in [1, {MAX_RESAMPLES}], got {b.bootstrap_resamples}")


def validate_combinations(args: Arguments, info: DistInfo) -> None:
    b, d, g, p = args.benchmark, args.dataset, args.generation, args.prune
    check_seed(b.seed, "--seed")
    method = method_of(p)
    if method.per_sequence and STRATEGIES[g.generation_strategy].speculative:
        raise UsageError(f"--prune_method {method.name} cannot be combined with --generation_strategy "
                         f"{g.generation_strategy}: its skip set is decided per sequence at prefill, and a skipped "
                         "layer has no KV for the verification pass to reuse")
    for flag in ("exact", "compile"):
        if getattr(b, flag) == "on" and method.per_sequence:
            raise UsageError(f"--{flag} on needs the same layers at every decode step; --prune_method {method.name} "
                             "decides them per sequence")
    if b.cuda_graphs == "on" and b.device == "cpu":
        raise UsageError("--cuda_graphs on needs a CUDA device, not --device cpu")
    if b.attention_backend != "auto" and b.device == "cpu":
        raise UsageError(f"--attention_backend {b.attention_backend} chooses CUDA's SDPA kernels; it does not apply "
                         f"to --device cpu")
    if b.execute_code and d.dataset != "human_eval":
        raise UsageError("--execute_code only applies to --dataset human_eval")
    if not 0 < b.execution_timeout <= MAX_TIMEOUT:
        raise UsageError(f"--execution_timeout must be in (0, {MAX_TIMEOUT:g}] seconds, got {b.execution_timeout:g}")
    check_placement_and_logs(b, info)
    if g.exit_adapter == "trained" and not os.path.isfile(os.path.join(b.model or "", names.TRAINED_EXIT_ADAPTER_FILE)):
        raise UsageError(f"--exit_adapter trained reads {names.TRAINED_EXIT_ADAPTER_FILE} from the --model folder "
                         f"(train.py --trainable exit_adapter writes it); {b.model or 'the embedded model'} has none")
    if b.reference not in ("auto", "none") and not os.path.isfile(b.reference):
        raise UsageError(f"--reference {b.reference}: no such run JSON (or auto, none)")
    if p.save_pruned_model is not None and (not method.saveable or p.stand_in != "none"
                                or g.exit_adapter != "none" or g.draft_vocabulary is not None):
        saveable = ", ".join(m.name for m in PRUNE_METHODS.values() if m.saveable)
        raise UsageError("--save_pruned_model writes standard HF checkpoints, which cannot describe factorized, "
                         f"gated, stand-in or exit-adapter modules; it supports {saveable}")
    if p.save_pruned_model is not None:
        check_writable_folder(p.save_pruned_model, "--save_pruned_model")
    if not b.resume:
        check_writable_folder(b.output_dir, "--output_dir")
    check_model_folder(b.model)


def check_flags(args: Arguments, info: DistInfo) -> PruneConfig:
    """Every check that needs neither a model nor data; returns the prune configuration."""
    validate_generation(args.generation)
    validate_dataset(args.dataset)
    config = prune_config(args.prune, args.benchmark.seed)
    validate_combinations(args, info)
    check_given_flags(args)
    return config


def validate_exit_layer(generation, num_layers: int) -> None:
    """Checks the exit layer against the model depth (before any pruning mapping)."""
    g = generation
    STRATEGIES[g.generation_strategy].check_depth(g, num_layers)
    if g.exit_adapter != "none" and g.exit_layer >= num_layers:
        raise UsageError(f"--exit_adapter {g.exit_adapter} needs --exit_layer below the model's {num_layers} layers "
                         f"(after the last layer there is nothing to adapt), got {g.exit_layer}")
