"""Our own decoding loop over the model's decoder layers: autoregressive (optionally early-exit) and
LayerSkip-style self-speculative decoding. Every variant (base, pruned, compressed) runs through this file,
so their timings are comparable.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

from fast_linear import few_row_kernel_applies, use_few_row_linears
from kv_cache import KVCache
from model_adapter import get_adapter
from sampling import StopCondition, TokenChooser


@dataclass
class GenerationResult:
    token_ids: list[int]
    time_to_first_token: float
    total_time: float
    num_drafted: int = 0
    num_accepted: int = 0
    stopped: bool = False  # True when an EOS / stop word ended generation before max_steps


class Decoder:
    """Runs a contiguous range of decoder layers over a KV cache, plus the final norm and LM head.

    With `optimize=True` (default) and an fp32 CPU model, the model's nn.Linear modules switch in place to the
    faster few-row product of `fast_linear` (same weights, same state dict)."""

    def __init__(self, model: nn.Module, optimize: bool = True) -> None:
        self.model = model
        self.adapter = get_adapter(model)
        self.layers = self.adapter.layers(model)
        self.norm = self.adapter.norm(model)
        self.head = self.adapter.head(model)
        self.device = next(model.parameters()).device
        self.dtype = next(model.parameters()).dtype
        self.linear_kernel = "torch"
        if optimize and few_row_kernel_applies(model):
            use_few_row_linears(model)
            self.linear_kernel = "few_row_mm"
        # SDPA applies causality itself when no mask is given and nothing is cached (prefill)
        self._sdpa = getattr(model.config, "_attn_implementation", None) == "sdpa"
        self._mask_cache: dict[tuple[int, int], torch.Tensor] = {}

    def refresh_kernels(self) -> None:
        """Give linears created since construction (e.g. by adjust_compression_level) the same kernel, so that
        every variant is timed through the same code."""
        if self.linear_kernel == "few_row_mm":
            use_few_row_linears(self.model)

    @property
    def num_layers(self) -> int:
        return len(self.layers)

    def new_cache(self, max_length: int) -> KVCache:
        return KVCache(self.num_layers, max_length)

    def _mask(self, q: int, past: int) -> torch.Tensor | None:
        if q == 1 or (past == 0 and self._sdpa):
            return None
        key = (q, past)
        mask = self._mask_cache.get(key)
        if mask is None:
            mask = causal_mask(q, past, self.dtype, self.device)
            if len(self._mask_cache) > 64:
                self._mask_cache.clear()
            self._mask_cache[key] = mask
        return mask

    def run(self, cache: KVCache | None, position: int, start: int, end: int,
            input_ids: torch.Tensor | None = None, hidden: torch.Tensor | None = None) -> torch.Tensor:
        """Run layers [start, end) on tokens at positions position.. (from ids, or from the hidden states
        entering layer `start`), writing their keys/values into the cache. Returns the output hidden states."""
        q = (input_ids if hidden is None else hidden).shape[1]
        positions = torch.arange(position, position + q, device=self.device)[None]
        if hidden is None:
            hidden = self.adapter.embed(self.model, input_ids, positions)
        extra = self.adapter.layer_kwargs(self.model, hidden, positions)
        mask = self._mask(q, position)
        for layer in self.layers[start:end]:
            hidden = self.adapter.call_layer(layer, hidden, extra, mask, cache)
        return hidden

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.head(self.norm(hidden))


def causal_mask(q: int, past: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """Additive (1, 1, q, past + q) mask: query i (at position past + i) sees keys 0 .. past + i."""
    rows = torch.arange(q, device=device)[:, None] + past
    cols = torch.arange(past + q, device=device)[None, :]
    mask = torch.zeros(q, past + q, dtype=dtype, device=device)
    return mask.masked_fill_(cols > rows, torch.finfo(dtype).min)[None, None]


class _Clock:
    def __init__(self, device: torch.device) -> None:
        self.cuda = device.type == "cuda"

    def now(self) -> float:
        if self.cuda:
            torch.cuda.synchronize()
        return time.perf_counter()


def _ids(token: int, device: torch.device) -> torch.Tensor:
    return torch.tensor([[token]], device=device)


class _Tokens:
    """Prompt + generated tokens in one preallocated row, so logits processors get a prefix without copies."""

    def __init__(self, prompt: torch.Tensor, capacity: int) -> None:
        self.buf = torch.empty(1, capacity, dtype=torch.long, device=prompt.device)
        self.n = prompt.shape[1]
        self.buf[:, : self.n] = prompt
        self.prompt_len = self.n

    def prefix(self, extra: list[int] = ()) -> torch.Tensor:
        """Prefix row including `extra` tokens appended after the committed ones (not committed)."""
        m = len(extra)
        if m:
            self.buf[0, self.n: self.n + m] = torch.tensor(extra, device=self.buf.device)
        return self.buf[:, : self.n + m]

    def commit(self, tokens: list[int]) -> None:
        self.buf[0, self.n: self.n + len(tokens)] = torch.tensor(tokens, device=self.buf.device)
        self.n += len(tokens)

    @property
    def generated(self) -> list[int]:
        return self.buf[0, self.prompt_len: self.n].tolist()


def _finish(generated: list[int], max_steps: int, stop: StopCondition) -> tuple[list[int], bool]:
    """The one truncation rule shared by all strategies: cut after the first stop, then at max_steps."""
    i = stop.first_stop(generated)
    if i is not None and i < max_steps:
        return generated[: i + 1], True
    return generated[:max_steps], False


@torch.inference_mode()
def autoregressive(decoder: Decoder, prompt: torch.Tensor, max_steps: int, chooser: TokenChooser,
                   stop: StopCondition, exit_layer: int = -1, num_speculations: int = 0) -> GenerationResult:
    """Greedy/sampled decoding, one token per step. With exit_layer > 0 only layers [0, exit_layer) run
    (LayerSkip's pure early exit)."""
    end = exit_layer if exit_layer > 0 else decoder.num_layers
    clock = _Clock(decoder.device)
    t0 = clock.now()
    cache, tokens, token = _prefill(decoder, prompt, prompt.shape[1] + max_steps + 1, end, chooser)
    ttft = clock.now() - t0
    generated = [token]
    while len(generated) < max_steps and stop.first_stop(generated, len(generated) - 1) is None:
        hidden = decoder.run(cache, tokens.n - 1, 0, end, input_ids=_ids(token, decoder.device))
        token, _ = chooser.pick(tokens.prefix() if chooser.needs_prefix else None,
                                decoder.logits(hidden[:, -1])[0])
        tokens.commit([token])
        generated.append(token)
    out, stopped = _finish(generated, max_steps, stop)
    return GenerationResult(out, ttft, clock.now() - t0, stopped=stopped)


def _prefill(decoder: Decoder, prompt: torch.Tensor, capacity: int, end: int,
             chooser: TokenChooser) -> tuple[KVCache, _Tokens, int]:
    """Run layers [0, end) over the prompt into a fresh cache and choose the first token."""
    decoder.refresh_kernels()
    cache = decoder.new_cache(capacity)
    tokens = _Tokens(prompt, capacity)
    hidden = decoder.run(cache, 0, 0, end, input_ids=prompt)
    token, _ = chooser.pick(tokens.prefix() if chooser.needs_prefix else None, decoder.logits(hidden[:, -1])[0])
    tokens.commit([token])
    return cache, tokens, token


@torch.inference_mode()
def self_speculative(decoder: Decoder, prompt: torch.Tensor, max_steps: int, chooser: TokenChooser,
                     stop: StopCondition, exit_layer: int = -1, num_speculations: int = 1) -> GenerationResult:
    """LayerSkip self-speculative decoding.

    Draft up to `num_speculations` tokens with layers [0, E) + norm + head, then verify them in ONE pass of
    layers [E, L) over the exit-layer hidden states the draft already computed (layers below E are never
    recomputed; they only run once more for the last drafted token). Greedy: accept the longest agreeing
    prefix; sampling: speculative rejection sampling. The cache is cropped to the accepted positions.
    """
    E, L, d = exit_layer, decoder.num_layers, num_speculations
    clock = _Clock(decoder.device)
    t0 = clock.now()
    cache, tokens, token = _prefill(decoder, prompt, prompt.shape[1] + max_steps + d + 2, L, chooser)
    ttft = clock.now() - t0
    generated = [token]
    drafted = accepted = 0
    eos = stop.stop_token_ids
    checked = 0  # generated[:checked] holds no stop token
    while len(generated) < max_steps and stop.first_stop(generated, checked) is None:
        checked = len(generated)
        pos = tokens.n - 1  # position of `token`, which no layer has processed yet
        k = min(d, max_steps - len(generated))
        drafts: list[int] = []
        draft_probs: list[torch.Tensor | None] = []
        exit_hidden: list[torch.Tensor] = []
        current = token
        for i in range(k):
            h = decoder.run(cache, pos + i, 0, E, input_ids=_ids(current, decoder.device))
            exit_hidden.append(h)
            current, q = chooser.pick(tokens.prefix(drafts) if chooser.needs_prefix else None,
                                      decoder.logits(h[:, -1])[0])
            drafts.append(current)
            draft_probs.append(q)
            if current in eos:
                break
        k = len(drafts)
        exit_hidden.append(decoder.run(cache, pos + k, 0, E, input_ids=_ids(drafts[-1], decoder.device)))
        h = decoder.run(cache, pos, E, L, hidden=torch.cat(exit_hidden, dim=1))
        logits = decoder.logits(h)[0]  # (k + 1, vocab): row i predicts the token after input i
        new = _accept(chooser, tokens, drafts, draft_probs, logits)
        n_acc = len(new) - 1
        drafted += k
        accepted += n_acc
        cache.crop(pos + n_acc + 1)
        tokens.commit(new)
        generated.extend(new)
        token = new[-1]
    out, stopped = _finish(generated, max_steps, stop)
    return GenerationResult(out, ttft, clock.now() - t0, drafted, accepted, stopped)


def _accept(chooser: TokenChooser, tokens: _Tokens, drafts: list[int], draft_probs: list[torch.Tensor | None],
            logits: torch.Tensor) -> list[int]:
    """Tokens to commit: the accepted drafts followed by one token from the full model."""
    k = len(drafts)
    if not chooser.sample:
        if chooser.needs_prefix:
            verify = [int(torch.argmax(chooser.scores(tokens.prefix(drafts[:i]), logits[i]))) for i in range(k + 1)]
        else:
            verify = logits.argmax(dim=-1).tolist()
        n = 0
        while n < k and verify[n] == drafts[n]:
            n += 1
        return drafts[:n] + [verify[n]]
    for i in range(k):
        p = chooser.probs(tokens.prefix(drafts[:i]), logits[i])
        q = draft_probs[i]
        t = drafts[i]
        if chooser.uniform() * float(q[t]) < float(p[t]):  # accept with probability min(1, p/q)
            continue
        residual = torch.clamp(p - q, min=0)
        total = residual.sum()
        return drafts[:i] + [chooser.draw(residual / total) if total > 0 else chooser.draw(p)]
    return drafts + [chooser.draw(chooser.probs(tokens.prefix(drafts), logits[k]))]


Strategy = Callable[..., GenerationResult]
STRATEGIES: dict[str, Strategy] = {
    "autoregressive": autoregressive,
    "self_speculative": self_speculative,
}
