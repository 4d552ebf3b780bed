"""Run-level metrics as statistics of per-sample components (registry), for bootstrap intervals and paired
changes. Each statistic reproduces the value layerbench.runs.summary.aggregate writes: plain means are the mean
of one number per sample; ratio metrics are a ratio of sums (perplexity = exp(sum NLL / sum tokens),
tokens_per_second = sum tokens / sum seconds, corpus BLEU from summed n-gram counts and lengths)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
from sacrebleu.metrics import BLEU

from layerbench.analysis.uncertainty import Statistic

# a sample's components, or None where the sample has no value for the metric (e.g. perplexity not scored)
Components = Callable[[dict], "list[float] | None"]


@dataclass(frozen=True)
class RunMetric:
    components: Components
    statistic: Statistic
    change: str = "difference"  # how a run is compared with its base: difference or ratio (speedups)
    is_mean: bool = False  # the plain mean of one number per sample


def _mean_statistic(sums: np.ndarray, n: int) -> np.ndarray:
    return sums[..., 0] / n


def _ratio_statistic(sums: np.ndarray, n: int) -> np.ndarray:
    return sums[..., 0] / sums[..., 1]


def mean_of(get: Callable[[dict], float | None]) -> RunMetric:
    def components(r: dict) -> list[float] | None:
        value = get(r)
        return None if value is None else [float(value)]
    return RunMetric(components, _mean_statistic, is_mean=True)


def ratio_of(numerator: Callable[[dict], float], denominator: Callable[[dict], float], change: str = "difference"
             ) -> RunMetric:
    return RunMetric(lambda r: [float(numerator(r)), float(denominator(r))], _ratio_statistic, change)


_BLEU = BLEU(effective_order=True)  # effective order changes only the sentence score, not the counts used here


def _bleu_components(r: dict) -> list[float]:
    s = _BLEU.sentence_score(r["prediction"], [r["reference"]])
    return [s.sys_len, s.ref_len, *s.counts, *s.totals]


def _corpus_bleu(sums: np.ndarray, n: int) -> np.ndarray:
    """sacrebleu's corpus BLEU (exp smoothing, as sacrebleu.corpus_bleu) from summed lengths and n-gram counts."""
    def one(v: np.ndarray) -> float:
        return BLEU.compute_bleu(v[2:6].tolist(), v[6:10].tolist(), int(round(v[0])), int(round(v[1])),
                                 smooth_method="exp").score
    return np.apply_along_axis(one, -1, sums)


def _perplexity(sums: np.ndarray, n: int) -> np.ndarray:
    return np.exp(sums[..., 0] / sums[..., 1])


def _scored(r: dict) -> list[float] | None:
    p = r.get("perplexity")
    return [p["nll_sum"], p["tokens"]] if p else None


FIXED_METRICS: dict[str, RunMetric] = {
    "corpus_bleu": RunMetric(_bleu_components, _corpus_bleu),
    "tokens_per_second": ratio_of(lambda r: r["num_tokens"], lambda r: r["total_time"], change="ratio"),
    "tokens_per_second_mean": mean_of(lambda r: r["tokens_per_second"]),
    "time_per_token": ratio_of(lambda r: r["total_time"], lambda r: r["num_tokens"]),
    "time_to_first_token": mean_of(lambda r: r["time_to_first_token"]),
    # the first token of each sample comes from the prefill
    "decode_tokens_per_second": ratio_of(lambda r: r["num_tokens"] - 1, lambda r: r["total_time"] - r["time_to_first_token"],
                                         change="ratio"),
    "acceptance_rate": ratio_of(lambda r: r["num_accepted"], lambda r: r["num_drafted"]),
    "mean_draft_length": ratio_of(lambda r: r["num_drafted"], lambda r: r.get("num_rounds", 0)),
    "perplexity": RunMetric(_scored, _perplexity),
    "pass@1": mean_of(lambda r: float(bool(r["passed"])) if "passed" in r else None),
}


def run_metrics(records: list[dict]) -> dict[str, RunMetric]:
    """The metrics these records carry: every per-sample quality metric (their run value is the mean) and the
    fixed ones above."""
    names = dict.fromkeys(k for r in records for k in r.get("metrics", {}))
    out = {name: mean_of(lambda r, name=name: r.get("metrics", {}).get(name)) for name in names}
    out.update(FIXED_METRICS)
    return out


def columns(metric: RunMetric, records: list[dict]) -> dict[str, np.ndarray]:
    """sample id -> components, for the records that have a value."""
    out = {}
    for r in records:
        try:
            c = metric.components(r)
        except (KeyError, TypeError):  # a record from an older or foreign samples file that lacks the fields
            c = None
        if c is not None:
            out[r["sample_id"]] = np.asarray(c, dtype=float)
    return out
