"""Standard errors, bootstrap intervals and paired changes: known answers, and agreement with scipy's own call."""
import math

import numpy as np
import pytest
import sacrebleu
from scipy import stats

from layerbench.analysis import paired
from layerbench.analysis.metric_components import FIXED_METRICS, columns, run_metrics
from layerbench.analysis.uncertainty import BootstrapConfig, estimate, paired_change
from layerbench.runs.summary import aggregate, uncertainty

MEAN = run_metrics([{"metrics": {"rougeL": 0.0}}])["rougeL"]
TPS = FIXED_METRICS["tokens_per_second"]
CONFIG = BootstrapConfig(resamples=1000, seed=3)


def _record(sample_id, rougeL=0.5, tokens=10, seconds=1.0, ttft=0.1, nll=None, prediction="a b c d",
            reference="a b c e", drafted=0, accepted=0, rounds=0):
    r = {"sample_id": sample_id, "prediction": prediction, "reference": reference, "num_tokens": tokens,
         "total_time": seconds, "time_to_first_token": ttft, "tokens_per_second": tokens / seconds,
         "num_drafted": drafted, "num_accepted": accepted, "num_rounds": rounds,
         "metrics": {"rougeL": rougeL, "exact_match": 0.0}}
    if nll is not None:
        r["perplexity"] = {"nll_sum": nll[0], "tokens": nll[1]}
    return r


def test_two_sample_mean_interval_is_the_range_of_resample_means():
    # resample means of [0, 1] are 0, 0.5, 1 with probabilities 1/4, 1/2, 1/4: the 2.5% and 97.5% points are 0, 1
    e = estimate([[0.0], [1.0]], MEAN.statistic, CONFIG, is_mean=True)
    assert (e.value, e.low, e.high, e.n) == (0.5, 0.0, 1.0, 2)
    assert e.stderr == pytest.approx(math.sqrt(0.5) / math.sqrt(2))  # sample std / sqrt(n)
    assert e.stderr_method == "analytic"


def test_ratio_metric_is_a_ratio_of_resampled_sums_not_a_mean_of_ratios():
    # (tokens, seconds) = (10, 1), (10, 3): run value 20 / 4 = 5 (the mean of per-sample ratios would be 6.67);
    # resamples: both first -> 20 / 2 = 10, both second -> 20 / 6 = 3.33, one of each -> 20 / 4 = 5
    e = estimate([[10.0, 1.0], [10.0, 3.0]], TPS.statistic, CONFIG)
    assert e.value == 5.0
    assert e.low == pytest.approx(10 / 3) and e.high == pytest.approx(10.0)
    assert e.stderr_method == "bootstrap"


def test_mean_interval_equals_scipys_own_percentile_bootstrap():
    x = np.array([0.21, 0.35, 0.18, 0.40, 0.27, 0.31, 0.25])
    e = estimate(x[:, None], MEAN.statistic, CONFIG, is_mean=True)
    ref = stats.bootstrap((x,), np.mean, n_resamples=1000, paired=True, method="percentile",
                          rng=np.random.default_rng(3))
    assert e.low == pytest.approx(ref.confidence_interval.low, rel=1e-12)
    assert e.high == pytest.approx(ref.confidence_interval.high, rel=1e-12)
    assert e.stderr == pytest.approx(x.std(ddof=1) / math.sqrt(len(x)))


def test_paired_ratio_change_equals_scipys_paired_bootstrap():
    base = np.array([[10, 1.0], [12, 1.5], [9, 0.8], [20, 2.1], [15, 1.2]])
    new = np.array([[10, 0.7], [12, 1.2], [9, 0.5], [20, 1.5], [15, 1.1]])

    def speedup(bt, bs, nt, ns, axis=-1):
        return (nt.sum(axis) / ns.sum(axis)) / (bt.sum(axis) / bs.sum(axis))

    e = paired_change(base, new, TPS.statistic, "ratio", CONFIG)
    ref = stats.bootstrap((*base.T, *new.T), speedup, n_resamples=1000, paired=True, method="percentile",
                          rng=np.random.default_rng(3))
    assert e.value == pytest.approx((66 / 5.0) / (66 / 6.6))
    assert e.low == pytest.approx(ref.confidence_interval.low, rel=1e-12)
    assert e.high == pytest.approx(ref.confidence_interval.high, rel=1e-12)
    assert e.stderr == pytest.approx(ref.standard_error, rel=1e-12)


def test_constant_paired_differences_give_a_zero_width_interval_at_that_constant():
    base = np.array([[0.1], [0.4], [0.35], [0.2], [0.9]])
    e = paired_change(base, base + 0.25, MEAN.statistic, "difference", CONFIG, is_mean=True)
    assert e.value == pytest.approx(0.25)
    assert e.low == pytest.approx(0.25) and e.high == pytest.approx(0.25)
    assert e.stderr == pytest.approx(0.0, abs=1e-15)
    assert e.contains(0.0) is False


def test_one_sample_has_a_value_but_no_interval():
    e = estimate([[0.3]], MEAN.statistic, CONFIG, is_mean=True)
    assert (e.value, e.stderr, e.low, e.high, e.n) == (0.3, None, None, None, 1)


def test_components_reproduce_the_run_values_of_aggregate():
    records = [_record("a", tokens=10, seconds=1.0, ttft=0.2, nll=(20.0, 10), prediction="the cat sat"),
               _record("b", tokens=30, seconds=2.0, ttft=0.5, nll=None, prediction="a dog ran off"),
               _record("c", tokens=5, seconds=0.5, ttft=0.1, nll=(9.0, 3), reference="the cat sat down")]
    m = aggregate(records)
    u = uncertainty(records, m, CONFIG)["metrics"]
    assert m["tokens_per_second"] == 45 / 3.5 and u["tokens_per_second"]["value"] == pytest.approx(45 / 3.5)
    assert u["decode_tokens_per_second"]["value"] == pytest.approx(42 / (3.5 - 0.8))
    assert u["perplexity"]["value"] == pytest.approx(math.exp(29 / 13)) and u["perplexity"]["n"] == 2
    bleu = sacrebleu.corpus_bleu([r["prediction"] for r in records], [[r["reference"] for r in records]]).score
    assert u["corpus_bleu"]["value"] == pytest.approx(bleu)
    assert u["exact_match"] == {"value": 0.0, "stderr": 0.0, "ci95": [0.0, 0.0], "n": 3, "stderr_method": "analytic"}
    assert "acceptance_rate" not in u and "num_tokens" not in u  # no drafts; a count has no interval
    for name, e in u.items():
        assert e["value"] == pytest.approx(m[name]), name


def test_pairing_refuses_runs_without_samples_or_shared_ids():
    a = [[_record("x"), _record("y")]]
    assert paired.pairing(None, a).label == "unpaired: no samples file"
    assert paired.pairing(a, [[_record("p"), _record("q")]]).label == "unpaired: 0 shared sample ids"
    assert paired.pairing(a, [[_record("x"), _record("q")]]).label == "unpaired: 1 shared sample ids"
    p = paired.pairing(a, [[_record("y"), _record("x"), _record("z")]])
    assert p.paired and p.shared == ["x", "y"] and p.label == "paired: 2 ids"


def test_repeated_runs_are_pooled_per_sample_id():
    base = [[_record("x", rougeL=0.2), _record("y", rougeL=0.4)], [_record("x", rougeL=0.4), _record("y", rougeL=0.6)]]
    new = [[_record("x", rougeL=0.1), _record("y", rougeL=0.3)]]
    assert {k: v.tolist() for k, v in paired.pooled(base, MEAN).items()} == {"x": [pytest.approx(0.3)],
                                                                            "y": [pytest.approx(0.5)]}
    e = paired.change(base, new, "rougeL", ["x", "y"], CONFIG)
    assert e.value == pytest.approx(-0.2) and e.low == pytest.approx(-0.2) and e.high == pytest.approx(-0.2)
    assert columns(TPS, new[0])["x"].tolist() == [10.0, 1.0]
