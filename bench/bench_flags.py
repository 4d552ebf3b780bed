"""Flags shared by the bench scripts that time several runs side by side in one process."""
from __future__ import annotations

import argparse

from layerbench import names
from layerbench.errors import positive_int
from layerbench.evaluation.datasets import DATASETS

def add_model_and_prompt_flags(ap: argparse.ArgumentParser, samples: int, max_tokens: int,
                               rounds: int = 2) -> dict[str, argparse._ArgumentGroup]:
    """Model, prompts, calibration size, dtype and device, and the timing rounds, in help groups; returns the
    groups by title so a script adds its own flags beside them."""
    groups = {title: ap.add_argument_group(title) for title in ("model and prompts", "timing")}
    model = groups["model and prompts"]
    model.add_argument("--model", default=None, help="local model folder or hub id (default: the embedded "
                                                      "SmolLM2-135M-Instruct)")
    model.add_argument("--dataset", default="aclsum_summarization", choices=list(DATASETS),
                       help="prompts' dataset (default: aclsum_summarization)")
    model.add_argument("--data_path", default=None, help="JSONL for --dataset custom_jsonl (fields prompt, response)")
    model.add_argument("--samples", type=positive_int, default=samples, help=f"prompts (default: {samples})")
    model.add_argument("--max_tokens", type=positive_int, default=max_tokens,
                       help=f"tokens generated per prompt (default: {max_tokens})")
    model.add_argument("--calibration_samples", type=positive_int, default=32,
                       help="train-split texts for fitted maps and draft vocabularies (default: 32)")
    model.add_argument("--dtype", default="auto", choices=names.DTYPES, help="(default: auto)")
    model.add_argument("--device", default="auto", choices=names.DEVICES, help="(default: auto)")
    groups["timing"].add_argument("--rounds", type=positive_int, default=rounds,
                                  help=f"timed passes over the prompts; runs alternate (default: {rounds})")
    return groups


def add_side_by_side_flags(ap: argparse.ArgumentParser, samples: int,
                           max_tokens: int) -> dict[str, argparse._ArgumentGroup]:
    """The model, prompt and timing flags, plus one exit layer and draft length, in help groups (and an empty
    "output" group); returns the groups by title."""
    groups = add_model_and_prompt_flags(ap, samples, max_tokens)
    groups.update({title: ap.add_argument_group(title) for title in ("self-speculation", "output")})
    spec = groups["self-speculation"]
    spec.add_argument("--exit_layer", type=positive_int, default=20, help="draft layers [0, E) (default: 20)")
    spec.add_argument("--num_speculations", type=positive_int, default=4, help="tokens drafted per round (default: 4)")
    return groups
