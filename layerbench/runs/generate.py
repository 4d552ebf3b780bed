"""Step 3 of a benchmark run: the timed loop over this rank's samples. Each sample is generated, scored, and
appended to the samples file before the next one starts, so a crash loses no finished sample."""
from __future__ import annotations

import dataclasses
import hashlib
import sys
import time

import torch
from tqdm import tqdm

from layerbench.decoding import GenerationResult
from layerbench.decoding.sampling import SamplingConfig, TokenChooser
from layerbench.evaluation.code_execution import execute
from layerbench.evaluation.datasets import Sample
from layerbench.evaluation.metrics import sample_metrics
from layerbench.evaluation.perplexity import reference_ids, reference_nll
from layerbench.runs.plan import Plan
from layerbench.runs.prepare import Prepared
from layerbench.runs.run_log import RunLog
from layerbench.runs.summary import progress


def new_chooser(plan: Plan, prepared: Prepared) -> TokenChooser:
    """The token chooser of the run's flags; benchmark runs give each sample its own random stream
    (`start_sample_stream`); greedy runs do not use it."""
    g = plan.args.generation
    config = SamplingConfig(sample=g.sample, temperature=g.temperature, top_k=g.top_k, top_p=g.top_p,
                            no_repeat_ngram_size=g.no_repeat_ngram_size, seed=plan.args.benchmark.seed)
    return TokenChooser(config, prepared.engine.device)


def sample_seed(seed: int, sample_id: str) -> int:
    """The seed of one sample's random stream: a function of (--seed, sample id) alone, so a sample draws the same
    tokens whichever rank runs it and whatever ran before it in the process (a resumed run equals an
    uninterrupted one)."""
    digest = hashlib.sha256(f"{seed}\0{sample_id}".encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1  # torch seeds are 64-bit; keep it non-negative


def start_sample_stream(chooser: TokenChooser, seed: int, sample_id: str) -> None:
    chooser.generator.manual_seed(sample_seed(seed, sample_id))


def generate(prepared: Prepared, prompt_ids: list[int], chooser: TokenChooser, max_steps: int | None = None
             ) -> GenerationResult:
    config = prepared.generation
    if max_steps is not None:
        config = dataclasses.replace(config, max_steps=max_steps)
    prompt = torch.tensor([prompt_ids], device=prepared.engine.device)
    return prepared.strategy.generate(prepared.engine, prompt, config, chooser, prepared.stop)


def benchmark_sample(plan: Plan, prepared: Prepared, sample: Sample, chooser: TokenChooser) -> dict:
    tokenizer, pruner = prepared.loaded.tokenizer, prepared.pruner
    prompt_ids = prepared.prompts[sample.sample_id]
    start_sample_stream(chooser, plan.args.benchmark.seed, sample.sample_id)
    res = generate(prepared, prompt_ids, chooser)
    text = prepared.stop.cut_text(tokenizer.decode(res.token_ids, skip_special_tokens=True))
    record = {
        "sample_id": sample.sample_id, "prompt": tokenizer.decode(prompt_ids), "reference": sample.reference,
        "prediction": text, "token_ids": res.token_ids, "num_tokens": len(res.token_ids),
        "prompt_tokens": len(prompt_ids),
        "time_to_first_token": res.time_to_first_token, "total_time": res.total_time,
        "tokens_per_second": len(res.token_ids) / res.total_time,
        "num_drafted": res.num_drafted, "num_accepted": res.num_accepted, "num_rounds": res.num_rounds,
        "acceptance_rate": res.num_accepted / res.num_drafted if res.num_drafted else None,
        "stopped": res.stopped, "metrics": sample_metrics(text, sample.reference),
    }
    gate = pruner.sample_report()  # before perplexity, which runs this sample's prompt again
    if gate is not None:
        record["gate"] = gate
    if plan.args.generation.perplexity:
        with pruner.counting_paused():
            record["perplexity"] = reference_nll(prepared.engine, prompt_ids,
                                                 reference_ids(tokenizer, sample.reference, prepared.use_chat))
    if plan.args.benchmark.execute_code:
        record.update(execute(sample, text, plan.args.benchmark.execution_timeout))
    return record


def run_samples(plan: Plan, prepared: Prepared, log: RunLog, todo: list[Sample]) -> tuple[list[dict], dict, float]:
    """Generate every sample in `todo`; returns the records, this rank's status and the wall time."""
    g = plan.args.generation
    if plan.args.benchmark.warmup and todo:
        generate(prepared, prepared.prompts[todo[0].sample_id], new_chooser(plan, prepared), min(g.max_steps, 8))
    chooser = new_chooser(plan, prepared)
    for device in prepared.engine.devices:
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
    prepared.pruner.start_counting()
    records, status = [], {"rank": plan.info.rank, "error": None, "interrupted": False}
    bar = tqdm(todo, desc=f"{g.generation_strategy}/{plan.args.prune.prune_method}", unit="sample",
               file=sys.stderr, disable=not plan.info.is_main)
    wall0 = time.perf_counter()
    try:
        for sample in bar:
            records.append(benchmark_sample(plan, prepared, sample, chooser))
            log.append_sample(records[-1])
            bar.set_postfix(progress(records))
    except KeyboardInterrupt:
        status["interrupted"] = True
    except Exception as exc:  # reported by rank 0 (and torchrun) with this rank's number
        status["error"] = f"{type(exc).__name__}: {exc}"
    finally:
        bar.close()
        log.close()
    return records, status, time.perf_counter() - wall0
