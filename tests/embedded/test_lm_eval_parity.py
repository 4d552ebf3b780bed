"""lm-eval's own `hf` model and this project's `layerbench` model give the same log-likelihoods and accuracies on
the local tasks: for the unpruned embedded model, and for angular n=6 (hf on the checkpoint benchmark.py saved,
layerbench pruning with the same flags)."""
from __future__ import annotations

import pytest

from layerbench.harness.tasks import LOCAL_TASKS

pytestmark = pytest.mark.slow

TASKS = ["aclsum_mc", "aclsum_ppl"]


def scored(lm, limit: int) -> tuple[dict, dict]:
    """(per-task list of per-request log-likelihoods, per-task metrics) from lm-eval's evaluator."""
    from lm_eval import simple_evaluate
    from lm_eval.tasks import TaskManager
    manager = TaskManager(include_path=LOCAL_TASKS, include_defaults=False)
    out = simple_evaluate(model=lm, tasks=TASKS, limit=limit, task_manager=manager, log_samples=True)
    loglikelihoods = {t: [r[0] if isinstance(r, (list, tuple)) else r for s in out["samples"][t] for r in s["resps"]]
                      for t in TASKS}
    metrics = {t: {k: v for k, v in out["results"][t].items() if "," in k and "stderr" not in k} for t in TASKS}
    return loglikelihoods, metrics


def flat(values) -> list[float]:
    return [float(v[0]) if isinstance(v, (list, tuple)) else float(v) for v in values]


def assert_same(hf_lm, ours_lm, limit: int) -> None:
    hf_ll, hf_metrics = scored(hf_lm, limit)
    our_ll, our_metrics = scored(ours_lm, limit)
    for task in TASKS:
        a, b = flat(hf_ll[task]), flat(our_ll[task])
        assert len(a) == len(b) > 0
        # fp32 sums over up to a few hundred tokens, computed by kernels whose summation order depends on the
        # CPU's BLAS code path: within 1e-3 on one machine, 1.45e-3 apart on an AMD EPYC, so relative 2e-5 too
        worst = max(abs(x - y) / max(1.0, abs(x)) for x, y in zip(a, b))
        assert all(y == pytest.approx(x, rel=2e-5, abs=1e-3) for x, y in zip(a, b)), (task, worst)
    assert {k: v for k, v in hf_metrics["aclsum_mc"].items()} == our_metrics["aclsum_mc"]
    for key, value in hf_metrics["aclsum_ppl"].items():
        assert our_metrics["aclsum_ppl"][key] == pytest.approx(value, rel=1e-4)


def test_unpruned_embedded_model_matches_lm_eval_hf():
    from lm_eval.models.huggingface import HFLM

    from layerbench.harness.lm import LayerbenchLM
    from layerbench.models.loading import embedded_model_source
    hf = HFLM(pretrained=embedded_model_source()[0], dtype="float32", device="cpu", batch_size=4)
    assert_same(hf, LayerbenchLM(dtype="float32", batch_size=4), limit=3)


def test_angular_checkpoint_on_hf_matches_layerbench_pruning(tmp_path):
    from lm_eval.models.huggingface import HFLM

    from layerbench.harness.lm import LayerbenchLM
    from layerbench.runs.cli import main
    saved = tmp_path / "angular6"
    flags = {"prune_method": "angular", "prune_n": 6, "dtype": "float32", "calibration_samples": 8}
    argv = [f"--{k}={v}" for k, v in flags.items()]
    assert main(argv + ["--save_pruned_model", str(saved), "--num_samples", "1", "--max_steps", "2",
                        "--perplexity", "False", "--warmup", "False", "--output_dir", str(tmp_path / "logs")]) == 0
    hf = HFLM(pretrained=str(saved), dtype="float32", device="cpu", batch_size=4)
    assert hf.model.config.num_hidden_layers == 24
    assert_same(hf, LayerbenchLM(batch_size=4, **flags), limit=2)
