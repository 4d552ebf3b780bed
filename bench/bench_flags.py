"""Flags shared by the bench scripts that time several runs side by side in one process."""
from __future__ import annotations

import argparse

from layerbench.errors import positive_int


def add_model_and_prompt_flags(ap: argparse.ArgumentParser, samples: int, max_tokens: int, rounds: int = 2) -> None:
    """Model, prompts, rounds, calibration size, dtype and device."""
    ap.add_argument("--model", default=None, help="default: embedded SmolLM2-135M-Instruct")
    ap.add_argument("--dataset", default="aclsum_summarization")
    ap.add_argument("--data_path", default=None, help="JSONL for --dataset custom_jsonl (fields prompt, response)")
    ap.add_argument("--samples", type=positive_int, default=samples)
    ap.add_argument("--max_tokens", type=positive_int, default=max_tokens)
    ap.add_argument("--rounds", type=positive_int, default=rounds, help="timed passes over the prompts (runs alternate)")
    ap.add_argument("--calibration_samples", type=positive_int, default=32)
    ap.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16", "float16"])
    ap.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])


def add_side_by_side_flags(ap: argparse.ArgumentParser, samples: int, max_tokens: int) -> None:
    """The model and prompt flags, plus one exit layer and draft length."""
    add_model_and_prompt_flags(ap, samples, max_tokens)
    ap.add_argument("--exit_layer", type=positive_int, default=20)
    ap.add_argument("--num_speculations", type=positive_int, default=4)
