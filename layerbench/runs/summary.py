"""Run-level numbers from per-sample records (the same numbers whether they came from one process or many)."""
from __future__ import annotations

import math

from layerbench.analysis.metric_components import columns, run_metrics
from layerbench.analysis.uncertainty import BootstrapConfig, estimate
from layerbench.evaluation.metrics import corpus_metrics


def speed(records: list[dict]) -> tuple[float | None, float | None]:
    """(generated tokens / generation seconds, accepted / drafted) over the records."""
    tokens = sum(r["num_tokens"] for r in records)
    seconds = sum(r["total_time"] for r in records)
    drafted = sum(r["num_drafted"] for r in records)
    return (tokens / seconds if seconds else None,
            sum(r["num_accepted"] for r in records) / drafted if drafted else None)


def perplexity(records: list[dict]) -> float | None:
    """exp of the token-weighted mean negative log-likelihood of the references."""
    scored = [r["perplexity"] for r in records if r.get("perplexity")]
    tokens = sum(p["tokens"] for p in scored)
    return math.exp(sum(p["nll_sum"] for p in scored) / tokens) if tokens else None


def aggregate(records: list[dict]) -> dict:
    if not records:
        return {"num_samples": 0}
    out = corpus_metrics([r["prediction"] for r in records], [r["reference"] for r in records],
                         [r["metrics"] for r in records])
    tokens = sum(r["num_tokens"] for r in records)
    total = sum(r["total_time"] for r in records)
    ttft = sum(r["time_to_first_token"] for r in records)
    tokens_per_second, acceptance = speed(records)
    decode_tokens = tokens - len(records)  # the first token of each sample comes from the prefill
    drafted = sum(r["num_drafted"] for r in records)
    rounds = sum(r.get("num_rounds", 0) for r in records)
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
        "mean_draft_length": drafted / rounds if rounds else None,
        "perplexity": perplexity(records),
    })
    if any("passed" in r for r in records):
        out["pass@1"] = sum(bool(r.get("passed")) for r in records) / len(records)
    return out


def progress(records: list[dict]) -> dict:
    tokens_per_second, acceptance = speed(records)
    post = {"tok/s": f"{tokens_per_second:.1f}"}
    if acceptance is not None:
        post["acc"] = f"{acceptance:.2f}"
    return post


def summary_line(path: str, doc: dict) -> str:
    m = doc["metrics"]
    keys = ("rouge1", "rouge2", "rougeL", "corpus_bleu", "exact_match", "pass@1", "perplexity", "tokens_per_second",
            "acceptance_rate")
    parts = [f"{k}={m[k]:.4g}" for k in keys if isinstance(m.get(k), (int, float))]
    return f"{path}: " + " ".join(parts)


def uncertainty(records: list[dict], metrics: dict, config: BootstrapConfig) -> dict:
    """Standard error and bootstrap interval over samples of every metric in `metrics` that is a statistic of
    per-sample values (counts, totals and memory peaks are not)."""
    out = {}
    for name, metric in run_metrics(records).items():
        if isinstance(metrics.get(name), (int, float)):
            rows = list(columns(metric, records).values())
            out[name] = estimate(rows, metric.statistic, config, metric.is_mean).as_dict()
    return {**config.describe(), "metrics": out}
