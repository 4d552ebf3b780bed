"""The lm-eval model `layerbench`: every request runs through this project's engine, on the model as
benchmark.py builds it from the same flags (given as model_args).

loglikelihood / loglikelihood_rolling score with the pruned model's full forward, or with blocks [0, E) + exit
adapter + head when early exit is chosen (autoregressive with exit_layer > 0); self-speculative runs score with
the full model, which is what their verification computes. generate_until runs the chosen generation strategy
(autoregressive, early exit, self-speculative) from `layerbench.decoding.STRATEGIES`. Tokenization, truncation and
rolling windows follow lm-eval's own `hf` model, so the two agree on an unpruned model.
"""
from __future__ import annotations

import dataclasses
from itertools import groupby

import torch
from lm_eval import utils
from lm_eval.api.model import TemplateLM
from lm_eval.api.registry import register_model
from lm_eval.models.utils import (Collator, handle_stop_sequences, has_bos_prefix, normalize_gen_kwargs,
                                  postprocess_generated_text, resolve_max_length)
from tqdm import tqdm

from layerbench.decoding.sampling import SamplingConfig, StopCondition, TokenChooser
from layerbench.errors import UsageError
from layerbench.harness.model_args import build
from layerbench.harness.scoring import Scorer
from layerbench.runs.prepare import Prepared

DEFAULT_MAX_GEN_TOKS = 256
LONE_BATCH_TOKENS = 8192  # padded tokens per batched scoring pass: bounds its activations and logits


def device_flag(device: str | None) -> str | None:
    """lm-eval's --device (its CLI defaults to cuda:0 even without a GPU) -> the benchmark's --device: cpu, or
    cuda where there is one (the engine places the model on cuda:0 or by --device_map), else auto."""
    if device is None or device == "cpu":
        return device
    import torch
    return "cuda" if device.startswith("cuda") and torch.cuda.is_available() else "auto"


def batch_size_of(value) -> int:
    """lm-eval's batch_size ("auto", "auto:N", or a number) -> requests per chunk (0: all at once; padded
    passes are capped at LONE_BATCH_TOKENS tokens, so no size can run out of memory)."""
    text = str(value)
    if text.startswith("auto"):
        return 0
    if not text.isdigit() or int(text) < 1:
        raise UsageError(f"batch_size must be a positive integer or auto, got {value!r}")
    return int(text)


def whole_number(name: str, value) -> int | None:
    """model_args max_length / max_gen_toks: None, or an integer >= 1 (lm-eval's CLI may hand it over as 512.0)."""
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
        raise UsageError(f"model_args {name} must be a whole number >= 1, got {value!r}")
    return value


def worth_sharing(context: int, continuations: list[int]) -> bool:
    """Prefill a shared context once (then one pass per continuation) when that saves at least half of the
    tokens the group would otherwise run: true for multiple-choice questions, false for rolling windows, whose
    shared context is the one prefix token."""
    alone = len(continuations) * context + sum(continuations)
    return (len(continuations) - 1) * context * 2 >= alone


@register_model("layerbench")
class LayerbenchLM(TemplateLM):
    def __init__(self, batch_size: int | str = 1, max_batch_size: int | None = None, device: str | None = None,
                 max_length: int | None = None, max_gen_toks: int = DEFAULT_MAX_GEN_TOKS,
                 prepared: Prepared | None = None, seed: int = 42, **model_args) -> None:
        super().__init__()
        max_length, max_gen_toks = (whole_number(name, value) for name, value in (("max_length", max_length),
                                                                                  ("max_gen_toks", max_gen_toks)))
        if prepared is None:
            prepared = build({**model_args, "seed": seed, "device": device_flag(device)})
        self.prepared = prepared
        self.engine = prepared.engine
        self.engine.static = None  # lm-eval prompts have any length; captured fixed-shape steps are for timing
        self.tokenizer = prepared.loaded.tokenizer
        self.batch_size_per_chunk = batch_size_of(batch_size)
        self._max_length = max_length or resolve_max_length(prepared.loaded.model.config, self.tokenizer)
        self._max_gen_toks = int(max_gen_toks)
        self.seed = seed
        generation = prepared.generation
        early_exit = generation.exit_block > 0 and generation.num_speculations == 0
        self.scorer = Scorer(self.engine, generation.exit_block if early_exit else -1)

    @property
    def eot_token_id(self) -> int:
        return self.tokenizer.eos_token_id

    @property
    def prefix_token_id(self) -> int:
        bos = self.tokenizer.bos_token_id
        return bos if bos is not None else self.tokenizer.eos_token_id

    @property
    def max_length(self) -> int:
        return self._max_length

    @property
    def max_gen_toks(self) -> int:
        return self._max_gen_toks

    @property
    def tokenizer_name(self) -> str:
        return self.tokenizer.name_or_path.replace("/", "__")

    def apply_chat_template(self, chat_history: list[dict[str, str]], add_generation_prompt: bool = True) -> str:
        return self.tokenizer.apply_chat_template(chat_history, tokenize=False,
                                                  add_generation_prompt=add_generation_prompt)

    def tok_encode(self, string: str, add_special_tokens: bool | None = None, left_truncate_len: int | None = None,
                   **kwargs) -> list[int]:
        special = {} if add_special_tokens is None else {"add_special_tokens": add_special_tokens}
        if add_special_tokens is None and has_bos_prefix(string, self.tokenizer.decode(self.prefix_token_id)):
            special = {"add_special_tokens": False}  # the string already starts with BOS
        encoding = self.tokenizer.encode(string, **special)
        return encoding[-left_truncate_len:] if left_truncate_len else encoding

    def _split(self, context: list[int], continuation: list[int]) -> tuple[tuple[int, ...], list[int]]:
        """The (left-truncated) context the continuation is scored after, as lm-eval's hf model truncates."""
        whole = (context + continuation)[-(self.max_length + 1):]
        return tuple(whole[: len(whole) - len(continuation)]), continuation

    def _loglikelihood_tokens(self, requests, disable_tqdm: bool = False, **kwargs) -> list[tuple[float, bool]]:
        split = [self._split(context, continuation) for _, context, continuation in requests]
        order = Collator(list(range(len(split))), sort_fn=lambda i: (-len(split[i][0]), split[i][0],
                                                                     -len(split[i][1])))
        results = []
        bar = tqdm(total=len(requests), disable=disable_tqdm, desc="layerbench loglikelihood")
        for chunk in order.get_batched(n=self.batch_size_per_chunk):
            results += self._score_chunk([split[i] for i in chunk])
            bar.update(len(chunk))
        bar.close()
        answers = order.get_original(results)
        for (key, _, _), answer in zip(requests, answers):
            if key is not None and key[0] is not None:
                self.cache_hook.add_partial("loglikelihood", key, answer)
        return answers

    def _score_chunk(self, chunk: list[tuple[tuple[int, ...], list[int]]]) -> list[tuple[float, bool]]:
        """Scores of one chunk, in order: requests sharing a context prefill it once where that is worth it;
        without a layer policy the others run together in padded passes of at most `LONE_BATCH_TOKENS` tokens."""
        groups = [(context, [continuation for _, continuation in members])
                  for context, members in groupby(chunk, key=lambda request: request[0])]
        results, pending = [], []
        for context, continuations in groups:
            if self.engine.policy is None and not worth_sharing(len(context), list(map(len, continuations))):
                pending += [(list(context), continuation) for continuation in continuations]
                continue
            results += self._flush(pending) + self.scorer.score_group(list(context), continuations)
            pending = []
        return results + self._flush(pending)

    def _flush(self, pending: list[tuple[list[int], list[int]]]) -> list[tuple[float, bool]]:
        """Score lone requests (sorted longest first) in padded passes of at most LONE_BATCH_TOKENS tokens."""
        scores, start = [], 0
        while start < len(pending):
            width = len(pending[start][0]) + len(pending[start][1])
            rows = max(1, min(len(pending) - start, LONE_BATCH_TOKENS // max(width, 1)))
            scores += self.scorer.score_lone(pending[start:start + rows])
            start += rows
        return scores

    def loglikelihood_rolling(self, requests, disable_tqdm: bool = False) -> list[float]:
        windows, owners = [], []
        for index, (string,) in enumerate(req.args for req in requests):
            for window in map(utils.make_disjoint_window, utils.get_rolling_token_windows(
                    token_list=self.tok_encode(string), prefix_token=self.prefix_token_id,
                    max_seq_len=self.max_length, context_len=1)):
                windows.append((None,) + window)
                owners.append(index)
        scores = self._loglikelihood_tokens(windows, disable_tqdm=disable_tqdm)
        totals = [0.0] * len(requests)
        for index, (logprob, _) in zip(owners, scores):
            totals[index] += logprob
        for req, total in zip(requests, totals):
            self.cache_hook.add_partial("loglikelihood_rolling", req.args, total)
        return totals

    def _chooser(self, kwargs: dict) -> TokenChooser:
        sample = bool(kwargs.get("do_sample"))
        config = SamplingConfig(sample=sample, temperature=float(kwargs.get("temperature") or 1.0) if sample else 0.6,
                                top_k=int(kwargs.get("top_k") or 0), top_p=float(kwargs.get("top_p") or 1.0),
                                seed=self.seed)
        return TokenChooser(config, self.engine.device)

    def _generate_one(self, context: str, gen_kwargs: dict) -> str:
        kwargs = normalize_gen_kwargs(dict(gen_kwargs), self.max_gen_toks)
        eos = self.tokenizer.decode(self.eot_token_id, skip_special_tokens=False)
        until = handle_stop_sequences(kwargs.pop("until", None), eos=eos)
        max_gen_toks = int(kwargs.pop("max_gen_toks"))
        prompt_ids = self.tok_encode(context, left_truncate_len=self.max_length - max_gen_toks)
        p = self.prepared
        config = dataclasses.replace(p.generation, max_steps=max_gen_toks)
        stop = StopCondition(set(p.stop.stop_token_ids), [u for u in until if u], self.tokenizer)
        prompt = torch.tensor([prompt_ids], device=self.engine.device)
        result = p.strategy.generate(self.engine, prompt, config, self._chooser(kwargs), stop)
        text = self.tokenizer.decode(result.token_ids, skip_special_tokens=True)
        return postprocess_generated_text(text, until, None)

    def generate_until(self, requests, disable_tqdm: bool = False) -> list[str]:
        order = Collator([req.args for req in requests], sort_fn=lambda r: (-len(self.tok_encode(r[0])), r[0]),
                         group_by="gen_kwargs", group_fn=lambda r: r[1])
        results = []
        for chunk in tqdm(order.get_batched(n=self.batch_size_per_chunk), disable=disable_tqdm,
                          desc="layerbench generate_until"):
            for context, gen_kwargs in chunk:
                results.append(self._generate_one(context, gen_kwargs))
                self.cache_hook.add_partial("generate_until", (context, gen_kwargs), results[-1])
        return order.get_original(results)
