"""train.py's flags: dataclasses by help group, parsed with plain argparse (layerbench.flags), so --help and a bad
flag are answered before torch or transformers is imported. The checks of their values live in `flag_checks.py`.
"""
from __future__ import annotations

import argparse
from dataclasses import asdict, dataclass
from typing import Optional

from layerbench import names
from layerbench.errors import OneLineArgumentParser
from layerbench.evaluation.datasets import DATASETS
from layerbench.flags import add_dataclass_flags, build_dataclasses, option

TEXT_FILES = "text_files"  # plain text: a file, or a folder of *.txt files, cut into --max_length windows
PRECISIONS = ("fp32", "bf16")  # accelerate's mixed_precision "no" / "bf16" (weights and optimizer stay fp32)
LOSS_ON = ("response", "all")
SCHEDULERS = ("constant", "linear", "cosine")  # each with --warmup_steps of linear warm-up
# the registries in layer_dropout.py and early_exit_loss.py answer to exactly these (tests/unit/test_training.py)
DROPOUT_CURRICULA = ("constant", "exponential")
EXIT_CURRICULA = ("none", "rotational", "gradual")
TRAINABLE = ("all", "layers_below_exit", "exit_adapter")

MODEL, DATA, OPTIMIZATION = "model", "data", "optimization"
LAYERSKIP, SCOPE, OUTPUT = "layerskip recipe", "what trains", "checkpoints and logs"
GROUPS = {
    MODEL: None,
    DATA: "the benchmark's datasets (their training split), custom_jsonl, or plain text files",
    OPTIMIZATION: "AdamW; several processes: `accelerate launch train.py ...` or `torchrun --nproc_per_node N "
                  "train.py ...` (DDP, or FSDP from accelerate's own config)",
    LAYERSKIP: "layer dropout p(l,t) = S(t)·D(l)·p_max with D(l) = exp(l·ln2/(L-1)) - 1, per sample; early-exit "
               "loss through the final norm and shared LM head, per-exit weights growing with depth, normalized",
    SCOPE: None,
    OUTPUT: None,
}


@dataclass
class ModelArguments:
    model: Optional[str] = option(None, "local model folder or hub id (default: the embedded SmolLM2-135M-Instruct)")
    precision: str = option("fp32", "fp32, or bf16 autocast (weights and optimizer state stay fp32)", PRECISIONS)
    device: str = option("auto", "auto: what accelerate chooses (CUDA when available, else CPU)", names.DEVICES)


@dataclass
class DataArguments:
    dataset: str = option("aclsum_summarization", "prompt/response datasets of benchmark.py (offline: "
                                                  "aclsum_summarization, human_eval, custom_jsonl) or text_files",
                          (*DATASETS, TEXT_FILES))
    data_path: Optional[str] = option(None, "custom_jsonl: the JSONL file; text_files: a text file or a folder of "
                                            "*.txt files")
    split: Optional[str] = option(None, "split to train on (default: the dataset's training split)")
    prompt_field: str = option("prompt", "custom_jsonl: the field holding each prompt")
    response_field: str = option("response", "custom_jsonl: the field holding each response")
    template: Optional[str] = option(None, "prompt template with {input} (default: the dataset's, as benchmark.py)")
    chat_template: str = option("auto", "wrap prompts in the tokenizer's chat template, as benchmark.py does",
                                names.CHAT_TEMPLATE)
    max_length: int = option(512, "tokens per example at most (longer ones are cut at the end); text_files: the "
                                  "window length")
    loss_on: str = option("response", "prompt/response data: which tokens the loss counts (text_files: all)",
                          LOSS_ON)
    max_examples: Optional[int] = option(None, "use only the first N examples of the split (text_files: the first N files)")


@dataclass
class OptimizationArguments:
    max_train_steps: int = option(100, "optimizer steps T (also the length of the curricula)")
    batch_size: int = option(4, "examples per micro-batch on each process")
    gradient_accumulation_steps: int = option(1, "micro-batches per optimizer step")
    learning_rate: float = option(2e-5, "AdamW peak learning rate")
    lr_scheduler: str = option("constant", "learning-rate schedule after the warm-up", SCHEDULERS)
    warmup_steps: int = option(0, "steps of linear warm-up from 0")
    weight_decay: float = option(0.0, "AdamW weight decay")
    max_grad_norm: float = option(1.0, "clip the gradient norm to this (0: no clipping)")
    seed: int = option(42, "data order, layer dropout draws and initialization, in [0, 2**32 - 1]")


@dataclass
class LayerSkipArguments:
    layer_dropout_max: float = option(0.0, "p_max: the last layer's dropout rate (0: no layer dropout), in [0, 1)")
    layer_dropout_curriculum: str = option("constant", "S(t): constant 1 (continual pre-training, fine-tuning) or "
                                                       "exponential exp(t·ln2/T) - 1 (pre-training from scratch)",
                                           DROPOUT_CURRICULA)
    early_exit_loss_scale: float = option(0.0, "e_scale of the early-exit loss (0: only the last layer's loss)")
    early_exit_curriculum: str = option("none", "which exits count at step t: none (every exit), rotational (every "
                                                "R-th exit, rotating each step), gradual (enabled from the last "
                                                "layer down over training); the last layer always counts",
                                        EXIT_CURRICULA)
    early_exit_rotation: int = option(2, "rotational curriculum: R")
    early_exit_layers: Optional[list[int]] = option(None, "the exits E (after layers [0, E)) the loss may use "
                                                          "(default: every layer 1..L-1)")


@dataclass
class ScopeArguments:
    trainable: str = option("all", "all: every parameter; layers_below_exit: only decoder layers [0, E); "
                                   "exit_adapter: only a linear exit adapter at E, trained on the exit's loss, the "
                                   "backbone frozen (the last layer's outputs stay bit-exact)", TRAINABLE)
    exit_layer: int = option(-1, "E for --trainable layers_below_exit / exit_adapter")


@dataclass
class OutputArguments:
    output_dir: Optional[str] = option(None, "folder of the trained checkpoint (standard Hugging Face, with a model "
                                             "card), training_log.json and checkpoints/ (required)")
    save_every: int = option(0, "save the training state every N steps (0: only at the end); the last one is kept")
    resume: bool = option(False, "continue the run in --output_dir from its last saved state (same flags): same "
                                 "step, data order and optimizer state")
    log_every: int = option(1, "steps between entries of the training log")
    progress: bool = option(True, "a progress bar with the loss at each active exit")


ALL_ARGUMENTS = (ModelArguments, DataArguments, OptimizationArguments, LayerSkipArguments, ScopeArguments,
                 OutputArguments)
DEFAULT_GROUPS = {ModelArguments: MODEL, DataArguments: DATA, OptimizationArguments: OPTIMIZATION,
                  LayerSkipArguments: LAYERSKIP, ScopeArguments: SCOPE, OutputArguments: OUTPUT}
# flags that may differ between a run and its --resume (everything else must match)
RESUME_MAY_CHANGE = ("resume", "progress", "save_every", "log_every", "output_dir")


@dataclass
class TrainingArguments:
    """Every train.py flag, by group."""
    model: ModelArguments
    data: DataArguments
    optimization: OptimizationArguments
    layerskip: LayerSkipArguments
    scope: ScopeArguments
    output: OutputArguments

    def as_dict(self) -> dict:
        return {k: v for group in (self.model, self.data, self.optimization, self.layerskip, self.scope,
                                   self.output) for k, v in asdict(group).items()}

    def recipe(self) -> dict:
        """The flags that decide the trained weights (what --resume compares)."""
        return {k: v for k, v in self.as_dict().items() if k not in RESUME_MAY_CHANGE}


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineArgumentParser(
        prog="train.py", allow_abbrev=False, usage="%(prog)s --output_dir DIR [flags]",
        description="Train a causal LM for early exit (LayerSkip: layer dropout and early-exit loss) and save it as "
                    "a standard Hugging Face checkpoint.")
    add_dataclass_flags(parser, ALL_ARGUMENTS, GROUPS, DEFAULT_GROUPS)
    return parser


def parse_args(argv: list[str] | None = None) -> TrainingArguments:
    return TrainingArguments(*build_dataclasses(build_parser().parse_args(argv), ALL_ARGUMENTS))
