"""Interactive generation with the benchmark's model, pruning and strategy flags: reads prompts from stdin (one per
line) or --prompt, streams each answer as its tokens are committed (on a terminal, coloured: accepted drafts
green, the full model's token where a draft was rejected red, its other tokens plain), then prints tokens/s and
the acceptance. Ctrl-C ends the current answer, Ctrl-D (end of input) the session.

    python generate.py --generation_strategy self_speculative --exit_layer 20 --num_speculations 4
    echo "What is layer pruning?" | python generate.py --prune_method angular --prune_n 6 --max_steps 64
"""
import argparse
import os
import signal
import sys

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from layerbench.errors import OneLineArgumentParser, run_script  # noqa: E402


def own_flags() -> argparse.ArgumentParser:
    """generate.py's own flags; every other flag is benchmark.py's (layerbench.runs.arguments)."""
    ap = OneLineArgumentParser(description=__doc__.split("\n\n")[0], add_help=False, allow_abbrev=False,
                               usage="generate.py [--prompt TEXT] [--color {auto,always,never}] [benchmark.py flags]")
    ap.add_argument("--prompt", action="append", default=None,
                    help="answer this prompt and exit (repeatable); default: read prompts from stdin")
    ap.add_argument("--color", choices=["auto", "always", "never"], default="auto",
                    help="colour the stream (auto: when stdout is a terminal and NO_COLOR is unset)")
    return ap


def main(argv: list[str] | None = None) -> int:
    parser = own_flags()
    own, rest = parser.parse_known_args(sys.argv[1:] if argv is None else argv)
    from layerbench.runs.arguments import parse_args
    if "-h" in rest or "--help" in rest:
        print(parser.format_help())
        print("model, pruning and generation flags (as benchmark.py; dataset and log flags are not used):")
    from layerbench.runs.interactive_plan import checked_prompt, interactive_plan
    plan = interactive_plan(parse_args(rest))
    prompts = [checked_prompt(p, "--prompt") for p in own.prompt] if own.prompt is not None else None
    colour = own.color == "always" or (own.color == "auto" and sys.stdout.isatty() and "NO_COLOR" not in os.environ)
    from layerbench.runs.interactive import SessionOptions, session  # heavy imports after the flags
    return session(plan, SessionOptions(prompts=prompts, colour=colour, out=sys.stdout))


if __name__ == "__main__":
    signal.signal(signal.SIGINT, signal.default_int_handler)  # Ctrl-C must reach the answer loop
    run_script(main)
