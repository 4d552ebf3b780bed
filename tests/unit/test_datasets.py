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
