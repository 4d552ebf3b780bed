"""Dataclass arguments for benchmark.py (parsed with HfArgumentParser, as in LayerSkip) and their validation."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Optional

from transformers import HfArgumentParser

from layerbench.errors import OneLineErrors, UsageError

EXIT_ADAPTERS = ("none", "linear")


def option(default, help: str = "", choices: list[str] | None = None):
    """A dataclass field with the help text (and choices) HfArgumentParser shows."""
    metadata = {"help": help} if help else {}
    if choices:
        metadata["choices"] = choices
    return field(default=default, metadata=metadata)


@dataclass
class BenchmarkArguments:
    model: Optional[str] = option(None, "local path or hub id; default: embedded SmolLM2-135M-Instruct")
    dtype: str = option("auto", choices=["auto", "float32", "bfloat16", "float16"])
    device: str = option("auto", choices=["auto", "cpu", "cuda"])
    device_map: Optional[str] = option(None, "split one model over devices in one process: auto, balanced, "
                                             "balanced_low_0, sequential, or a JSON map {module prefix: device} "
                                             "(inline or a file); each layer computes where its weights are, 'cpu' "
                                             "entries run on the CPU, 'disk' is refused; not with torchrun")
    max_memory: Optional[str] = option(None, "with --device_map: memory per device for the planner, e.g. "
                                             "0=20GiB,1=20GiB,cpu=60GiB (or JSON)")
    seed: int = 42
    output_dir: str = "./logs"
    warmup: bool = option(True, "one untimed generation before timing")
    resume: Optional[str] = option(None, "run JSON or samples file of an interrupted run to continue")
    execute_code: bool = option(False, "human_eval: run the generated code against the tests (pass@1); runs "
                                       "model-written code")
    execution_timeout: float = 3.0
    bootstrap_resamples: int = option(1000, "resamples of the bootstrap behind each metric's 95% interval (seeded "
                                            "by --seed; 1 to 100000)")
    linear_kernel: str = option("auto", "how linear maps run: auto (tuned for fp32 on CPU: F.linear or the "
                                        "few-row product per row count, by timing; torch elsewhere), tuned, torch, "
                                        "few_row_mm")
    attention_backend: str = option("auto", "SDPA backends on CUDA: auto (flash, then memory-efficient, then math; "
                                            "never cuDNN), flash, efficient, cudnn, math")
    cuda_graphs: str = option("auto", "capture decode, draft and verification steps as CUDA graphs before timing: "
                                      "auto (on for CUDA on one device), on, off, static (the same fixed-shape "
                                      "steps run eagerly, any device); a capture that fails or whose replay "
                                      "differs from eager falls back to eager with the reason in the log")
    lm_eval_tasks: Optional[str] = option(None, "after the run, score the same model on lm-evaluation-harness tasks: "
                                                "comma-separated task or group names, task folders (e.g. tasks/, "
                                                "the offline local tasks) or YAML files; results in the run JSON "
                                                "under lm_eval")
    lm_eval_limit: Optional[int] = option(None, "lm-eval: documents per task (default: all)")
    lm_eval_num_fewshot: Optional[int] = option(None, "lm-eval: few-shot examples (default: each task's own)")
    lm_eval_batch_size: int = option(16, "lm-eval: requests scored together (those sharing a context prefill it "
                                         "once)")


@dataclass
class DatasetArguments:
    dataset: str = "aclsum_summarization"
    data_path: Optional[str] = option(None, "JSONL file for --dataset custom_jsonl")
    split: Optional[str] = option(None, "dataset split; default: the dataset's evaluation split")
    prompt_field: str = "prompt"
    response_field: str = "response"
    random_shuffle: bool = True
    num_samples: Optional[int] = option(10, "samples to evaluate (default 10; 0 is refused)")
    n_shot: int = 0
    template: Optional[str] = option(None, "prompt template containing {input}")
    chat_template: str = option("auto", choices=["auto", "on", "off"])


@dataclass
class GenerationArguments:
    generation_strategy: str = "autoregressive"
    max_steps: int = 512
    exit_layer: int = option(-1, "layer of the ORIGINAL model; draft/early exit uses layers [0, E)")
    num_speculations: int = -1
    sample: bool = False
    temperature: float = 0.6
    top_k: int = 0
    top_p: float = 0.9
    no_repeat_ngram_size: Optional[int] = None
    stop_words: Optional[list[str]] = None
    stop_token_ids: Optional[list[int]] = None
    exit_adapter: str = option("none", "early exit / self_speculative: a linear map from the exit layer's hidden "
                                       "state to the last layer's, fitted on calibration text (none, linear)")
    draft_confidence: Optional[float] = option(None, "self_speculative: stop drafting once a draft token's "
                                                     "probability is below this")
    draft_vocabulary: Optional[int] = option(None, "self_speculative: drafts score only the N tokens most frequent "
                                                   "in the calibration text (plus stop tokens); verification scores "
                                                   "all")
    perplexity: bool = option(True, "teacher-forced perplexity of each reference given its prompt")


@dataclass
class PruneArguments:
    prune_method: str = "base"
    prune_n: Optional[int] = option(None, "angular: number of consecutive layers to remove")
    dropout_threshold: Optional[float] = option(None, "random: drop probability per layer")
    prune_seed: Optional[int] = option(None, "random: RNG seed (default --seed)")
    protected_layers: Optional[list[int]] = option(None, "random: layers never dropped")
    calibration_dataset: Optional[str] = option(None, "default: train split of --dataset, else aclsum train")
    calibration_samples: int = 32
    calibration_max_length: int = 512
    no_calibration_cache: bool = option(False, "compute every calibration product (hidden states, stand-ins, exit "
                                               "adapters, ASVD scales, draft vocabularies) afresh; by default each "
                                               "is kept in the cache folder ($LAYERBENCH_CACHE or "
                                               "~/.cache/layerbench) per model, calibration text and settings")
    save_pruned_model: Optional[str] = None
    compression_rank: Optional[int] = option(None, "lowrank: rank r of every factorized matrix")
    compression_ratio: Optional[float] = option(None, "lowrank: kept-parameter fraction per matrix")
    lowrank_method: str = option("svd", choices=["svd", "asvd"])
    hot_path: Optional[list[int]] = option(None, "lowrank/gated: layers never compressed or skipped (default: first "
                                                 "two and last)")
    skip_threshold: float = option(0.1, "gated: skip cold layers whose temperature (arccos(cos(in, out))/pi at the "
                                        "last prompt token) is below this")
    available_compute: float = option(1.0, "gated: at most ceil(c x L) layers run per decode step")
    stand_in: str = option("none", "angular/random: replace each removed run of layers by a linear map fitted on "
                                   "calibration text (none, linear)")


ALL_ARGUMENTS = (BenchmarkArguments, DatasetArguments, GenerationArguments, PruneArguments)


@dataclass
class Arguments:
    """Every benchmark flag, by group."""
    benchmark: BenchmarkArguments
    dataset: DatasetArguments
    generation: GenerationArguments
    prune: PruneArguments

    def as_dict(self) -> dict:
        """All flags in one flat dict (the log's `args`; resume compares it)."""
        return {**asdict(self.benchmark), **asdict(self.dataset), **asdict(self.generation), **asdict(self.prune)}


class OneLineParser(OneLineErrors, HfArgumentParser):
    """HfArgumentParser whose errors are one line on stderr and exit status 2."""


def parse_args(argv: list[str] | None = None) -> Arguments:
    parser = OneLineParser(ALL_ARGUMENTS)
    *parsed, remaining = parser.parse_args_into_dataclasses(args=argv, return_remaining_strings=True)
    if remaining:
        parser.error(f"unrecognized arguments: {' '.join(remaining)}")
    benchmark, dataset, generation, prune = parsed
    return Arguments(benchmark=benchmark, dataset=dataset, generation=generation, prune=prune)


def validate_generation(generation: GenerationArguments, strategies: dict) -> None:
    g = generation
    if g.generation_strategy not in strategies:
        raise UsageError(f"--generation_strategy {g.generation_strategy!r} unknown; choose from {', '.join(strategies)}")
    if g.max_steps < 1:
        raise UsageError(f"--max_steps must be >= 1, got {g.max_steps}")
    if g.generation_strategy == "self_speculative":
        if g.exit_layer <= 0:
            raise UsageError("--exit_layer must be > 0 for self_speculative (draft layers [0, E))")
        if g.num_speculations <= 0:
            raise UsageError("--num_speculations must be > 0 for self_speculative")
    elif g.num_speculations > 0:
        raise UsageError(f"--num_speculations {g.num_speculations} only applies to --generation_strategy self_speculative")
    if g.draft_confidence is not None and (g.generation_strategy != "self_speculative" or not 0 < g.draft_confidence < 1):
        raise UsageError(f"--draft_confidence must be in (0, 1) and only applies to self_speculative, got {g.draft_confidence}")
    if g.draft_vocabulary is not None and (g.generation_strategy != "self_speculative" or g.draft_vocabulary < 1):
        raise UsageError(f"--draft_vocabulary must be >= 1 and only applies to self_speculative, got {g.draft_vocabulary}")
    if g.exit_adapter not in EXIT_ADAPTERS:
        raise UsageError(f"--exit_adapter {g.exit_adapter!r} unknown; choose from {', '.join(EXIT_ADAPTERS)}")
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


def validate_exit_layer(generation: GenerationArguments, num_layers: int) -> None:
    """Checks the exit layer against the model depth (before any pruning mapping)."""
    g = generation
    if g.generation_strategy == "self_speculative" and not 0 < g.exit_layer < num_layers:
        raise UsageError(f"--exit_layer must satisfy 0 < E < {num_layers} (model layers) for self_speculative, got {g.exit_layer}")
    if g.generation_strategy == "autoregressive" and g.exit_layer > num_layers:
        raise UsageError(f"--exit_layer {g.exit_layer} exceeds the model's {num_layers} layers")


def validate_dataset(dataset: DatasetArguments) -> None:
    d = dataset
    if d.num_samples is not None and d.num_samples < 1:
        raise UsageError(f"--num_samples must be >= 1, got {d.num_samples}")
    if d.n_shot < 0:
        raise UsageError(f"--n_shot must be >= 0, got {d.n_shot}")
    if d.template is not None and "{input}" not in d.template:
        raise UsageError("--template must contain the placeholder {input}")
