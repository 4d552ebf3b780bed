"""Training examples and their order.

Prompt/response datasets (the benchmark's registry: aclsum, human_eval, custom_jsonl, hub datasets) become the
prompt exactly as benchmark.py builds it (template, chat template) followed by the response tokenized as the
benchmark's reference perplexity does, plus end-of-sequence; `--loss_on response` counts only the response
tokens. Plain text (`text_files`) is tokenized, joined with end-of-sequence and cut into windows of --max_length.

The order is a function of the step alone: epoch k is a permutation seeded by (seed, k), and optimizer step t
takes the next batch_size x accumulation x processes examples of that endless sequence, so a resumed run reads
exactly the examples the uninterrupted one would have. Reading the records needs no torch (the flag checks)."""
from __future__ import annotations

import glob
import os
import random
from dataclasses import dataclass, field
from typing import Any

from layerbench.errors import UsageError
from layerbench.evaluation import datasets
from layerbench.training.arguments import TEXT_FILES, DataArguments

IGNORE = -100


@dataclass
class Records:
    kind: str  # "pairs" (datasets.Sample) or "text" (strings)
    items: list
    source: dict  # for the log: dataset, split, path


@dataclass
class Example:
    input_ids: list[int]
    labels: list[int]  # IGNORE where the loss does not count


def _text_files(path: str) -> list[str]:
    files = [path] if os.path.isfile(path) else sorted(glob.glob(os.path.join(path, "**", "*.txt"), recursive=True))
    if not files:
        raise UsageError(f"--data_path {path}: no *.txt files")
    return files


def load_records(d: DataArguments) -> Records:
    """The raw training records (before tokenization)."""
    if d.dataset == TEXT_FILES:
        texts = []
        for path in _text_files(d.data_path):
            with open(path, encoding="utf-8", errors="replace") as f:
                texts.append(f.read())
        return Records("text", texts[:d.max_examples], {"dataset": TEXT_FILES, "path": d.data_path})
    spec = datasets.get_spec(d.dataset)
    split = d.split or spec.train_split
    if split is None and d.dataset != "custom_jsonl":
        raise UsageError(f"--dataset {d.dataset} has no training split; --split {spec.eval_split} trains on its only "
                         "split (which benchmark.py then evaluates on)")
    options = datasets.DatasetOptions(data_path=d.data_path, prompt_field=d.prompt_field,
                                      response_field=d.response_field)
    split, samples = datasets.load_split(d.dataset, split, options)
    return Records("pairs", samples[:d.max_examples], {"dataset": d.dataset, "split": split, "path": d.data_path})


def _pair(tokenizer, sample: datasets.Sample, d: DataArguments, template: str, use_chat: bool) -> Example:
    from layerbench.evaluation.perplexity import reference_ids
    prompt = datasets.build_prompt(tokenizer, datasets.fill_template(template, sample.input), use_chat)
    response = reference_ids(tokenizer, sample.reference, use_chat) + [tokenizer.eos_token_id]
    counted_prompt = [IGNORE] * len(prompt) if d.loss_on == "response" else list(prompt)
    ids, labels = (prompt + response)[:d.max_length], (counted_prompt + response)[:d.max_length]
    return Example(ids, labels)


def _windows(tokenizer, texts: list[str], length: int) -> list[Example]:
    stream = [t for text in texts for t in tokenizer(text)["input_ids"] + [tokenizer.eos_token_id]]
    chunks = [stream[i:i + length] for i in range(0, len(stream), length)]
    return [Example(c, list(c)) for c in chunks if len(c) >= 2]


def tokenize(records: Records, tokenizer, d: DataArguments) -> tuple[list[Example], dict]:
    """The examples (each with at least one counted token) and the data section of the log."""
    if records.kind == "text":
        examples = _windows(tokenizer, records.items, d.max_length)
        truncated = 0
    else:
        template = d.template or datasets.get_spec(d.dataset).template
        use_chat = datasets.use_chat_template(tokenizer, d.chat_template)
        examples = [_pair(tokenizer, s, d, template, use_chat) for s in records.items]
        truncated = sum(len(e.input_ids) == d.max_length for e in examples)
    examples = [e for e in examples if any(label != IGNORE for label in e.labels[1:])]
    if not examples:
        raise UsageError("no training example has a token to learn (check --max_length and --loss_on)")
    report = {**records.source, "examples": len(examples), "tokens": sum(len(e.input_ids) for e in examples),
              "counted_tokens": sum(sum(x != IGNORE for x in e.labels[1:]) for e in examples),
              "cut_at_max_length": truncated, "max_length": d.max_length, "loss_on": d.loss_on}
    return examples, report


@dataclass
class DataOrder:
    """Which examples each process reads for each micro-batch of each optimizer step."""
    num_examples: int
    batch_size: int
    accumulation: int
    processes: int
    seed: int
    _permutations: dict[int, list[int]] = field(default_factory=dict, init=False, repr=False)

    def _example(self, position: int) -> int:
        epoch, index = divmod(position, self.num_examples)
        if epoch not in self._permutations:
            order = list(range(self.num_examples))
            random.Random(f"{self.seed}:{epoch}").shuffle(order)
            self._permutations = {epoch: order}  # one epoch at a time is all a run reads
        return self._permutations[epoch][index]

    def rows(self, step: int, micro: int, rank: int) -> list[int]:
        per_step = self.batch_size * self.accumulation * self.processes
        start = step * per_step + (micro * self.processes + rank) * self.batch_size
        return [self._example(p) for p in range(start, start + self.batch_size)]


def collate(examples: list[Example], pad_id: int) -> dict[str, Any]:
    """Right-padded (B, T) input_ids, attention_mask and labels (IGNORE on padding)."""
    import torch
    width = max(len(e.input_ids) for e in examples)
    ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    labels = torch.full((len(examples), width), IGNORE, dtype=torch.long)
    mask = torch.zeros((len(examples), width), dtype=torch.long)
    for row, e in enumerate(examples):
        ids[row, :len(e.input_ids)] = torch.tensor(e.input_ids)
        labels[row, :len(e.labels)] = torch.tensor(e.labels)
        mask[row, :len(e.input_ids)] = 1
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}
