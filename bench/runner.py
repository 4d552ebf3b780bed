"""What every experiment shares: its flags (model, prompts, timing; one exit layer and draft length), the prompts
and calibration text, a pruned copy of the model, one runner per configuration (ours through the strategy
registry, HF generate), the runs timed in rotating order after a warm-up (`run_alternating`, `Stats`), the
device clock (`sync`), and the result writer (`write_result`: the environment captured, one timestamped JSON
under results/). Experiments are registered in bench/__main__.py.

Importing this module loads neither torch nor transformers (they load on first use), so an experiment's flags
are answered at once and bench/results_doc.py renders without them.
"""
from __future__ import annotations

import argparse
import copy
import contextlib
import datetime
import json
import os
import sys
import time
from dataclasses import dataclass

from layerbench import names
from layerbench.errors import positive_int
from layerbench.evaluation import datasets
from layerbench.lazy import lazy

torch = lazy("torch")


def add_model_and_prompt_flags(ap: argparse.ArgumentParser, samples: int, max_tokens: int,
                               rounds: int = 2) -> dict[str, argparse._ArgumentGroup]:
    """Model, prompts, calibration size, dtype and device, and the timing rounds, in help groups; returns the
    groups by title so a script adds its own flags beside them."""
    groups = {title: ap.add_argument_group(title) for title in ("model and prompts", "timing")}
    model = groups["model and prompts"]
    model.add_argument("--model", default=None, help="local model folder or hub id (default: the embedded "
                                                      "SmolLM2-135M-Instruct)")
    model.add_argument("--dataset", default="aclsum_summarization", choices=list(datasets.DATASETS),
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


def load_prompts(a: argparse.Namespace, tokenizer) -> tuple[list[list[int]], list[list[int]]]:
    """(evaluation prompts, calibration texts from the train split or, without one, the other records)."""
    options = datasets.DatasetOptions(data_path=a.data_path)
    spec = datasets.get_spec(a.dataset)
    _, samples = datasets.load_split(a.dataset, None, options)
    chosen = datasets.select_samples(samples, a.samples, 42, True)
    use_chat = datasets.use_chat_template(tokenizer, "auto")
    prompts = [datasets.build_prompt(tokenizer, spec.template.format(input=s.input), use_chat) for s in chosen]
    if spec.train_split:
        _, pool = datasets.load_split(a.dataset, spec.train_split, options)
    else:
        pool = [s for s in samples if s not in chosen]
    calibration = [tokenizer(spec.template.format(input=s.input) + " " + s.reference)["input_ids"]
                   for s in pool[:a.calibration_samples]]
    return prompts, calibration


def pruned_copy(model, tokenizer, config, calibration_ids: list[list[int]] | None = None, dataset: str = ""):
    """(PruneModel, its report): the config's method applied to a deep copy of `model` (no surgery leaks into
    another run), calibrated on `calibration_ids` (the train split of `dataset`)."""
    from layerbench.surgery.calibration import Calibration
    from layerbench.surgery.prune_model import PruneModel
    calibration = None if calibration_ids is None else (
        lambda: Calibration(calibration_ids, {"dataset": dataset, "split": "train"}))
    pm = PruneModel(copy.deepcopy(model), tokenizer, config, calibration)
    return pm, pm.apply()


def sync(device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def our_runner(engine, strategy: str, config):
    """Greedy generation through the strategy registry: prompt -> (tokens, seconds, GenerationResult)."""
    from layerbench.decoding import STRATEGIES
    from layerbench.decoding.sampling import SamplingConfig, StopCondition, TokenChooser

    def run(prompt):
        res = STRATEGIES[strategy].generate(engine, torch.tensor([prompt], device=engine.device), config,
                                            TokenChooser(SamplingConfig()), StopCondition())
        return res.token_ids, res.total_time, res
    return run


def hf_runner(model, tokenizer, tokens: int, backend=None, **extra):
    """HF generate, greedy, exactly `tokens` new tokens: prompt -> (tokens, seconds, None)."""
    device = next(model.parameters()).device

    def run(prompt):
        ids = torch.tensor([prompt], device=device)
        context = torch.nn.attention.sdpa_kernel(backend) if backend is not None else contextlib.nullcontext()
        with context:
            sync(device)
            t0 = time.perf_counter()
            out = model.generate(ids, max_new_tokens=tokens, min_new_tokens=tokens, do_sample=False,
                                 pad_token_id=tokenizer.eos_token_id, **extra)
            sync(device)
        return out[0, len(prompt):].tolist(), time.perf_counter() - t0, None
    return run


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

    def add(self, tokens: list[int], seconds: float, res) -> None:
        self.tokens += len(tokens)
        self.seconds += seconds
        if res is not None:
            self.decode_seconds += res.total_time - res.time_to_first_token
            self.decode_tokens += len(tokens) - 1
            self.drafted, self.accepted = self.drafted + res.num_drafted, self.accepted + res.num_accepted
            self.rounds += getattr(res, "num_rounds", 0)  # (results of older code have none)


def run_alternating(runners: dict, prompts: list[list[int]], rounds: int
                    ) -> tuple[dict[str, Stats], dict[str, list[list[int]]]]:
    """Warm every runner up, then time them in rotating order over the prompts, `rounds` times."""
    for run in runners.values():
        run(prompts[0][:64])
    stats = {name: Stats() for name in runners}
    outputs: dict[str, list[list[int]]] = {name: [] for name in runners}
    names_ = list(runners)
    for r in range(rounds):
        for i, prompt in enumerate(prompts):
            shift = (r + i) % len(names_)
            for name in names_[shift:] + names_[:shift]:  # rotate to spread drift
                tokens, seconds, res = runners[name](prompt)
                stats[name].add(tokens, seconds, res)
                if r == 0:
                    outputs[name].append(tokens)
            print(f"round {r + 1}/{rounds} prompt {i + 1}/{len(prompts)} done", file=sys.stderr)
    return stats, outputs


def result_stem(folder: str, prefix: str) -> str:
    """`folder/prefix_<timestamp>` (the folder created), for an experiment's JSON and any files beside it."""
    os.makedirs(folder, exist_ok=True)
    return os.path.join(folder, f"{prefix}_{datetime.datetime.now():%Y%m%d_%H%M%S}")


def write_result(folder: str, prefix: str, doc: dict, device=None, stem: str | None = None) -> str:
    """Write `doc` as `folder/prefix_<timestamp>.json`, with the environment of `device` (default cpu) and the load
    average added; prints and returns the path."""
    from layerbench.runs.run_log import environment
    doc = {**doc, "environment": doc.get("environment") or environment(device or torch.device("cpu"), 1),
           "load_average_1_5_15": os.getloadavg()}
    path = (stem or result_stem(folder, prefix)) + ".json"
    with open(path, "w") as f:
        json.dump(doc, f, indent=1)
    print(f"wrote {path}")
    return path
