"""The measurement behind bench/old_engine_vs_new.py."""
from __future__ import annotations

import argparse
import copy
import datetime
import json
import os
import sys

import torch
from tabulate import tabulate

from layerbench.decoding import GenerationConfig
from layerbench.engine.engine import Engine, EngineOptions
from layerbench.models.loading import load_model
from layerbench.runs.run_log import environment
from speed_runs import hf_runner, our_runner, run_alternating


def old_runner(old, decoder, strategy, tokens: int, **extra):
    def run(prompt):
        res = strategy(decoder, torch.tensor([prompt]), tokens, old["TokenChooser"](old["SamplingConfig"]()),
                       old["StopCondition"](), **extra)
        return res.token_ids, res.total_time, res
    return run


def import_old(checkout: str) -> dict:
    sys.path.insert(0, os.path.abspath(checkout))
    import decoding  # noqa: E402 (the old top-level modules)
    import sampling
    return {"decoding": decoding, "TokenChooser": sampling.TokenChooser, "SamplingConfig": sampling.SamplingConfig,
            "StopCondition": sampling.StopCondition}


def run(a: argparse.Namespace) -> None:
    old = import_old(a.old_checkout)
    loaded = load_model(None, "float32", "cpu")
    from speed_report import load_prompts
    a.dataset, a.data_path, a.calibration_samples = "aclsum_summarization", None, 1
    prompts, _ = load_prompts(a, loaded.tokenizer)
    old_decoder = old["decoding"].Decoder(copy.deepcopy(loaded.model))  # it changes the Linear classes in place
    T, E, d = a.max_tokens, a.exit_layer, a.num_speculations
    new, new_torch = Engine(loaded.model), Engine(loaded.model, EngineOptions(linear_kernel="torch"))
    runners = {
        "hf_generate": hf_runner(loaded.model, loaded.tokenizer, T),
        "old_autoregressive": old_runner(old, old_decoder, old["decoding"].autoregressive, T),
        "new_autoregressive": our_runner(new, "autoregressive", GenerationConfig(max_steps=T)),
        "new_autoregressive_torch_kernel": our_runner(new_torch, "autoregressive", GenerationConfig(max_steps=T)),
        "old_self_speculative": old_runner(old, old_decoder, old["decoding"].self_speculative, T, exit_layer=E,
                                           num_speculations=d),
        "new_self_speculative": our_runner(new, "self_speculative",
                                           GenerationConfig(max_steps=T, exit_layer=E, num_speculations=d)),
    }
    stats, outputs = run_alternating(runners, prompts, a.rounds)
    tps = {n: s.tokens_per_second for n, s in stats.items()}
    ratios = {"new_autoregressive / old_autoregressive": tps["new_autoregressive"] / tps["old_autoregressive"],
              "new_self_speculative / old_self_speculative":
                  tps["new_self_speculative"] / tps["old_self_speculative"],
              "new_autoregressive / hf_generate": tps["new_autoregressive"] / tps["hf_generate"],
              "old_autoregressive / hf_generate": tps["old_autoregressive"] / tps["hf_generate"],
              "new_autoregressive_torch_kernel / hf_generate":
                  tps["new_autoregressive_torch_kernel"] / tps["hf_generate"]}
    checks = {f"{n} == hf_generate": outputs[n] == outputs["hf_generate"] for n in runners if n != "hf_generate"}
    print(tabulate([[n, f"{v:.2f}"] for n, v in tps.items()], ["run", "tokens/s"], tablefmt="github"))
    print(tabulate([[n, f"{v:.3f}"] for n, v in ratios.items()], ["ratio", "value"], tablefmt="github"))
    print(tabulate(list(checks.items()), ["check", "ok"], tablefmt="github"))
    os.makedirs(a.out, exist_ok=True)
    path = os.path.join(a.out, f"old_engine_vs_new_{datetime.datetime.now():%Y%m%d_%H%M%S}.json")
    with open(path, "w") as f:
        json.dump({"args": vars(a), "environment": environment(torch.device("cpu"), 1), "tokens_per_second": tps,
                   "ratios": ratios, "checks": checks, "new_linear_kernel": [new.linear_kernel, new.kernel.detail]},
                  f, indent=1)
    print(f"wrote {path}")
