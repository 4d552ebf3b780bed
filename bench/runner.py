"""What every experiment shares: runs timed in rotating order after a warm-up (`run_alternating`, `Stats`), the
device clock (`sync`), and the result writer (`write_result`: the environment captured, one timestamped JSON
under results/). Experiments are registered in bench/__main__.py.
"""
from __future__ import annotations

import datetime
import json
import os
import sys
from dataclasses import dataclass

import torch

from layerbench.runs.run_log import environment


@dataclass
class Stats:
    tokens: int = 0
    seconds: float = 0.0
    decode_seconds: float = 0.0
    decode_tokens: int = 0
    drafted: int = 0
    accepted: int = 0
    rounds: int = 0

    @property
    def tokens_per_second(self) -> float:
        return self.tokens / self.seconds

    @property
    def decode_time_per_token(self) -> float:
        return self.decode_seconds / self.decode_tokens

    @property
    def acceptance(self) -> float:
        return self.accepted / self.drafted

    @property
    def mean_draft_length(self) -> float:
        return self.drafted / self.rounds


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def run_alternating(runners: dict, prompts: list[list[int]], rounds: int
                    ) -> tuple[dict[str, Stats], dict[str, list[list[int]]]]:
    """Warm every runner up, then time them in rotating order over the prompts, `rounds` times."""
    for run in runners.values():
        run(prompts[0][:64])
    stats = {name: Stats() for name in runners}
    outputs: dict[str, list[list[int]]] = {name: [] for name in runners}
    names = list(runners)
    for r in range(rounds):
        for i, prompt in enumerate(prompts):
            shift = (r + i) % len(names)
            for name in names[shift:] + names[:shift]:  # rotate to spread drift
                tokens, seconds, res = runners[name](prompt)
                s = stats[name]
                s.tokens += len(tokens)
                s.seconds += seconds
                if res is not None:
                    s.decode_seconds += res.total_time - res.time_to_first_token
                    s.decode_tokens += len(tokens) - 1
                    s.drafted, s.accepted = s.drafted + res.num_drafted, s.accepted + res.num_accepted
                    s.rounds += getattr(res, "num_rounds", 0)  # (results of older code have none)
                if r == 0:
                    outputs[name].append(tokens)
            print(f"round {r + 1}/{rounds} prompt {i + 1}/{len(prompts)} done", file=sys.stderr)
    return stats, outputs


def result_stem(folder: str, prefix: str) -> str:
    """`folder/prefix_<timestamp>` (the folder created), for an experiment's JSON and any files beside it."""
    os.makedirs(folder, exist_ok=True)
    return os.path.join(folder, f"{prefix}_{datetime.datetime.now():%Y%m%d_%H%M%S}")


def write_result(folder: str, prefix: str, doc: dict, device: torch.device | None = None,
                 stem: str | None = None) -> str:
    """Write `doc` as `folder/prefix_<timestamp>.json`, with the environment of `device` (default cpu) and the load
    average added; prints and returns the path."""
    doc = {**doc, "environment": doc.get("environment") or environment(device or torch.device("cpu"), 1),
           "load_average_1_5_15": os.getloadavg()}
    path = (stem or result_stem(folder, prefix)) + ".json"
    with open(path, "w") as f:
        json.dump(doc, f, indent=1)
    print(f"wrote {path}")
    return path
