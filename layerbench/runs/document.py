"""Steps 4 and 5 of a benchmark run: the run JSON written before generation starts (`complete: false`), and
after it the merge of every rank's records into the samples file and the final document."""
from __future__ import annotations

import dataclasses
import os
import resource
import sys

import torch

from layerbench.analysis.uncertainty import BootstrapConfig
from layerbench.decoding import STRATEGIES
from layerbench.evaluation.metrics import BLEU_SETTINGS, ROUGE_SETTINGS
from layerbench.evaluation.perplexity import PROTOCOL as PERPLEXITY_PROTOCOL
from layerbench.runs.plan import Plan
from layerbench.runs.prepare import Prepared
from layerbench.runs.run_log import SCHEMA_VERSION, RunLog, environment, write_samples_atomic
from layerbench.runs.reference import run_agreement
from layerbench.runs.results_table import results_table
from layerbench.runs.summary import aggregate, summary_line, uncertainty


def _mode(plan: Plan) -> str:
    g = plan.args.generation
    return STRATEGIES[g.generation_strategy].mode(g.exit_layer)


def strategy_settings(settings) -> dict | None:
    """What the strategy prepared for this model (a dataclass of its own), for the log."""
    return dataclasses.asdict(settings) if dataclasses.is_dataclass(settings) else settings


def initial_document(plan: Plan, prepared: Prepared, run_id: str, log: RunLog) -> dict:
    g, d = plan.args.generation, plan.args.dataset
    model, pruner, engine = prepared.loaded.model, prepared.pruner, prepared.engine
    return {
        "schema_version": SCHEMA_VERSION,
        "complete": False,
        "run_id": run_id,
        "args": plan.args.as_dict(),
        "environment": environment(engine.device, plan.info.world_size),
        "model": {"name": prepared.loaded.name, "source": prepared.loaded.source,
                  "model_type": model.config.model_type, "dtype": str(engine.dtype),
                  "stored_dtype": prepared.loaded.stored_dtype,
                  "num_layers": pruner.num_decoder_layers, "num_layers_original": pruner.num_layers_original,
                  "num_parameters": pruner.report["num_parameters_after"],
                  "num_parameters_original": pruner.num_parameters_original,
                  "num_bytes": pruner.num_bytes(), "num_bytes_original": pruner.num_bytes_original,
                  "load_seconds": prepared.load_seconds, "loaded_from": prepared.loaded.loaded_from,
                  "device_map": prepared.loaded.device_map, "placement": engine.placement.describe()},
        "prune": pruner.report,
        "dataset": {"name": d.dataset, "split": plan.split, "num_samples": len(plan.samples),
                    "sample_ids": [s.sample_id for s in plan.samples], "template": plan.template,
                    "chat_template": prepared.use_chat, "n_shot": d.n_shot},
        "generation": {"strategy": g.generation_strategy, "exit_layer": g.exit_layer, "exit_block": prepared.generation.exit_block,
                       "num_speculations": (g.num_speculations if STRATEGIES[g.generation_strategy].speculative
                                            else None),
                       "draft_confidence": g.draft_confidence, "exit_adapter": g.exit_adapter,
                       "draft_vocabulary": g.draft_vocabulary,
                       "mode": _mode(plan), "max_steps": g.max_steps, "sample": g.sample,
                       "strategy_settings": strategy_settings(prepared.generation.settings),
                       "linear_kernel": engine.linear_kernel, "linear_kernel_detail": engine.kernel.detail,
                       "attention_kernel": engine.attention_kernel, "cuda_graphs": prepared.cuda_graphs,
                       "exact": prepared.exact, "compile": prepared.compile,
                       "compile_seconds": prepared.compile_seconds,
                       "engine": "layerbench (own forward)",
                       "stop_token_ids": sorted(prepared.stop.stop_token_ids)},
        "metric_settings": {"rouge": ROUGE_SETTINGS, "bleu": BLEU_SETTINGS,
                            "exact_match": "normalized (lowercase, punctuation->space, whitespace collapsed) equality",
                            "edit_distance": "character Levenshtein distance (rapidfuzz)",
                            "perplexity": PERPLEXITY_PROTOCOL if g.perplexity else None},
        "metrics": {},
        "samples_file": os.path.basename(log.samples_path),
        "resumed_from": plan.resumed.run_id if plan.resumed else None,
    }


def peak_memory(devices: tuple[torch.device, ...]) -> dict:
    """Process peak resident memory, and the CUDA allocator's peak summed over the GPUs the model uses (two
    different things)."""
    out = {"process_peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
           "cuda_max_allocated_mb": None}
    cuda = [d for d in devices if d.type == "cuda"]
    if cuda:
        out["cuda_max_allocated_mb"] = sum(torch.cuda.max_memory_allocated(d) for d in cuda) / 2**20
    return out


def throughput(parts: list[dict], resumed: bool) -> dict:
    per_rank = [part["throughput"] for part in parts]
    wall = max(t["wall_seconds"] for t in per_rank)
    for t in per_rank:
        t["tokens_per_second"] = t["tokens"] / t["generation_seconds"] if t["generation_seconds"] else None
    return {"per_rank": per_rank, "wall_seconds": wall,
            "aggregate_tokens_per_second": sum(t["tokens"] for t in per_rank) / wall if wall else None,
            "aggregate_samples_per_second": sum(t["samples"] for t in per_rank) / wall if wall else None,
            "note": "this session's samples only" if resumed else "all samples"}


def finish(plan: Plan, log: RunLog, doc: dict, done: dict[str, dict], parts: list[dict]) -> int:
    """Merge every rank's records, write the final document and return the exit status."""
    order = {s.sample_id: k for k, s in enumerate(plan.samples)}
    records = sorted(list(done.values()) + [r for part in parts for r in part["records"]],
                     key=lambda r: order[r["sample_id"]])
    write_samples_atomic(log.samples_path, records)
    for part_path in log.other_rank_parts():  # merged into the samples file above
        os.remove(part_path)
    doc["metrics"] = aggregate(records)
    for key in ("process_peak_rss_mb", "cuda_max_allocated_mb"):
        values = [part["peak_memory"][key] for part in parts if part["peak_memory"][key] is not None]
        doc["metrics"][key] = max(values) if values else None
    bootstrap = BootstrapConfig(resamples=plan.args.benchmark.bootstrap_resamples, seed=plan.args.benchmark.seed)
    doc["uncertainty"] = uncertainty(records, doc["metrics"], bootstrap)
    doc["throughput"] = throughput(parts, plan.resumed is not None)
    doc["prune"]["layer_calls"] = [sum(c) for c in zip(*(part["layer_calls"] for part in parts))]
    doc["prune"]["run_metrics"] = parts[0]["run_metrics"] if not plan.info.enabled else [p["run_metrics"] for p in parts]
    failed = [part["status"] for part in parts if part["status"]["error"]]
    interrupted = any(part["status"]["interrupted"] for part in parts)
    doc["complete"] = not failed and not interrupted and len(records) == len(plan.samples)
    agreement, agreement_line = run_agreement(plan.args.benchmark.reference, doc, records, log.path)
    doc["agreement"] = agreement.as_dict() if agreement else None
    log.write(doc)
    for f in failed:
        print(f"error: rank {f['rank']} failed: {f['error']}", file=sys.stderr)
    print(results_table(doc, log.path, records, bootstrap))
    if agreement_line:
        print(agreement_line)
    print(summary_line(log.path, doc))  # last: scripts parse this line
    return 1 if failed else (130 if interrupted else 0)
