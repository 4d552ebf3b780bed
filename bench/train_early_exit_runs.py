"""The measurements bench/train_early_exit.py makes on each arm's model (one folder, or the embedded model): its
perplexity at the last layer and at exits on held-out aclsum references, the `sweep_exit` grid, ROUGE-L through
benchmark.py as it is, with random dropout and with angular pruning, and lm-eval on the offline tasks. Each
returns a JSON-ready dict; torch loads on first use."""
from __future__ import annotations

import glob
import json
import math
import os
import time

from layerbench.evaluation import datasets

FULL, RANDOM = "full model", "random p=0.2"


def pruned_variants(num_layers: int) -> dict[str, list[str]]:
    """name -> benchmark.py flags of the variants ROUGE-L is measured on (LayerDrop's robustness claim): the model
    as it is, random dropout p=0.2 (seed 42) and angular pruning of a fifth of the layers (n=6 of 30)."""
    n = max(1, round(num_layers / 5))
    return {FULL: [], RANDOM: ["--prune_method", "random", "--dropout_threshold", "0.2", "--prune_seed", "42"],
            f"angular n={n}": ["--prune_method", "angular", "--prune_n", str(n)]}


def reference_pairs(tokenizer, count: int) -> list[tuple[list[int], list[int]]]:
    """(prompt ids, reference ids) of the first `count` aclsum test samples in benchmark.py's seeded order, built
    as benchmark.py builds them (template, chat template; the reference perplexity's tokenization)."""
    from layerbench.evaluation.perplexity import reference_ids
    spec = datasets.get_spec("aclsum_summarization")
    _, samples = datasets.load_split("aclsum_summarization", "test", datasets.DatasetOptions())
    use_chat = datasets.use_chat_template(tokenizer, "auto")
    return [(datasets.build_prompt(tokenizer, datasets.fill_template(spec.template, s.input), use_chat),
             reference_ids(tokenizer, s.reference, use_chat))
            for s in datasets.select_samples(samples, count, 42, True)]


def exit_perplexities(model_dir: str | None, exits: list[int], count: int) -> dict:
    """Teacher-forced perplexity of the references given their prompts, read at each exit E (layers [0, E), then
    the final norm and LM head) and at the last layer, from one pass per reference."""
    import torch
    import torch.nn.functional as F

    from layerbench.engine.engine import PREFILL, Engine, EngineOptions
    from layerbench.models.loading import load_model
    loaded = load_model(model_dir, "float32", "cpu")
    engine = Engine(loaded.model, EngineOptions(linear_kernel="torch"))
    bounds = sorted(set(exits)) + [engine.num_blocks]
    nll, tokens = dict.fromkeys(bounds, 0.0), 0
    with torch.inference_mode():
        for prompt, target in reference_pairs(loaded.tokenizer, count):
            ids = torch.tensor([prompt + target[:-1]])
            cache, hidden, first = engine.new_cache(ids.shape[1], shared=False), None, 0
            for bound in bounds:
                hidden = engine.run(cache, 0, first, bound, input_ids=ids if first == 0 else None, hidden=hidden,
                                    phase=PREFILL)
                scored = hidden[:, len(prompt) - 1:]
                logits = engine.logits(scored) if bound == engine.num_blocks else engine.exit_logits(scored, bound)
                nll[bound] += float(F.cross_entropy(logits[0].float(), torch.tensor(target), reduction="sum"))
                first = bound
            tokens += len(target)
    return {"references": count, "tokens": tokens, "final": math.exp(nll[bounds[-1]] / tokens),
            "exits": {str(b): math.exp(nll[b] / tokens) for b in bounds[:-1]}}


def sweep(model_dir: str | None, folder: str, exits: list[int], speculations: list[int], samples: int,
          max_tokens: int, rounds: int) -> dict:
    """`python -m bench sweep_exit` on the model, in this process; its JSON (rows, best cell) and where it is."""
    import sweep_exit
    argv = ["--exit_layers", *map(str, exits), "--speculations", *map(str, speculations), "--samples", str(samples),
            "--max_tokens", str(max_tokens), "--rounds", str(rounds), "--dtype", "float32", "--device", "cpu",
            "--out", folder] + (["--model", model_dir] if model_dir else [])
    sweep_exit.main(argv)
    [path] = sorted(glob.glob(os.path.join(folder, "sweep_exit_*.json")))[-1:]
    with open(path) as f:
        doc = json.load(f)
    keep = ("command", "num_layers", "prompts", "autoregressive_tokens_per_second", "all_greedy_equal", "best", "rows")
    return {k: doc[k] for k in keep}


def speed_check(model_dir: str | None, sweep_rows: list[dict], vocabulary: int, samples: int, max_tokens: int,
                rounds: int) -> dict:
    """Autoregressive decoding against self-speculative decoding at each exit's best draft length in the sweep, with
    the full LM head and with a draft head over the `vocabulary` tokens most frequent in aclsum train text (a
    benchmark.py option: drafts score fewer rows of the head; verification scores all, so output stays exact), all
    runs alternated in one process (bench/runner.py)."""
    import argparse

    from runner import load_prompts, our_runner, pruned_copy, run_alternating

    from layerbench.decoding import GenerationConfig
    from layerbench.engine.engine import Engine
    from layerbench.models.loading import load_model
    from layerbench.surgery.config import PruneConfig
    from layerbench.surgery.draft_vocabulary import choose_draft_vocabulary, install_draft_vocabulary
    loaded = load_model(model_dir, "float32", "cpu")
    a = argparse.Namespace(dataset="aclsum_summarization", data_path=None, samples=samples, calibration_samples=100)
    prompts, calibration = load_prompts(a, loaded.tokenizer)
    trimmed, _ = pruned_copy(loaded.model, loaded.tokenizer, PruneConfig(method="base", calibration_samples=100),
                             calibration, a.dataset)
    report = install_draft_vocabulary(trimmed, choose_draft_vocabulary(trimmed, vocabulary,
                                                                       {loaded.tokenizer.eos_token_id}))
    engines = {"full head": Engine(loaded.model), f"draft vocabulary {vocabulary}": Engine(trimmed.model)}
    runners = {"autoregressive": our_runner(engines["full head"], "autoregressive", GenerationConfig(max_tokens))}
    for E in sorted({r["exit_layer"] for r in sweep_rows}):
        d = max((r for r in sweep_rows if r["exit_layer"] == E), key=lambda r: r["speedup"])["num_speculations"]
        for head, engine in engines.items():
            runners[f"E={E} d={d} {head}"] = our_runner(engine, "self_speculative", GenerationConfig(
                max_steps=max_tokens, exit_block=E, num_speculations=d))
    stats, outputs = run_alternating(runners, prompts, rounds)
    ar = stats["autoregressive"].tokens_per_second
    rows = [{"run": name, "tokens_per_second": s.tokens_per_second, "speedup": s.tokens_per_second / ar,
             "acceptance": s.acceptance if s.drafted else None,
             "greedy_equal_to_autoregressive": outputs[name] == outputs["autoregressive"]} for name, s in stats.items()]
    return {"rows": rows, "draft_vocabulary": {k: report[k] for k in ("size", "calibration_token_coverage")},
            "best": max(rows[1:], key=lambda r: r["speedup"])}


def pruned_rouge(model_dir: str | None, folder: str, samples: int, max_tokens: int, num_layers: int) -> dict:
    """benchmark.py on aclsum test samples (greedy, in this process) for the model as it is and each pruned variant:
    ROUGE-L, reference perplexity and the layers removed."""
    import benchmark
    out = {}
    for name, flags in pruned_variants(num_layers).items():
        run_dir = os.path.join(folder, name.replace(" ", "_").replace("=", ""))
        argv = ["--num_samples", str(samples), "--max_steps", str(max_tokens), "--output_dir", run_dir,
                "--dtype", "float32", "--device", "cpu", "--linear_kernel", "torch", "--no_warmup", *flags]
        if benchmark.main(argv + (["--model", model_dir] if model_dir else [])) != 0:
            raise RuntimeError(f"benchmark.py failed for {name}")
        [path] = [p for p in glob.glob(os.path.join(run_dir, "benchmark_*.json"))]
        with open(path) as f:
            doc = json.load(f)
        out[name] = {"rougeL": doc["metrics"]["rougeL"], "perplexity": doc["metrics"]["perplexity"],
                     "removed_layers": doc["prune"].get("removed_layers", []), "samples": samples,
                     "max_steps": max_tokens}
    return out


def lm_eval_scores(model_dir: str | None, limits: dict[str, int]) -> dict:
    """lm-eval's evaluator through the `layerbench` model on the offline tasks (tasks/), `limits` documents each."""
    from layerbench.harness.lm import LayerbenchLM
    from layerbench.harness.tasks import LOCAL_TASKS, evaluate, quiet_metadata_hint
    quiet_metadata_hint()
    lm = LayerbenchLM(batch_size=16, device="cpu", dtype="float32", **({"model": model_dir} if model_dir else {}))
    tasks = {}
    for task, limit in limits.items():
        tasks.update(evaluate(lm, [os.path.join(LOCAL_TASKS, f"{task}.yaml")], limit=limit))
    return tasks


def timed(seconds: dict, name: str, measure, *args) -> dict:
    """measure(*args), its wall time recorded under `name`."""
    started = time.perf_counter()
    result = measure(*args)
    seconds[name] = time.perf_counter() - started
    return result
