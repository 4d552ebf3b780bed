"""Step 1 of a benchmark run: read and check every flag and choose the samples, before any model is loaded."""
from __future__ import annotations

import os
from dataclasses import dataclass

from layerbench.decoding import STRATEGIES
from layerbench.engine.attention import BACKENDS
from layerbench.errors import UsageError
from layerbench.evaluation import datasets
from layerbench.models.device_map import parse_device_map, parse_max_memory
from layerbench.runs import lm_eval_step, resume
from layerbench.runs.arguments import (Arguments, PruneArguments, parse_args, validate_dataset,
                                       validate_generation)
from layerbench.runs.distributed import DistInfo
from layerbench.runs.run_log import prepare_output_dir
from layerbench.surgery.config import STAND_INS, PruneConfig, validate_config


LINEAR_KERNELS = ("auto", "tuned", "torch", "few_row_mm")
MAX_RESAMPLES = 100_000


@dataclass
class Plan:
    args: Arguments
    info: DistInfo
    prune_config: PruneConfig
    resumed: resume.ResumeState | None
    output_dir: str
    options: datasets.DatasetOptions
    split: str
    samples: list[datasets.Sample]
    template: str
    shots: str  # n-shot prefix


def build_prune_config(prune: PruneArguments, seed: int) -> PruneConfig:
    """The PruneModel configuration from the flags, checked before any model is loaded."""
    config = PruneConfig(
        method=prune.prune_method, prune_n=prune.prune_n, dropout_threshold=prune.dropout_threshold,
        prune_seed=prune.prune_seed if prune.prune_seed is not None else seed,
        protected_layers=prune.protected_layers or [], calibration_samples=prune.calibration_samples,
        calibration_max_length=prune.calibration_max_length, compression_rank=prune.compression_rank,
        compression_ratio=prune.compression_ratio, lowrank_method=prune.lowrank_method, hot_path=prune.hot_path,
        skip_threshold=prune.skip_threshold, available_compute=prune.available_compute, stand_in=prune.stand_in,
        keep_originals=False)
    validate_config(config)
    if prune.calibration_dataset is not None:
        datasets.get_spec(prune.calibration_dataset, flag="--calibration_dataset")
    return config


def validate_combinations(args: Arguments, info: DistInfo) -> None:
    b, d, g, p = args.benchmark, args.dataset, args.generation, args.prune
    if p.prune_method == "gated" and g.generation_strategy == "self_speculative":
        raise UsageError("--prune_method gated cannot be combined with --generation_strategy self_speculative: "
                         "its skip set is decided per sequence at prefill, and a skipped layer has no KV for the "
                         "verification pass to reuse")
    if p.stand_in not in STAND_INS:
        raise UsageError(f"--stand_in {p.stand_in!r} unknown; choose from {', '.join(STAND_INS)}")
    if p.stand_in != "none" and p.prune_method not in ("angular", "random"):
        raise UsageError(f"--stand_in {p.stand_in} only applies to --prune_method angular or random")
    if b.cuda_graphs not in ("auto", "on", "off", "static"):
        raise UsageError(f"--cuda_graphs {b.cuda_graphs!r} unknown; choose from auto, on, off, static")
    if b.linear_kernel not in LINEAR_KERNELS:
        raise UsageError(f"--linear_kernel {b.linear_kernel!r} unknown; choose from {', '.join(LINEAR_KERNELS)}")
    if b.attention_backend not in BACKENDS:
        raise UsageError(f"--attention_backend {b.attention_backend!r} unknown; choose from {', '.join(BACKENDS)}")
    if b.execute_code and d.dataset != "human_eval":
        raise UsageError("--execute_code only applies to --dataset human_eval")
    if b.execution_timeout <= 0:
        raise UsageError(f"--execution_timeout must be > 0, got {b.execution_timeout}")
    if not 1 <= b.bootstrap_resamples <= MAX_RESAMPLES:
        raise UsageError(f"--bootstrap_resamples must be in [1, {MAX_RESAMPLES}], got {b.bootstrap_resamples}")
    if b.device_map and info.enabled:
        raise UsageError("--device_map splits one model over the devices of a single process; torchrun runs one "
                         "model per process (data parallel): use one or the other")
    if b.device_map:
        parse_device_map(b.device_map)
    if b.max_memory:
        if not b.device_map:
            raise UsageError("--max_memory only applies with --device_map")
        parse_max_memory(b.max_memory)
    if p.save_pruned_model and (p.prune_method in ("lowrank", "gated") or p.stand_in != "none"
                                or g.exit_adapter != "none" or g.draft_vocabulary is not None):
        raise UsageError("--save_pruned_model writes standard HF checkpoints, which cannot describe factorized, "
                         "gated, stand-in or exit-adapter modules; it supports base, angular and random")
    if p.save_pruned_model and os.path.isfile(p.save_pruned_model):
        raise UsageError(f"--save_pruned_model {p.save_pruned_model}: is a file")


def make_plan(argv: list[str] | None, info: DistInfo, create_output_dir: bool = True) -> Plan:
    args = parse_args(argv)
    b, d = args.benchmark, args.dataset
    validate_generation(args.generation, STRATEGIES)
    validate_dataset(d)
    prune_config = build_prune_config(args.prune, b.seed)
    validate_combinations(args, info)
    lm_eval_step.check(b)
    resumed = resume.load(b.resume, args.as_dict()) if b.resume else None
    output_dir = resumed.output_dir if resumed else b.output_dir
    if create_output_dir:  # the lm-eval model plans without writing a run log
        prepare_output_dir(output_dir)
    options = datasets.DatasetOptions(data_path=d.data_path, prompt_field=d.prompt_field,
                                      response_field=d.response_field)
    spec = datasets.get_spec(d.dataset)
    split, all_samples = datasets.load_split(d.dataset, d.split, options)
    samples = datasets.select_samples(all_samples, d.num_samples, b.seed, d.random_shuffle)
    template = d.template or spec.template
    shots = datasets.few_shot_prefix(d.dataset, d.n_shot, b.seed, template, options)
    return Plan(args=args, info=info, prune_config=prune_config, resumed=resumed, output_dir=output_dir,
                options=options, split=split, samples=samples, template=template, shots=shots)
