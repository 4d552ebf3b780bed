"""Perplexity of a reference given its prompt, teacher-forced through exactly the engine that generates (pruned,
factorized, or gated with the decisions its prompt's prefill makes).

Protocol: the reference is tokenized on its own (no special tokens; after a plain, non-chat prompt a leading
space is added unless it has one), appended to the full prompt without truncation, and scored token by token:
the prompt runs as a prefill, the reference tokens as one decode pass. A run's perplexity is exp of the
token-weighted mean negative log-likelihood over all its samples.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from layerbench.engine.engine import DECODE, PREFILL, Engine

PROTOCOL = ("teacher-forced NLL of the reference tokens (tokenized alone, no special tokens, leading space after "
            "non-chat prompts) given the full untruncated prompt; run value: exp(sum NLL / sum tokens)")


def reference_ids(tokenizer, reference: str, use_chat: bool) -> list[int]:
    text = reference.strip()
    if not use_chat:
        text = " " + text
    return tokenizer(text, add_special_tokens=False)["input_ids"]


@torch.inference_mode()
def reference_nll(engine: Engine, prompt_ids: list[int], target_ids: list[int]) -> dict:
    """{"nll_sum", "tokens", "perplexity"} of `target_ids` following `prompt_ids`."""
    if not target_ids:
        return {"nll_sum": 0.0, "tokens": 0, "perplexity": None}
    device = engine.device
    cache = engine.new_cache(len(prompt_ids) + len(target_ids), shared=False)
    prompt = torch.tensor([prompt_ids], device=device)
    hidden = [engine.run(cache, 0, 0, engine.num_blocks, input_ids=prompt, phase=PREFILL)[:, -1:]]
    if len(target_ids) > 1:
        forced = torch.tensor([target_ids[:-1]], device=device)
        hidden.append(engine.run(cache, len(prompt_ids), 0, engine.num_blocks, input_ids=forced, phase=DECODE))
    logits = engine.logits(torch.cat(hidden, dim=1))[0].float()
    nll = float(F.cross_entropy(logits, torch.tensor(target_ids, device=device), reduction="sum"))
    return {"nll_sum": nll, "tokens": len(target_ids), "perplexity": math.exp(nll / len(target_ids))}
