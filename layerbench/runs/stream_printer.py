"""Prints an answer as its tokens are committed (the decoding strategies' `on_commit` listener), coloured by
where each token came from when the output is a terminal, plain text otherwise."""
from __future__ import annotations

from typing import TextIO

RESET = "\033[0m"
# style name -> ANSI colour; "correction" is the full model's token at the position of a rejected draft
STYLES = {"verified": "", "accepted": "\033[32m", "correction": "\033[31m", "note": "\033[2m"}
LEGEND = ("colours: \033[32maccepted draft\033[0m, \033[31mfull model's token where a draft was rejected\033[0m, "
          "plain: full model's token (autoregressive, bonus)")
REPLACEMENT = "\ufffd"  # a token ending inside a multi-byte character decodes to this until the rest arrives


class StreamPrinter:
    """Keeps the committed tokens of one answer and writes the text each commit adds."""

    def __init__(self, tokenizer, out: TextIO, colour: bool) -> None:
        self.tokenizer, self.out, self.colour = tokenizer, out, colour
        self.tokens: list[int] = []
        self.printed = ""
        self.after_rejection = False
        self.rejected = 0

    def __call__(self, kind: str, tokens: list[int]) -> None:
        if kind == "rejected":
            self.after_rejection = True
            self.rejected += len(tokens)
            return
        style = "correction" if self.after_rejection and kind == "verified" else kind
        self.after_rejection = False
        self.tokens.extend(tokens)
        text = self.tokenizer.decode(self.tokens, skip_special_tokens=True).rstrip(REPLACEMENT)
        if not text.startswith(self.printed):  # a merge changed earlier text: print from where they differ
            self.write("\n", "note")
            self.printed = ""
        self.write(text[len(self.printed):], style)
        self.printed = text

    def write(self, text: str, style: str) -> None:
        colour = STYLES[style] if self.colour else ""
        self.out.write(f"{colour}{text}{RESET}" if colour and text else text)
        self.out.flush()
