"""generate.py's session: build the model exactly as a benchmark run does (same flags, same prepare step), then
answer prompts one by one, streaming each answer and reporting its speed and acceptance."""
from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from typing import Iterator, TextIO

import torch

from layerbench.evaluation import datasets
from layerbench.runs.arguments import Arguments
from layerbench.runs.flag_checks import check_flags
from layerbench.runs.generate import new_chooser
from layerbench.runs.plan import Plan
from layerbench.runs.ranks import DistInfo
from layerbench.runs.prepare import Prepared, prepare_model
from layerbench.runs.stream_printer import LEGEND, StreamPrinter


@dataclass
class SessionOptions:
    prompts: list[str] | None  # answer these and stop; None: read prompts from stdin until EOF
    colour: bool
    out: TextIO  # where answers stream (sys.stdout as it is when the session starts)


def interactive_plan(args: Arguments) -> Plan:
    """A benchmark plan without samples: the same checks of the model, prune and generation flags."""
    info = DistInfo()
    prune_config = check_flags(args, info)
    d = args.dataset
    spec = datasets.get_spec(d.dataset)
    options = datasets.DatasetOptions(data_path=d.data_path, prompt_field=d.prompt_field,
                                      response_field=d.response_field)
    return Plan(args=args, info=info, prune_config=prune_config, resumed=None, output_dir=args.benchmark.output_dir,
                options=options, split=spec.eval_split, samples=[], template=d.template or spec.template, shots="")


def read_prompts(interactive: bool) -> Iterator[str]:
    """Lines from stdin (a `> ` prompt on a terminal); Ctrl-C at the prompt starts a new line, EOF ends."""
    while True:
        try:
            line = input("> " if interactive else "")
        except EOFError:
            return
        except KeyboardInterrupt:
            print(file=sys.stderr)
            continue
        if line.strip():
            yield line


def answer(plan: Plan, prepared: Prepared, text: str, options: SessionOptions) -> None:
    """Stream one answer; Ctrl-C ends it early."""
    tokenizer = prepared.loaded.tokenizer
    prompt = torch.tensor([datasets.build_prompt(tokenizer, text, prepared.use_chat)], device=prepared.engine.device)
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


def session(args: Arguments, options: SessionOptions) -> int:
    plan = interactive_plan(args)
    prepared = prepare_model(plan)  # prints `loading <model> ... s`
    if options.colour:
        print(LEGEND, file=sys.stderr)
    prompts = options.prompts if options.prompts is not None else read_prompts(sys.stdin.isatty())
    for text in prompts:
        answer(plan, prepared, text, options)
    return 0
