"""The model card (README.md) saved beside a trained checkpoint: what was trained from what, with which recipe and
data, the losses it ended with, and how to benchmark it."""
from __future__ import annotations

import shlex

from layerbench.training.arguments import TrainingArguments


def _rows(args: TrainingArguments, recipe: dict, data: dict) -> list[tuple[str, str]]:
    o, r, s = args.optimization, args.layerskip, args.scope
    dropout = "off" if r.layer_dropout_max == 0 else (
        f"p_max {r.layer_dropout_max}, S(t) {r.layer_dropout_curriculum}, D(l) = exp(l·ln2/(L-1)) - 1, per sample; "
        f"last-step rates by layer: {', '.join(f'{p:.3f}' for p in recipe['final_dropout_rates'])}")
    exits = "off (last layer only)" if r.early_exit_loss_scale == 0 else (
        f"e_scale {r.early_exit_loss_scale}, curriculum {r.early_exit_curriculum}"
        + (f" (R = {r.early_exit_rotation})" if r.early_exit_curriculum == "rotational" else "")
        + f", exits {recipe['exits']} and the last layer {recipe['num_layers']}")
    scope = s.trainable + ("" if s.trainable == "all" else f" (E = {s.exit_layer})")
    return [("layer dropout", dropout), ("early-exit loss", exits), ("trains", scope),
            ("steps", f"{o.max_train_steps} x {recipe['examples_per_step']} examples (batch {o.batch_size} x "
                      f"accumulation {o.gradient_accumulation_steps} x {recipe['processes']} processes)"),
            ("optimizer", f"AdamW lr {o.learning_rate}, {o.lr_scheduler} after {o.warmup_steps} warm-up steps, "
                          f"weight decay {o.weight_decay}, gradient clipping {o.max_grad_norm or 'off'}"),
            ("precision", args.model.precision), ("seed", str(o.seed)),
            ("data", f"{data.get('dataset')} {data.get('split') or data.get('path') or ''}: {data['examples']} "
                     f"examples, {data['tokens']} tokens ({data['counted_tokens']} counted, loss on "
                     f"{data['loss_on']}), at most {data['max_length']} tokens each")]


def model_card(args: TrainingArguments, base_name: str, recipe: dict, data: dict, final: dict, command: list[str],
               output_dir: str) -> str:
    """README.md text: YAML front matter for the hub, the recipe as a table, final losses, usage."""
    base = args.model.model if args.model.model and not args.model.model.startswith((".", "/", "~")) else None
    front = ["---", "library_name: transformers", *([f"base_model: {base}"] if base else []),
             "tags:", "- layerskip", "- early-exit", "- self-speculative-decoding", "- layerbench", "---", ""]
    table = ["| setting | value |", "|---|---|", *(f"| {k} | {v} |" for k, v in _rows(args, recipe, data))]
    losses = ", ".join(f"exit {e}: {v:.4f}" for e, v in sorted(final.get("mean_exit_losses", {}).items(),
                                                                 key=lambda kv: int(kv[0])))
    exit_layer = args.scope.exit_layer if args.scope.exit_layer > 0 else recipe["num_layers"] // 2
    lines = [f"# {base_name}, trained for early exit", "",
             f"Trained from {base_name} ({recipe['num_layers']} layers) with layerbench's `train.py`: LayerSkip's "
             "recipe (Elhoushi et al. 2024: layer dropout rising with depth, early-exit loss through the shared "
             "final norm and LM head), so that its first layers draft for self-speculative decoding.", "", *table, "",
             f"Mean cross-entropy over the last logged steps: {losses or 'n/a'}; {final.get('seconds', 0):.0f} s of "
             f"training, {final.get('tokens', 0)} tokens.", "",
             "## Use", "", "```bash",
             f"python benchmark.py --model {output_dir} --generation_strategy self_speculative --exit_layer "
             f"{exit_layer} --num_speculations 2", "```", ""]
    if args.scope.trainable == "exit_adapter":
        lines += [f"The backbone is unchanged; the trained exit adapter for exit {args.scope.exit_layer} is in "
                  "`exit_adapter.safetensors` (h -> h + h W^T + b before the final norm).", ""]
    lines += ["## Command", "", "```bash", "python train.py " + shlex.join(command), "```", ""]
    return "\n".join(front + lines)
