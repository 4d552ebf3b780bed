"""generate.py's session: build the model exactly as a benchmark run does (same flags, same prepare step), then
answer prompts one by one, streaming each answer and reporting its speed and acceptance. Its flags are checked
before torch is imported, in `interactive_plan`."""
from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from typing import Iterator, TextIO

import torch

from layerbench.errors import UsageError
from layerbench.evaluation import datasets
from layerbench.runs.device_checks import check_devices
from layerbench.runs.generate import new_chooser
from layerbench.runs.interactive_plan import checked_prompt
from layerbench.runs.plan import Plan
from layerbench.runs.prepare import Prepared, prepare_model
from layerbench.runs.stream_printer import LEGEND, StreamPrinter


@dataclass
class SessionOptions:
    prompts: list[str] | None  # answer these and stop; None: read prompts from stdin until EOF
    colour: bool
    out: TextIO  # where answers stream (sys.stdout as it is when the session starts)


def read_prompts(interactive: bool) -> Iterator[str]:
    """Lines from stdin (a `> ` prompt on a terminal); Ctrl-C at the prompt starts a new line, EOF ends."""
    number = 0
    while True:
        number += 1
        try:
            line = input("> " if interactive else "")
        except EOFError:
            return
        except KeyboardInterrupt:
            print(file=sys.stderr)
            continue
        except UnicodeDecodeError:
            raise UsageError(f"stdin line {number}: not UTF-8 text") from None
        if line.strip():
            yield checked_prompt(line, f"stdin line {number}")


def answer(plan: Plan, prepared: Prepared, text: str, options: SessionOptions) -> None:
    """Stream one answer; Ctrl-C ends it early."""
    tokenizer = prepared.loaded.tokenizer
    ids = datasets.build_prompt(tokenizer, text, prepared.use_chat)
    context = getattr(prepared.loaded.model.config, "max_position_embeddings", None)
    if context is not None and len(ids) >= context:
        raise UsageError(f"a prompt of {len(ids)} tokens: the model's context is {context} (max_position_embeddings)")
    prompt = torch.tensor([ids], device=prepared.engine.device)
    printer = StreamPrinter(tokenizer, options.out, options.colour)
    t0 = time.perf_counter()
    try:
        result = prepared.strategy.generate(prepared.engine, prompt, prepared.generation,
                                            new_chooser(plan, prepared), prepared.stop, on_commit=printer)
    except KeyboardInterrupt:
        seconds = time.perf_counter() - t0
        printer.write(f"\n[interrupted: {len(printer.tokens)} tokens, "
                      f"{len(printer.tokens) / seconds:.1f} tok/s]\n", "note")
        return
    tps = len(result.token_ids) / result.total_time
    acceptance = (f"acceptance {result.num_accepted}/{result.num_drafted} = "
                  f"{result.num_accepted / result.num_drafted:.2f}" if result.num_drafted else "acceptance n/a")
    printer.write(f"\n[{len(result.token_ids)} tokens, {tps:.1f} tok/s, {acceptance}]\n", "note")


def session(plan: Plan, options: SessionOptions) -> int:
    """Answer prompts with the model of an `interactive_plan` (checked before torch was imported)."""
    check_devices(plan.args.benchmark)
    prepared = prepare_model(plan)  # prints `loading <model> ... s`
    if options.colour:
        print(LEGEND, file=sys.stderr)
    prompts = options.prompts if options.prompts is not None else read_prompts(sys.stdin.isatty())
    for text in prompts:
        answer(plan, prepared, text, options)
    return 0
