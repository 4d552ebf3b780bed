"""Choosing the next token: greedy or sampled, through HF logits processors, plus stop conditions."""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
from transformers.generation.logits_process import (
    LogitsProcessorList, NoRepeatNGramLogitsProcessor, TemperatureLogitsWarper, TopKLogitsWarper,
    TopPLogitsWarper,
)


@dataclass
class SamplingConfig:
    sample: bool = False
    temperature: float = 0.6
    top_k: int = 0
    top_p: float = 0.9
    no_repeat_ngram_size: int | None = None
    seed: int = 42


class TokenChooser:
    """Turns logits at one position into a token (and, when sampling, the distribution it came from)."""

    def __init__(self, cfg: SamplingConfig, device: torch.device | str = "cpu") -> None:
        self.sample = cfg.sample
        processors = LogitsProcessorList()
        if cfg.no_repeat_ngram_size:
            processors.append(NoRepeatNGramLogitsProcessor(cfg.no_repeat_ngram_size))
        if cfg.sample:
            processors.append(TemperatureLogitsWarper(cfg.temperature))
            if cfg.top_k > 0:
                processors.append(TopKLogitsWarper(cfg.top_k))
            if cfg.top_p < 1.0:
                processors.append(TopPLogitsWarper(cfg.top_p))
        self.processors = processors
        self.needs_prefix = bool(processors)
        self.generator = torch.Generator(device=device).manual_seed(cfg.seed)

    def scores(self, prefix: torch.Tensor | None, logits: torch.Tensor) -> torch.Tensor:
        """Processed scores for a 1-D logits row; `prefix` is the (1, n) token ids before this position."""
        if not self.processors:
            return logits
        return self.processors(prefix, logits.float()[None])[0]

    def probs(self, prefix: torch.Tensor | None, logits: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.scores(prefix, logits).float(), dim=-1)

    def pick(self, prefix: torch.Tensor | None, logits: torch.Tensor) -> tuple[int, torch.Tensor | None]:
        """Returns the chosen token and (when sampling) its distribution."""
        if not self.sample:
            return int(torch.argmax(self.scores(prefix, logits))), None
        p = self.probs(prefix, logits)
        return self.draw(p), p

    def draw(self, p: torch.Tensor) -> int:
        return int(torch.multinomial(p, 1, generator=self.generator))

    def uniform(self) -> float:
        return float(torch.rand((), generator=self.generator, device=self.generator.device))


# a stop word of n characters lies within its last n tokens (a token decodes to at least one character) plus a few
# that may decode to nothing or to part of a character
STOP_WORD_MARGIN = 4


@dataclass
class StopCondition:
    """Generation stops at the first EOS / stop token, or once the decoded text contains a stop word."""

    stop_token_ids: set[int] = field(default_factory=set)
    stop_words: list[str] = field(default_factory=list)
    tokenizer: object = None

    def first_stop(self, tokens: list[int], start: int = 0) -> int | None:
        """Index (>= start) of the first token at which generation must stop, or None. A stop word is looked for
        in the text of the last few tokens only (enough to hold the longest stop word), so checking each new
        token costs the same however long the generation is."""
        window = max(map(len, self.stop_words)) + STOP_WORD_MARGIN if self.stop_words else 0
        for i in range(start, len(tokens)):
            if tokens[i] in self.stop_token_ids:
                return i
            if window:
                text = self.tokenizer.decode(tokens[max(0, i + 1 - window): i + 1], skip_special_tokens=True)
                if any(w in text for w in self.stop_words):
                    return i
        return None

    def cut_text(self, text: str) -> str:
        """Cut a decoded completion at the earliest stop word (the stop word itself is dropped)."""
        cuts = [text.find(w) for w in self.stop_words if w in text]
        return text[: min(cuts)] if cuts else text
