"""Checks of train.py's flags that need no model, run before torch is imported: each bad value or meaningless
combination is a UsageError (one `error:` line, exit status 2). Checks against the loaded model's depth are
`check_depth`, called right after loading."""
from __future__ import annotations

import os
from dataclasses import fields

from layerbench.errors import UsageError
from layerbench.models.folder import check_model_folder
from layerbench.runs.flag_checks import check_seed, check_template
from layerbench.runs.folders import check_writable_folder
from layerbench.training import checkpoint
from layerbench.training.arguments import TEXT_FILES, TrainingArguments

CUSTOM = "custom_jsonl"


def _changed(group: object) -> list[str]:
    """Names of the fields of a flag group that differ from their defaults."""
    return [f.name for f in fields(group) if getattr(group, f.name) != f.default]


def check_data(args: TrainingArguments) -> None:
    d = args.data
    if d.data_path is not None and d.dataset not in (CUSTOM, TEXT_FILES):
        raise UsageError(f"--data_path only applies to --dataset {CUSTOM} or {TEXT_FILES}, not {d.dataset}")
    for name in ("prompt_field", "response_field"):
        if name in _changed(d) and d.dataset != CUSTOM:
            raise UsageError(f"--{name} only applies to --dataset {CUSTOM}, not {d.dataset}")
    if d.dataset == TEXT_FILES:
        if not d.data_path:
            raise UsageError(f"--dataset {TEXT_FILES} needs --data_path (a text file or a folder of *.txt files)")
        if not os.path.exists(d.data_path):
            raise UsageError(f"--data_path {d.data_path}: no such file or folder")
        for name, value in (("template", d.template), ("split", d.split)):
            if value is not None:
                raise UsageError(f"--{name} does not apply to --dataset {TEXT_FILES}")
        if d.loss_on != "all":
            raise UsageError(f"--dataset {TEXT_FILES} has no responses: use --loss_on all")
    if d.template is not None:
        check_template(d.template)
    if d.max_length < 2:
        raise UsageError(f"--max_length must be >= 2, got {d.max_length}")
    if d.max_examples is not None and d.max_examples < 1:
        raise UsageError(f"--max_examples must be >= 1, got {d.max_examples}")


def check_optimization(args: TrainingArguments) -> None:
    o = args.optimization
    for name in ("max_train_steps", "batch_size", "gradient_accumulation_steps"):
        if getattr(o, name) < 1:
            raise UsageError(f"--{name} must be >= 1, got {getattr(o, name)}")
    if o.learning_rate <= 0:
        raise UsageError(f"--learning_rate must be > 0, got {o.learning_rate}")
    if not 0 <= o.warmup_steps < o.max_train_steps:
        raise UsageError(f"--warmup_steps must be in [0, --max_train_steps), got {o.warmup_steps}")
    if o.weight_decay < 0 or o.max_grad_norm < 0:
        flag = "--weight_decay" if o.weight_decay < 0 else "--max_grad_norm"
        raise UsageError(f"{flag} must be >= 0, got {o.weight_decay if o.weight_decay < 0 else o.max_grad_norm}")
    check_seed(o.seed, "--seed")


def check_recipe(args: TrainingArguments) -> None:
    r, s = args.layerskip, args.scope
    if not 0 <= r.layer_dropout_max < 1:
        raise UsageError(f"--layer_dropout_max must be in [0, 1), got {r.layer_dropout_max}")
    if r.early_exit_loss_scale < 0:
        raise UsageError(f"--early_exit_loss_scale must be >= 0, got {r.early_exit_loss_scale}")
    if r.early_exit_rotation < 1:
        raise UsageError(f"--early_exit_rotation must be >= 1, got {r.early_exit_rotation}")
    exit_flags = [n for n in _changed(r) if n.startswith("early_exit") and n != "early_exit_loss_scale"]
    if exit_flags and r.early_exit_loss_scale == 0:
        raise UsageError(f"--{exit_flags[0]} only applies with an early-exit loss (--early_exit_loss_scale > 0)")
    if r.early_exit_rotation != 2 and r.early_exit_curriculum != "rotational":
        raise UsageError("--early_exit_rotation only applies to --early_exit_curriculum rotational")
    if r.layer_dropout_curriculum != "constant" and r.layer_dropout_max == 0:
        raise UsageError("--layer_dropout_curriculum only applies with --layer_dropout_max > 0")
    if any(e < 1 for e in r.early_exit_layers or []):
        raise UsageError(f"--early_exit_layers must be >= 1, got {min(r.early_exit_layers)}")
    if s.trainable == "all":
        if s.exit_layer != -1:
            raise UsageError("--exit_layer only applies to --trainable layers_below_exit or exit_adapter")
        return
    if s.exit_layer < 1:
        raise UsageError(f"--trainable {s.trainable} needs --exit_layer E >= 1")
    if s.trainable == "exit_adapter" and _changed(r):
        raise UsageError(f"--{_changed(r)[0]} does not apply to --trainable exit_adapter (the backbone is frozen; "
                         "the adapter trains on the loss at --exit_layer alone)")


def check_output(args: TrainingArguments) -> None:
    out = args.output
    if not out.output_dir:
        raise UsageError("--output_dir is required (the folder of the trained checkpoint)")
    check_writable_folder(out.output_dir, "--output_dir")
    if out.save_every < 0 or out.log_every < 1:
        flag, value = ("--save_every", out.save_every) if out.save_every < 0 else ("--log_every", out.log_every)
        raise UsageError(f"{flag} must be >= {0 if flag == '--save_every' else 1}, got {value}")
    if out.resume:
        checkpoint.check_resumable(out.output_dir, args.recipe())
    elif checkpoint.holds_run(out.output_dir):
        raise UsageError(f"--output_dir {out.output_dir} already holds a training run; pass --resume to continue it "
                         "or choose another folder")


def check_flags(args: TrainingArguments) -> None:
    """Every check that needs neither a model nor data."""
    check_data(args)
    check_optimization(args)
    check_recipe(args)
    check_output(args)
    check_model_folder(args.model.model)


def check_depth(args: TrainingArguments, num_layers: int) -> None:
    """The exit layers against the loaded model's depth L (exits lie in [1, L - 1])."""
    r, s = args.layerskip, args.scope
    too_deep = [e for e in (r.early_exit_layers or []) if e >= num_layers]
    if too_deep:
        raise UsageError(f"--early_exit_layers {too_deep[0]}: must be below the model's {num_layers} layers")
    if s.trainable != "all" and s.exit_layer >= num_layers:
        raise UsageError(f"--exit_layer {s.exit_layer}: must be below the model's {num_layers} layers")

