"""benchmark.py's flags: dataclasses by group (the fields and defaults LayerSkip reads with HfArgumentParser),
parsed with plain argparse so that --help and a bad flag are answered before torch or transformers is imported.
The checks of flag values live in `layerbench.runs.flag_checks`."""
from __future__ import annotations

import argparse
from dataclasses import asdict, dataclass, make_dataclass
from typing import Optional

from layerbench import names
from layerbench.decoding import DEFAULT_STRATEGY, STRATEGIES
from layerbench.errors import OneLineArgumentParser
from layerbench.evaluation.datasets import DATASETS
from layerbench.flags import (add_dataclass_flags, build_dataclasses, copied_fields, merge_options, option,
                              owned_fields, parse_noting_explicit)
from layerbench.surgery.config import STAND_INS, method_fields
from layerbench.surgery.methods import BASELINE, PRUNE_METHODS

EXIT_ADAPTERS = names.EXIT_ADAPTERS

ENGINE, DATA, GENERATION = "model and engine", "data", "generation"
PRUNING, LOGS, DISTRIBUTED = "pruning, compression and skipping", "metrics and logs", "distributed"
GROUPS = {  # help sections, in the order of the README's tables
    ENGINE: None,
    DATA: None,
    GENERATION: None,
    PRUNING: "--prune_method chooses one (layerbench/surgery/methods/, one file each); each method's own flags "
             "are refused with another method",
    LOGS: None,
    DISTRIBUTED: "run `torchrun --nproc_per_node N benchmark.py ...` for data parallelism: ranks split the samples",
}


@dataclass
class BenchmarkArguments:
    model: Optional[str] = option(None, "local model folder or hub id (default: the embedded SmolLM2-135M-Instruct)")
    dtype: str = option("auto", "weights and compute dtype; auto: the checkpoint's stored dtype, as transformers' "
                                "dtype='auto' (fp16 on CPU runs in fp32; the embedded model is fp32)", names.DTYPES)
    device: str = option("auto", "auto: CUDA when available, else CPU", names.DEVICES)
    device_map: Optional[str] = option(None, "split one model over devices in one process: auto, balanced, "
                                             "balanced_low_0, sequential, or a JSON map {module prefix: device} "
                                             "(inline or a file); each layer computes where its weights are, 'cpu' "
                                             "entries run on the CPU, 'disk' is refused; not with torchrun",
                                       group=DISTRIBUTED)
    max_memory: Optional[str] = option(None, "with --device_map: memory per device for the planner, e.g. "
                                             "0=20GiB,1=20GiB,cpu=60GiB (or JSON)", group=DISTRIBUTED)
    seed: int = option(42, "seed of sample selection, calibration and sampling (each sample's stream depends only "
                           "on the seed and its id), in [0, 2**32 - 1]")
    verify_cache: bool = option(False, "hash every file of the converted embedded model in the cache before using it "
                                       "(otherwise only files whose size or mtime changed are hashed)")
    output_dir: str = option("./logs", "folder of the run JSON and samples file (created when the run starts)",
                             group=LOGS)
    warmup: bool = option(True, "one untimed generation before timing")
    resume: Optional[str] = option(None, "run JSON or samples file of an interrupted run to continue (same flags)",
                                   group=LOGS)
    execute_code: bool = option(False, "human_eval: run the generated code against the tests (pass@1), each "
                                       "completion in a sandbox (README: Security)", group=LOGS)
    execution_timeout: float = option(3.0, "seconds each --execute_code check may run, in (0, 3600]", group=LOGS)
    bootstrap_resamples: int = option(1000, "resamples of the bootstrap behind each metric's 95% interval (seeded "
                                            "by --seed; 1 to 100000)", group=LOGS)
    linear_kernel: str = option("auto", "how linear maps run: auto (tuned for fp32 on CPU, torch elsewhere), tuned "
                                        "(F.linear or the few-row product per row count, by timing), torch, "
                                        "few_row_mm", names.LINEAR_KERNELS)
    attention_backend: str = option("auto", "SDPA backends on CUDA: auto (flash, then memory-efficient, then math; "
                                            "never cuDNN), flash, efficient, cudnn, math", names.ATTENTION_BACKENDS)
    cuda_graphs: str = option("auto", "capture decode, draft and verification steps as CUDA graphs before timing: "
                                      "auto (on for CUDA on one device), on (refused without CUDA), off, static (the "
                                      "same fixed-shape steps run eagerly, any device); a capture that fails or "
                                      "whose replay differs from eager falls back to eager with the reason in the "
                                      "log", names.CUDA_GRAPHS)
    exact: str = option("auto", "exact mode: every decode, draft and verification step computes each row as it would "
                                "alone (fixed tiles of rows, the whole cache under a mask), so greedy self-speculative, "
                                "layer-skip, graph and split-device decoding give autoregressive decoding's tokens bit "
                                "for bit in any dtype; auto: on for bfloat16 and float16, off for float32",
                        names.EXACT)
    compile: str = option("auto", "run fixed-shape steps through torch.compile'd decoder blocks (compiled before "
                                  "timing; a failure falls back to eager with one warning): auto (off: see README), "
                                  "on, off", names.COMPILE)
    reference: str = option("auto", "the autoregressive run whose greedy output this run (speculative, graphs, "
                                    "compiled, split) is compared with at the end: auto (the newest matching plain "
                                    "autoregressive run in --output_dir), none, or a run JSON", group=LOGS)
    lm_eval_tasks: Optional[str] = option(None, "after the run, score the same model on lm-evaluation-harness tasks: "
                                                "comma-separated task or group names, task folders (e.g. tasks/, "
                                                "the offline local tasks) or YAML files; results in the run JSON "
                                                "under lm_eval", group=LOGS)
    lm_eval_limit: Optional[int] = option(None, "lm-eval: documents per task (default: all)", group=LOGS)
    lm_eval_num_fewshot: Optional[int] = option(None, "lm-eval: few-shot examples (default: each task's own)",
                                                group=LOGS)
    lm_eval_batch_size: int = option(16, "lm-eval: requests scored together (those sharing a context prefill it "
                                         "once)", group=LOGS)


@dataclass
class DatasetArguments:
    dataset: str = option("aclsum_summarization", "offline: aclsum_summarization, human_eval, custom_jsonl; the "
                                                  "others need the Hugging Face hub", tuple(DATASETS))
    data_path: Optional[str] = option(None, "custom_jsonl: the JSONL file (one object per line)")
    split: Optional[str] = option(None, "dataset split (default: the dataset's evaluation split)")
    prompt_field: str = option("prompt", "custom_jsonl: the field holding each prompt")
    response_field: str = option("response", "custom_jsonl: the field holding each reference")
    random_shuffle: bool = option(True, "choose the samples in a seeded random order (else the first ones)")
    num_samples: Optional[int] = option(10, "samples to evaluate, >= 1")
    n_shot: int = option(0, "examples from the train split put before each prompt")
    template: Optional[str] = option(None, "prompt template; {input} is replaced by the sample, other braces are "
                                           "kept (default: the dataset's)")
    chat_template: str = option("auto", "wrap prompts in the tokenizer's chat template (auto: when it has one)",
                                names.CHAT_TEMPLATE)


@dataclass
class StrategyChoice:
    generation_strategy: str = option(DEFAULT_STRATEGY, "decoding strategy: " + "; ".join(
        f"{s.name}: {s.summary}" for s in STRATEGIES.values()), tuple(STRATEGIES))


@dataclass
class SharedGenerationArguments:
    max_steps: int = option(512, "tokens to generate at most per sample (at most the model's context)")
    exit_layer: int = option(-1, "a layer E of the ORIGINAL model (-1: none); autoregressive exits after layers "
                                 "[0, E), self_speculative drafts with them")
    exit_adapter: str = option("none", "early exit / self_speculative: a linear map from the exit layer's hidden "
                                       "state to the last layer's: linear (fitted on calibration text), or trained (the "
                                       f"{names.TRAINED_EXIT_ADAPTER_FILE} train.py --trainable exit_adapter wrote "
                                       "beside the --model checkpoint)", names.EXIT_ADAPTERS)
    sample: bool = option(False, "sample instead of greedy decoding")
    temperature: float = option(0.6, "sampling temperature, > 0")
    top_k: int = option(0, "sampling: keep the k most probable tokens (0: all)")
    top_p: float = option(0.9, "sampling: nucleus probability mass, in (0, 1]")
    no_repeat_ngram_size: Optional[int] = option(None, "forbid repeating any n-gram of this size")
    stop_words: Optional[list[str]] = option(None, "strings that end a generation")
    stop_token_ids: Optional[list[int]] = option(None, "token ids that end a generation (besides end-of-sequence)")
    perplexity: bool = option(True, "teacher-forced perplexity of each reference given its prompt", group=LOGS)


def strategy_flag_owners() -> dict[str, tuple[str, ...]]:
    """Each flag a strategy owns -> the strategies it applies to."""
    merged = merge_options({name: strategy.options for name, strategy in STRATEGIES.items()})
    return {name: tuple(helps) for name, (_, _, helps) in merged.items()}


def _generation_arguments() -> type:
    """--generation_strategy, the shared generation flags, and each strategy's own."""
    options = owned_fields({name: strategy.options for name, strategy in STRATEGIES.items()})
    return make_dataclass("GenerationArguments", copied_fields(StrategyChoice) + copied_fields(
        SharedGenerationArguments)[:2] + options + copied_fields(SharedGenerationArguments)[2:],
        namespace={"__module__": __name__})


GenerationArguments = _generation_arguments()


@dataclass
class PruneChoice:
    prune_method: str = option(BASELINE, "what to do to the model before generating: "
                                       + "; ".join(f"{m.name}: {m.summary}" for m in PRUNE_METHODS.values()),
                               tuple(PRUNE_METHODS))


@dataclass
class SharedPruneArguments:
    stand_in: str = option("none", "methods that remove layers: replace each removed run of layers by a linear map "
                                   "fitted on calibration text", STAND_INS)
    calibration_dataset: Optional[str] = option(None, "calibration text (default: the train split of --dataset, "
                                                      "else aclsum's)", tuple(DATASETS))
    calibration_samples: int = option(32, "calibration sequences")
    calibration_max_length: int = option(512, "tokens per calibration sequence at most")
    no_calibration_cache: bool = option(False, "compute every calibration product (hidden states, stand-ins, exit "
                                               "adapters, ASVD scales, draft vocabularies) afresh; otherwise each "
                                               "is kept in the cache folder ($LAYERBENCH_CACHE or "
                                               "~/.cache/layerbench) per model, calibration text and settings")
    save_pruned_model: Optional[str] = option(None, "folder to write the pruned model to as a standard checkpoint "
                                                    "(methods whose result one can describe, without stand-ins)")


def method_flag_owners() -> dict[str, tuple[str, ...]]:
    """Each flag a method owns -> the methods it applies to (--stand_in: every method that removes layers)."""
    owners = {name: methods for name, (_, _, methods) in method_fields(PRUNE_METHODS.values()).items()}
    owners["stand_in"] = tuple(m.name for m in PRUNE_METHODS.values() if m.removes_layers)
    return owners


def _prune_arguments() -> type:
    """--prune_method, each method's own flags (help prefixed with the methods they apply to), the shared ones."""
    options = owned_fields({name: method.options for name, method in PRUNE_METHODS.items()})
    return make_dataclass("PruneArguments", copied_fields(PruneChoice) + options + copied_fields(SharedPruneArguments),
                          namespace={"__module__": __name__})


PruneArguments = _prune_arguments()


ALL_ARGUMENTS = (BenchmarkArguments, DatasetArguments, GenerationArguments, PruneArguments)
DEFAULT_GROUPS = {BenchmarkArguments: ENGINE, DatasetArguments: DATA, GenerationArguments: GENERATION,
                  PruneArguments: PRUNING}


@dataclass
class Arguments:
    """Every benchmark flag, by group."""
    benchmark: BenchmarkArguments
    dataset: DatasetArguments
    generation: GenerationArguments
    prune: PruneArguments
    explicit: frozenset[str] = frozenset()  # the flags the command line gave (a default given counts)

    def as_dict(self) -> dict:
        """All flags in one flat dict (the log's `args`; resume compares it)."""
        return {**asdict(self.benchmark), **asdict(self.dataset), **asdict(self.generation), **asdict(self.prune)}


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineArgumentParser(
        prog="benchmark.py", allow_abbrev=False, usage="%(prog)s [flags]",
        description="Benchmark a (pruned, compressed or layer-skipping) causal LM: generate over a dataset, measure "
                    "quality and speed, write one JSON log per run.")
    add_dataclass_flags(parser, ALL_ARGUMENTS, GROUPS, DEFAULT_GROUPS)
    return parser


def parse_args(argv: list[str] | None = None) -> Arguments:
    namespace, explicit = parse_noting_explicit(build_parser(), argv)
    benchmark, dataset, generation, prune = build_dataclasses(namespace, ALL_ARGUMENTS)
    return Arguments(benchmark=benchmark, dataset=dataset, generation=generation, prune=prune, explicit=explicit)
