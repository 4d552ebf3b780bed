"""lm-eval on this engine: every prune method and early exit on the local tasks (tiny model), generation through
the strategies against lm-eval's own hf model, and tasks that cannot be loaded as one line with exit status 2."""
from __future__ import annotations

import glob
import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.slow

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CONFIGS = {
    "base": {},
    "angular": {"prune_method": "angular", "prune_n": 2},
    "angular_stand_in": {"prune_method": "angular", "prune_n": 2, "stand_in": "linear"},
    "random": {"prune_method": "random", "dropout_threshold": 0.5},
    "lowrank": {"prune_method": "lowrank", "compression_ratio": 0.5},
    "gated": {"prune_method": "gated", "available_compute": 0.5},
    "early_exit": {"exit_layer": 3, "exit_adapter": "linear"},
}


def test_every_method_and_early_exit_run_local_tasks(tiny_model_dir):
    from layerbench.harness.lm import LayerbenchLM
    from layerbench.harness.tasks import evaluate
    perplexity = {}
    for name, args in CONFIGS.items():
        section = evaluate(LayerbenchLM(model=tiny_model_dir, batch_size=8, **args), ["aclsum_mc", "aclsum_ppl"],
                           limit=2)
        assert {t: (s["version"], s["num_fewshot"], s["limit"], s["samples"]) for t, s in section.items()} == {
            "aclsum_mc": (1.0, 0, 2, 2), "aclsum_ppl": (1.0, 0, 2, 2)}, name
        assert section["aclsum_mc"]["metrics"]["acc"]["value"] in (0.0, 0.5, 1.0)
        perplexity[name] = section["aclsum_ppl"]["metrics"]["word_perplexity"]["value"]
    changed = [name for name in CONFIGS if perplexity[name] != perplexity["base"]]
    assert changed == [name for name in CONFIGS if name != "base"], perplexity  # each scored its own model


def test_generation_strategies_match_lm_eval_hf(tiny_model_dir):
    """Greedy generate_until: autoregressive and self-speculative give lm-eval hf's text, stops included."""
    from lm_eval.api.instance import Instance
    from lm_eval.models.huggingface import HFLM

    from layerbench.harness.lm import LayerbenchLM
    prompts = ["Abstract: We study pruning.\nSummary:", "The quick brown fox", "def add(a, b):"]
    until = {"until": ["\n\n", "fox"], "max_gen_toks": 12, "do_sample": False}
    requests = [Instance("generate_until", doc={}, arguments=(p, dict(until)), idx=0) for p in prompts]
    expected = HFLM(pretrained=tiny_model_dir, dtype="float32", device="cpu", batch_size=1).generate_until(requests)
    assert any(expected)
    autoregressive = LayerbenchLM(model=tiny_model_dir).generate_until(requests)
    speculative = LayerbenchLM(model=tiny_model_dir, generation_strategy="self_speculative", exit_layer=3,
                               num_speculations=2).generate_until(requests)
    assert autoregressive == expected
    assert speculative == expected


def run(args: list[str], cwd: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    return subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def test_hub_task_offline_is_one_line(tmp_path):
    cause = "lm-eval task 'hellaswag': its data cannot be loaded (Couldn't reach 'Rowan/hellaswag' on the Hub"
    done = run(["-m", "layerbench.eval", "--model", "layerbench", "--tasks", "hellaswag", "--limit", "1"], ROOT)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [done.stderr.strip()] and done.stderr.startswith(f"error: {cause}")
    done = run([os.path.join(ROOT, "benchmark.py"), "--lm_eval_tasks", "aclsum_mc,hellaswag", "--num_samples", "1",
                "--output_dir", str(tmp_path)], ROOT)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [done.stderr.strip()] and done.stderr.startswith(f"error: {cause}")
    assert glob.glob(str(tmp_path / "*.json")) == []  # refused while planning: no model loaded, no log


def test_benchmark_writes_lm_eval_section(tiny_model_dir, tmp_path):
    done = run([os.path.join(ROOT, "benchmark.py"), "--model", tiny_model_dir, "--num_samples", "1",
                "--max_steps", "4", "--output_dir", str(tmp_path), "--lm_eval_tasks", os.path.join(ROOT, "tasks"),
                "--lm_eval_limit", "2", "--lm_eval_num_fewshot", "1"], str(tmp_path))
    assert done.returncode == 0, done.stderr[-2000:]
    import json
    doc = json.load(open(glob.glob(str(tmp_path / "benchmark_*.json"))[0]))
    section = doc["lm_eval"]
    assert sorted(section) == ["aclsum_mc", "aclsum_ppl", "aclsum_summarize"]
    assert {t: (s["limit"], s["samples"], s["version"]) for t, s in section.items()} == {
        t: (2, 2, 1.0) for t in section}
    assert section["aclsum_mc"]["num_fewshot"] == 1 and section["aclsum_summarize"]["num_fewshot"] == 1
    assert sorted(section["aclsum_summarize"]["metrics"]) == ["bleu", "chrf"]
    assert doc["args"]["lm_eval_tasks"] == os.path.join(ROOT, "tasks")
