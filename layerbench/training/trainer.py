"""The training loop, on accelerate: one process, or several under `accelerate launch` / torchrun (DDP, or FSDP as
accelerate's own config says), fp32 or bf16 autocast, gradient accumulation over micro-batches (gradients
synchronized on the last one only), gradient clipping, AdamW with a warm-up schedule, a progress bar with the
loss at each active exit, the JSON training log, a saved state every --save_every steps, --resume, and the final
Hugging Face checkpoint with its model card.

Everything random in a step (which rows skip which layer) is drawn from a generator seeded by (seed, step,
micro-batch, process), and the data order is a function of the step (`data.DataOrder`), so a resumed run repeats
the uninterrupted one exactly."""
from __future__ import annotations

import contextlib
import os
import random
import sys
import time
from dataclasses import dataclass, field
from typing import Any

import torch
from tqdm import tqdm

from layerbench.errors import UsageError
from layerbench.training import checkpoint
from layerbench.training.arguments import TrainingArguments
from layerbench.training.data import DataOrder, Example, Records, collate, tokenize
from layerbench.training.early_exit_loss import active_exits, normalized_weights
from layerbench.training.flag_checks import check_depth
from layerbench.training.forward import LayerSkipModel, StepPlan
from layerbench.training.layer_dropout import dropout_rates, sample_skips
from layerbench.training.model_card import model_card
from layerbench.training.saving import save_trained
from layerbench.training.training_log import TrainingLog

SCHEDULER_NAMES = {"constant": "constant_with_warmup", "linear": "linear", "cosine": "cosine"}
LOSS_WINDOW = 10  # logged steps averaged for the final losses


@dataclass
class Run:
    """What the loop needs, prepared."""
    args: TrainingArguments
    accelerator: object
    model: object  # the prepared LayerSkipModel
    optimizer: object
    scheduler: object
    examples: list[Example]
    order: DataOrder
    pad_id: int
    num_layers: int
    log: TrainingLog
    start_step: int = 0
    totals: dict = field(default_factory=lambda: {"tokens": 0, "seconds": 0.0})  # over every step so far

    @property
    def module(self) -> LayerSkipModel:
        return self.accelerator.unwrap_model(self.model)


def build_accelerator(args: TrainingArguments) -> Any:
    from accelerate import Accelerator
    from accelerate.utils import DistributedDataParallelKwargs
    # a layer every row skipped, or an exit not active this step, leaves parameters without gradients
    handlers = [DistributedDataParallelKwargs(find_unused_parameters=True)]
    if args.model.device == "cuda" and not torch.cuda.is_available():
        raise UsageError("--device cuda: CUDA is not available on this machine")
    # accelerate runs several CPU processes (gloo) only when told cpu=True
    cpu = args.model.device == "cpu" or (args.model.device == "auto" and not torch.cuda.is_available())
    if cpu and int(os.environ.get("LOCAL_WORLD_SIZE", 1)) > 1:  # each process its share of the cores
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // int(os.environ["LOCAL_WORLD_SIZE"])))
    return Accelerator(mixed_precision={"fp32": "no", "bf16": "bf16"}[args.model.precision], cpu=cpu,
                       kwargs_handlers=handlers)


def exit_candidates(args: TrainingArguments, num_layers: int) -> list[int]:
    return sorted(set(args.layerskip.early_exit_layers or range(1, num_layers)))


def step_plan(run: Run, step: int, micro: int, batch: int) -> StepPlan:
    """Layer skips (per row) and active exits of one micro-batch."""
    a, r, L = run.args, run.args.layerskip, run.num_layers
    if a.scope.trainable == "exit_adapter":
        return run.module.plan_for_adapter(batch, run.accelerator.device)
    skips = None
    if r.layer_dropout_max > 0:
        rates = dropout_rates(step, a.optimization.max_train_steps, L, r.layer_dropout_max, r.layer_dropout_curriculum)
        seed = random.Random(f"{a.optimization.seed}:{step}:{micro}:{run.accelerator.process_index}").getrandbits(63)
        skips = sample_skips(rates, batch, torch.Generator().manual_seed(seed))
    exits = [L]
    if r.early_exit_loss_scale > 0:
        exits = active_exits(step, a.optimization.max_train_steps, exit_candidates(a, L), r.early_exit_curriculum,
                             r.early_exit_rotation, L)
    return StepPlan(skips, normalized_weights(exits, L, r.early_exit_loss_scale))


def one_step(run: Run, step: int) -> dict:
    """One optimizer step over the accumulated micro-batches; returns its log entry."""
    acc, o = run.accelerator, run.args.optimization
    started = time.perf_counter()
    losses: dict[int, float] = {}
    total, tokens, skipped = 0.0, 0, []
    for micro in range(o.gradient_accumulation_steps):
        rows = run.order.rows(step, micro, acc.process_index)
        batch = {k: v.to(acc.device) for k, v in collate([run.examples[i] for i in rows], run.pad_id).items()}
        plan = step_plan(run, step, micro, len(rows))
        last = micro == o.gradient_accumulation_steps - 1
        with contextlib.nullcontext() if last else acc.no_sync(run.model):
            loss, exit_losses = run.model(**batch, plan=plan)
            acc.backward(loss / o.gradient_accumulation_steps)
        total += float(loss.detach()) / o.gradient_accumulation_steps
        for e, value in exit_losses.items():
            losses[e] = losses.get(e, 0.0) + float(value.detach()) / o.gradient_accumulation_steps
        tokens += int(batch["attention_mask"].sum())
        if plan.skips is not None:
            skipped.append(float(plan.skips.float().mean()))
    if o.max_grad_norm > 0:
        acc.clip_grad_norm_([p for p in run.model.parameters() if p.requires_grad], o.max_grad_norm)
    learning_rate = run.scheduler.get_last_lr()[0]
    run.optimizer.step()
    run.scheduler.step()
    run.optimizer.zero_grad(set_to_none=True)
    names = sorted(losses)
    values = acc.reduce(torch.tensor([total, *(losses[e] for e in names)], device=acc.device), reduction="mean")
    return {"step": step + 1, "loss": float(values[0]), "exit_losses": {str(e): float(v) for e, v in
                                                                        zip(names, values[1:])},
            "learning_rate": learning_rate, "tokens": int(acc.reduce(torch.tensor(tokens, device=acc.device),
                                                                     reduction="sum")),
            "seconds": time.perf_counter() - started,
            "skipped_layer_rows": sum(skipped) / len(skipped) if skipped else 0.0}


def postfix(entry: dict, num_layers: int) -> str:
    exits = " ".join(f"{'L' if int(e) == num_layers else 'E'}{e} {v:.3f}" for e, v in entry["exit_losses"].items())
    return f"loss {entry['loss']:.3f} | {exits}"


def run_steps(run: Run) -> None:
    a, acc = run.args, run.accelerator
    total = a.optimization.max_train_steps
    bar = tqdm(total=total, initial=run.start_step, desc="training", file=sys.stderr, dynamic_ncols=True,
               disable=not (acc.is_main_process and a.output.progress))
    for step in range(run.start_step, total):
        entry = one_step(run, step)
        run.totals = {"tokens": run.totals["tokens"] + entry["tokens"],
                      "seconds": run.totals["seconds"] + entry["seconds"]}
        bar.update(1)
        bar.set_postfix_str(postfix(entry, run.num_layers))
        if acc.is_main_process and ((step + 1) % a.output.log_every == 0 or step + 1 == total):
            run.log.add(entry)
            run.log.write()
        if a.output.save_every and (step + 1) % a.output.save_every == 0 and step + 1 < total:
            checkpoint.save(acc, a.output.output_dir, step + 1, {"recipe": a.recipe(), "totals": run.totals})
    bar.close()


def final_summary(run: Run) -> dict:
    recent = run.log.doc["steps"][-LOSS_WINDOW:]
    names = sorted({e for entry in recent for e in entry["exit_losses"]}, key=int)
    means = {e: sum(x["exit_losses"][e] for x in recent if e in x["exit_losses"])
             / sum(e in x["exit_losses"] for x in recent) for e in names}
    return {"steps": run.args.optimization.max_train_steps, "mean_exit_losses": means,
            "mean_loss": sum(e["loss"] for e in recent) / max(len(recent), 1), **run.totals,
            "tokens_per_second": run.totals["tokens"] / max(run.totals["seconds"], 1e-9)}


def recipe_section(args: TrainingArguments, num_layers: int, processes: int) -> dict:
    """The recipe resolved for this model: depth, exits, the rates and weights it implies."""
    r, o = args.layerskip, args.optimization
    exits = exit_candidates(args, num_layers) if r.early_exit_loss_scale > 0 else []
    first = normalized_weights(active_exits(0, o.max_train_steps, exits, r.early_exit_curriculum,
                                            r.early_exit_rotation, num_layers) if exits else [num_layers],
                               num_layers, r.early_exit_loss_scale)
    return {"num_layers": num_layers, "exits": exits, "processes": processes,
            "examples_per_step": o.batch_size * o.gradient_accumulation_steps * processes,
            "final_dropout_rates": dropout_rates(o.max_train_steps - 1, o.max_train_steps, num_layers,
                                                 r.layer_dropout_max, r.layer_dropout_curriculum),
            "exit_weights_at_step_0": {str(e): w for e, w in first.items()}}


def prepare(args: TrainingArguments, records: Records) -> tuple:
    """(accelerator, loaded model, its LayerSkipModel, the examples and the data report)."""
    from layerbench.models.loading import load_model
    acc = build_accelerator(args)
    loaded = load_model(args.model.model, dtype="float32", device="cpu")
    num_layers = loaded.model.config.num_hidden_layers
    check_depth(args, num_layers)
    examples, data_report = tokenize(records, loaded.tokenizer, args.data)
    loaded.model.train()
    module = LayerSkipModel(loaded.model, args.scope.trainable, args.scope.exit_layer)
    return acc, loaded, module, examples, data_report


def optimizer_and_schedule(args: TrainingArguments, module: LayerSkipModel) -> tuple:
    from transformers import get_scheduler
    o = args.optimization
    params = [p for p in module.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=o.learning_rate, weight_decay=o.weight_decay)
    scheduler = get_scheduler(SCHEDULER_NAMES[o.lr_scheduler], optimizer, num_warmup_steps=o.warmup_steps,
                              num_training_steps=o.max_train_steps)
    return optimizer, scheduler


def train(args: TrainingArguments, records: Records, command: list[str]) -> int:
    """Train, save the checkpoint, and return 0."""
    from layerbench.runs.folders import create_folder
    from layerbench.runs.run_log import environment
    acc, loaded, module, examples, data_report = prepare(args, records)
    if acc.is_main_process:
        create_folder(args.output.output_dir, "--output_dir")
    optimizer, scheduler = optimizer_and_schedule(args, module)
    model, optimizer = acc.prepare(module, optimizer)
    acc.register_for_checkpointing(scheduler)  # stepped once per optimizer step (not per process, as prepare would)
    o, out = args.optimization, args.output
    run = Run(args, acc, model, optimizer, scheduler, examples,
              DataOrder(len(examples), o.batch_size, o.gradient_accumulation_steps, acc.num_processes, o.seed),
              loaded.tokenizer.pad_token_id if loaded.tokenizer.pad_token_id is not None else
              loaded.tokenizer.eos_token_id, module.num_layers, None)
    params = sum(p.numel() for p in module.parameters())
    sections = {"args": args.as_dict(), "command": ["train.py", *command], "recipe": recipe_section(
        args, module.num_layers, acc.num_processes), "data": data_report, "environment": environment(
        acc.device, acc.num_processes), "model": {"name": loaded.name, "source": loaded.source, "parameters": params,
                                                  "trainable_parameters": sum(p.numel() for p in module.parameters()
                                                                              if p.requires_grad)}}
    if out.resume:
        state = checkpoint.restore(acc, out.output_dir)
        run.start_step, run.totals = state["step"], state["totals"]
        run.log = TrainingLog.resume(out.output_dir, run.start_step, sections)
    else:
        run.log = TrainingLog.start(out.output_dir, sections)
    if acc.is_main_process:
        run.log.write()
    run_steps(run)
    run.log.finish(final_summary(run))
    card = model_card(args, loaded.name, run.log.doc["recipe"], data_report, run.log.doc["final"], command,
                      out.output_dir)
    save_trained(acc, model, loaded.tokenizer, out.output_dir, card)
    if acc.is_main_process:
        run.log.write()
    return 0
