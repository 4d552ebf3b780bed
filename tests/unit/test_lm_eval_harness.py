"""The lm-eval model's pieces on tiny in-process models: model_args as benchmark flags, batch sizes, grouped
scoring against Hugging Face's own forward, task resolution and the run JSON section."""
from __future__ import annotations

import os

import pytest
import torch
import torch.nn.functional as F

from layerbench.engine.engine import Engine
from layerbench.errors import UsageError
from layerbench.harness.lm import batch_size_of, device_flag
from layerbench.harness.model_args import to_argv
from layerbench.harness.scoring import Scorer
from layerbench.harness.tasks import LOCAL_TASKS, resolve, run_section
from tests.helpers import tiny_llama

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_model_args_become_benchmark_flags():
    assert to_argv({"prune_method": "angular", "prune_n": 6, "stand_in": "linear", "pretrained": "/m",
                    "hot_path": "0;1;5", "exit_adapter": None}) == [
        "--prune_method", "angular", "--prune_n", "6", "--stand_in", "linear", "--model", "/m",
        "--hot_path", "0", "1", "5"]


def test_whole_numbers_lm_evals_cli_reads_as_floats_stay_whole():
    """lm-eval's CLI hands `exit_layer=-1` (the documented "none") over as -1.0."""
    assert to_argv({"exit_layer": -1.0, "prune_n": 2.0, "draft_confidence": 1.0, "stop_token_ids": "2;7"}) == [
        "--exit_layer", "-1", "--prune_n", "2", "--draft_confidence", "1.0", "--stop_token_ids", "2", "7"]


@pytest.mark.parametrize("name,value", [("max_length", -1), ("max_length", 0), ("max_gen_toks", 2.5),
                                        ("max_length", "long")])
def test_bad_max_length_or_max_gen_toks_is_one_line_before_any_model(name, value):
    from layerbench.harness.lm import LayerbenchLM
    with pytest.raises(UsageError) as refused:
        LayerbenchLM(**{name: value, "model": "/nonexistent/model"})  # refused before the model would load
    assert str(refused.value) == f"model_args {name} must be a whole number >= 1, got {value!r}"


@pytest.mark.parametrize("key", ["prune_nn", "output_dir", "lm_eval_tasks", "max_steps"])
def test_model_args_outside_the_model_are_refused(key):
    with pytest.raises(UsageError, match=f"model_args '{key}' unknown"):
        to_argv({key: 1})


def test_lm_eval_devices_become_benchmark_devices():
    assert [device_flag(d) for d in (None, "cpu")] == [None, "cpu"]
    assert device_flag("cuda:0") == ("cuda" if torch.cuda.is_available() else "auto")


def test_batch_sizes():
    assert [batch_size_of(v) for v in (1, "8", "auto", "auto:4")] == [1, 8, 0, 0]
    with pytest.raises(UsageError, match="batch_size must be a positive integer or auto, got '0'"):
        batch_size_of("0")


def hf_logprobs(model, ids: list[int], first: int, hidden_layer: int | None = None) -> tuple[float, bool]:
    """Sum of log-probabilities of ids[first:] from HF's forward (early exit: norm + head over the hidden state
    after `hidden_layer` layers)."""
    with torch.no_grad():
        out = model(torch.tensor([ids]), output_hidden_states=hidden_layer is not None)
        logits = out.logits if hidden_layer is None else model.lm_head(model.model.norm(out.hidden_states[hidden_layer]))
    logits = logits[0, first - 1:-1]
    target = torch.tensor(ids[first:])
    return float(F.log_softmax(logits, -1).gather(1, target[:, None]).sum()), bool((logits.argmax(-1) == target).all())


@pytest.mark.parametrize("exit_layer", [-1, 3])
def test_grouped_scoring_equals_separate_hf_forwards(exit_layer):
    """Three continuations after one shared context (one prefill) score as three separate HF forwards do."""
    model = tiny_llama()
    scorer = Scorer(Engine(model), exit_layer)
    context = [5, 17, 3, 99, 42, 8, 23]
    continuations = [[7], [60, 2, 11, 30], [9, 9]]
    got = scorer.score_group(context, continuations)
    expected = [hf_logprobs(model, context + c, len(context), exit_layer if exit_layer > 0 else None)
                for c in continuations]
    assert [g[1] for g in got] == [e[1] for e in expected]
    assert [g[0] for g in got] == pytest.approx([e[0] for e in expected], abs=1e-4)
    lone = scorer.score_group(context, continuations[1:2])  # one causal pass
    assert lone[0][0] == pytest.approx(expected[1][0], abs=1e-4)


def test_greedy_continuation_is_flagged():
    model = tiny_llama()
    scorer = Scorer(Engine(model))
    context = [5, 17, 3]
    with torch.no_grad():
        best = int(model(torch.tensor([context])).logits[0, -1].argmax())
    assert scorer.score_group(context, [[best]])[0][1] is True
    assert scorer.score_group(context, [[(best + 1) % 101]])[0][1] is False


def test_task_folder_and_files_resolve():
    names, paths = resolve([os.path.join(ROOT, "tasks"), "hellaswag"])
    assert names == ["aclsum_mc", "aclsum_ppl", "aclsum_summarize", "hellaswag"]
    assert paths == [LOCAL_TASKS]
    assert resolve([os.path.join(ROOT, "tasks", "aclsum_ppl.yaml")])[0] == ["aclsum_ppl"]
    with pytest.raises(UsageError, match="lm-eval task file nowhere.yaml: no such file"):
        resolve(["nowhere.yaml"])


def test_run_section_from_lm_eval_results():
    results = {"results": {"aclsum_mc": {"alias": "aclsum_mc", "acc,none": 0.5, "acc_stderr,none": 0.25,
                                         "ppl,none": 3.0, "ppl_stderr,none": "N/A",
                                         "exact_match,strict": 1.0, "exact_match_stderr,strict": 0.0}},
               "versions": {"aclsum_mc": 1.0}, "n-shot": {"aclsum_mc": 2},
               "n-samples": {"aclsum_mc": {"original": 100, "effective": 4}}}
    assert run_section(results, 4) == {"aclsum_mc": {
        "version": 1.0, "num_fewshot": 2, "limit": 4, "samples": 4,
        "metrics": {"acc": {"value": 0.5, "stderr": 0.25}, "ppl": {"value": 3.0, "stderr": None},
                    "exact_match[strict]": {"value": 1.0, "stderr": 0.0}}}}


@pytest.mark.parametrize("flags,message", [
    ({"lm_eval_limit": 5}, "--lm_eval_limit only applies with --lm_eval_tasks"),
    ({"lm_eval_num_fewshot": 1}, "--lm_eval_num_fewshot only applies with --lm_eval_tasks"),
    ({"lm_eval_tasks": " , "}, "--lm_eval_tasks: no task given"),
    ({"lm_eval_tasks": "aclsum_mc", "lm_eval_limit": 0}, "--lm_eval_limit must be >= 1, got 0"),
    ({"lm_eval_tasks": "aclsum_mc", "lm_eval_num_fewshot": -1}, "--lm_eval_num_fewshot must be >= 0, got -1"),
    ({"lm_eval_tasks": "aclsum_mc", "lm_eval_batch_size": 0}, "--lm_eval_batch_size must be >= 1, got 0"),
    ({"lm_eval_tasks": "tasks/data"}, "lm-eval task folder tasks/data: no *.yaml task files"),
])
def test_benchmark_lm_eval_flags_are_checked(flags, message, monkeypatch):
    from layerbench.runs.arguments import BenchmarkArguments
    from layerbench.runs.lm_eval_step import check
    monkeypatch.chdir(ROOT)
    with pytest.raises(UsageError) as info:
        check(BenchmarkArguments(**flags))
    assert str(info.value) == message


def test_a_shared_context_is_prefilled_once_only_where_that_pays():
    from layerbench.harness.lm import worth_sharing
    assert worth_sharing(300, [40, 52, 47, 39])  # a multiple-choice question
    assert not worth_sharing(1, [150, 210, 90])  # rolling windows after the one prefix token
    assert not worth_sharing(20, [200])  # nothing to share
