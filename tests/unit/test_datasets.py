import json

import pytest

from layerbench.evaluation import datasets as data
from layerbench.errors import UsageError


def test_aclsum_fields_and_sizes():
    # the files hold 100/50/100 rows (`wc -l` says 99/49/99: the last line has no newline)
    for split, n in (("train", 100), ("val", 50), ("test", 100)):
        _, samples = data.load_split("aclsum_summarization", split, data.DatasetOptions())
        assert len(samples) == n
    s = samples[0]
    assert s.sample_id == "E09-1056"
    assert s.input.startswith("Handling terminology is an important matter")
    assert s.reference.startswith("Existing machine translation systems") and "analogy solvers" in s.reference


def test_human_eval_has_164_problems():
    split, samples = data.load_split("human_eval", None, data.DatasetOptions())
    assert split == "test" and len(samples) == 164
    assert samples[0].sample_id == "HumanEval/0" and "def has_close_elements" in samples[0].input


def test_sample_selection_depends_only_on_seed_and_count():
    _, samples = data.load_split("aclsum_summarization", "test", data.DatasetOptions())
    a = [s.sample_id for s in data.select_samples(samples, 5, 42, True)]
    assert a == [s.sample_id for s in data.select_samples(samples, 5, 42, True)]
    assert a != [s.sample_id for s in data.select_samples(samples, 5, 43, True)]
    assert a[:3] == [s.sample_id for s in data.select_samples(samples, 3, 42, True)]
    assert [s.sample_id for s in data.select_samples(samples, 2, 42, False)] == ["E09-1056", samples[1].sample_id]
    with pytest.raises(UsageError, match="num_samples"):
        data.select_samples(samples, 101, 42, True)


def test_custom_jsonl(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text("\n".join(json.dumps({"q": f"question {i}", "a": f"answer {i}"}) for i in range(3)))
    _, samples = data.load_split("custom_jsonl", None, data.DatasetOptions(data_path=str(path), prompt_field="q", response_field="a"))
    assert [(s.input, s.reference) for s in samples] == [(f"question {i}", f"answer {i}") for i in range(3)]
    with pytest.raises(UsageError, match="no field 'prompt'"):
        data.load_split("custom_jsonl", None, data.DatasetOptions(data_path=str(path)))
    with pytest.raises(UsageError, match="--data_path is required"):
        data.load_split("custom_jsonl", None, data.DatasetOptions())


def test_unreachable_hub_dataset_names_offline_ones():
    with pytest.raises(UsageError) as err:
        data.load_split("cnn_dm_summarization", None, data.DatasetOptions())
    msg = str(err.value)
    assert "\n" not in msg and "aclsum_summarization" in msg and "human_eval" in msg


def test_few_shot_prefix_uses_train_split():
    tmpl = "Abstract: {input}\nSummary:"
    prefix = data.few_shot_prefix("aclsum_summarization", 2, 42, tmpl, data.DatasetOptions())
    assert prefix.count("Abstract: ") == 2 and prefix.endswith("\n\n")
    _, train = data.load_split("aclsum_summarization", "train", data.DatasetOptions())
    shots = data.select_samples(train, 2, 42, True)
    assert prefix.startswith(tmpl.format(input=shots[0].input))


def test_template_braces_other_than_input_are_literal(tmp_path):
    """JSON or code in a template: only {input} is replaced, in the prompts and in the n-shot examples."""
    from layerbench.runs.plan import make_plan
    from layerbench.runs.ranks import DistInfo

    assert data.fill_template('Q: {input} } {"k": {input}}', "x") == 'Q: x } {"k": x}'
    template = 'Q: {input} } {"answer": "..."}'
    plan = make_plan(["--template", template, "--n_shot", "1", "--num_samples", "1", "--output_dir",
                      str(tmp_path / "out")], DistInfo())
    [sample] = plan.samples
    assert plan.prompt_text(sample).endswith(f'Q: {sample.input} }} {{"answer": "..."}}')
    assert plan.shots.startswith("Q: ") and plan.shots.count('} {"answer": "..."} ') == 1


def test_calibration_never_includes_an_evaluated_sample(tmp_path, embedded_tokenizer):
    """human_eval has no train split, so calibrating on it draws from the evaluated split: the evaluated problems
    must be left out (and the log says so); aclsum calibration comes from its train split."""
    from layerbench.runs.distributed import DistInfo
    from layerbench.runs.plan import make_plan
    from layerbench.runs.prepare import calibration_loader

    def calibration(num_samples, *flags):
        plan = make_plan(["--num_samples", num_samples, "--calibration_samples", "164", "--output_dir",
                          str(tmp_path), *flags], DistInfo())
        return plan, calibration_loader(plan, embedded_tokenizer)()

    plan, calib = calibration("160", "--dataset", "human_eval", "--prune_method", "angular", "--prune_n", "1",
                              "--calibration_dataset", "human_eval")
    assert calib.source["split"] == plan.split and calib.source["excluded_evaluated_samples"] is True
    assert len(calib.token_ids) == 164 - 160  # only the 4 problems that are not evaluated remain

    def prompt_start(sample) -> tuple[int, ...]:  # (the last token may merge with what follows)
        return tuple(embedded_tokenizer(data.fill_template(plan.template, sample.input))["input_ids"][:-1])
    _, problems = data.load_split("human_eval", None, data.DatasetOptions())
    evaluated = {s.sample_id for s in plan.samples}
    starts = {s.sample_id: prompt_start(s) for s in problems}
    sources = [{i for i, st in starts.items() if tuple(ids[:len(st)]) == st} for ids in calib.token_ids]
    assert all(found and not found & evaluated for found in sources)
    plan, calib = calibration("10", "--prune_method", "angular", "--prune_n", "1")
    assert calib.source["split"] == "train" and calib.source["excluded_evaluated_samples"] is False
