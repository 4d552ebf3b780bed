"""The measurement behind bench/draft_confidence.py."""
from __future__ import annotations

import argparse
import copy

from tabulate import tabulate

from layerbench.decoding import GenerationConfig
from layerbench.engine.engine import Engine
from layerbench.errors import UsageError
from layerbench.models.loading import load_model
from layerbench.surgery.calibration import Calibration
from layerbench.surgery.config import PruneConfig
from layerbench.surgery.draft_vocabulary import choose_draft_vocabulary, install_draft_vocabulary
from layerbench.surgery.exit_adapter import fit_exit_adapter, install_exit_adapter
from layerbench.surgery.prune_model import PruneModel
from draft_confidence import DRAFT_CONFIDENCE_COLUMNS
from speed_report import load_prompts
from runner import run_alternating, write_result
from speed_runs import our_runner


def run(a: argparse.Namespace) -> None:
    if any(not 0 < c < 1 for c in a.confidences):
        raise UsageError(f"--confidences must lie in (0, 1), got {a.confidences}")
    loaded = load_model(a.model, a.dtype, a.device)
    prompts, calibration = load_prompts(a, loaded.tokenizer)
    adapted = PruneModel(copy.deepcopy(loaded.model), loaded.tokenizer, PruneConfig(method="base"),
                         lambda: Calibration(calibration, {"dataset": a.dataset, "split": "train"}))
    adapted.apply()
    adapter = install_exit_adapter(adapted, fit_exit_adapter(adapted, a.exit_layer))
    stop_ids = {loaded.tokenizer.eos_token_id}
    base = Engine(loaded.model)
    T, E, d = a.max_tokens, a.exit_layer, a.num_speculations
    runners = {"autoregressive": our_runner(base, "autoregressive", GenerationConfig(max_steps=T)),
               "self_speculative (no adapter)": our_runner(
                   base, "self_speculative", GenerationConfig(max_steps=T, exit_layer=E, num_speculations=d))}
    vocabularies = {}
    for size in a.vocabularies:
        variant = PruneModel(copy.deepcopy(adapted.model), loaded.tokenizer, PruneConfig(method="base"),
                             adapted.calibration)
        if size:
            vocabularies[size] = install_draft_vocabulary(variant, choose_draft_vocabulary(variant, size, stop_ids))
        engine = Engine(variant.model)
        tag = f" vocabulary={size}" if size else ""
        runners[f"self_speculative adapter{tag}"] = our_runner(
            engine, "self_speculative", GenerationConfig(max_steps=T, exit_layer=E, num_speculations=d))
        for c in a.confidences:
            runners[f"self_speculative adapter{tag} c={c}"] = our_runner(engine, "self_speculative", GenerationConfig(
                max_steps=T, exit_layer=E, num_speculations=d, draft_confidence=c))
    stats, outputs = run_alternating(runners, prompts, a.rounds)
    ar = stats["autoregressive"].tokens_per_second
    rows = [[name, s.tokens_per_second / ar, s.acceptance if s.drafted else None,
             s.mean_draft_length if s.rounds else None, outputs[name] == outputs["autoregressive"]]
            for name, s in stats.items()]
    print(tabulate(rows, DRAFT_CONFIDENCE_COLUMNS, tablefmt="github", floatfmt=".3f"))
    write_result(a.out, "draft_confidence", {
        "args": vars(a), "model": loaded.name, "exit_adapter": adapter, "draft_vocabularies": vocabularies,
        "rows": rows, "stats": {n: vars(s) for n, s in stats.items()}}, engine.device)
