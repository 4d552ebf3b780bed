"""Device placement: the plan read from a device map or from the modules, the move points, loading with
--device_map (explicit per-layer maps, accelerate CPU offload, disk refused), and equal outputs with and without a
map. This machine has one device (the CPU), so two devices are faked at the level of the plan."""
import json

import pytest
import torch

from layerbench.engine.engine import Engine
from layerbench.engine.placement import Placement, device_in_map
from layerbench.errors import UsageError
from layerbench.models.device_map import materialize_offloaded, parse_device_map, parse_max_memory
from layerbench.models.loading import load_model
from tests.helpers import greedy, prompt_ids, speculative, tiny_llama

CUDA0, CUDA1, CPU = torch.device("cuda:0"), torch.device("cuda:1"), torch.device("cpu")


def _plan(device_map: dict, num_layers: int = 6) -> Placement:
    return Placement.resolve(lambda name: device_in_map(device_map, name),
                             [f"model.layers.{i}" for i in range(num_layers)], "model.embed_tokens", "model.norm",
                             "lm_head")


def test_plan_from_a_two_gpu_map_moves_at_the_boundary_and_back():
    device_map = {"model.embed_tokens": 0, **{f"model.layers.{i}": 0 if i < 3 else 1 for i in range(6)},
                  "model.norm": 1, "lm_head": 1}
    plan = _plan(device_map)
    assert plan.blocks == (CUDA0,) * 3 + (CUDA1,) * 3
    assert plan.devices == (CUDA0, CUDA1) and plan.split
    assert plan.moves() == [("block 3", CUDA1), ("output", CUDA0)]
    assert plan.describe()["blocks"] == {"cuda:0": [0, 1, 2], "cuda:1": [3, 4, 5]}


def test_plan_prefixes_and_cpu_offload():
    plan = _plan({"model": "cuda:0", "model.layers.4": "cpu", "model.layers.5": "cpu", "lm_head": "cuda:0"})
    assert plan.blocks == (CUDA0,) * 4 + (CPU,) * 2
    assert plan.moves() == [("block 4", CPU), ("final norm", CUDA0)]
    assert not _plan({"": "cpu"}).split and _plan({"": "cpu"}).moves() == []
    with pytest.raises(UsageError, match="places no module"):
        device_in_map({"model.layers": 0}, "lm_head")


def test_engine_reads_placement_from_the_modules():
    engine = Engine(tiny_llama())
    assert engine.placement.blocks == (CPU,) * 6 and engine.cache_devices == [CPU] * 6
    assert engine.placement.moves() == []


@pytest.mark.parametrize("value, error", [
    ('{"model": "gpu"}', "is not a device"), ('{"": "disk"}', "offloaded to disk"), ("{oops", "invalid JSON"),
    ("everywhere", "not one of auto"), ("[]", "not one of auto"),
])
def test_bad_device_maps_are_refused(value, error):
    with pytest.raises(UsageError, match=error):
        parse_device_map(value)


def test_max_memory_forms():
    assert parse_max_memory("0=20GiB, 1=10GiB,cpu=60GiB") == {0: "20GiB", 1: "10GiB", "cpu": "60GiB"}
    assert parse_max_memory('{"0": "1GiB"}') == {0: "1GiB"}
    for bad, error in (("gpu=1GiB", "not a GPU index"), ("disk=1GiB", "refuses disk"), ("0", "DEVICE=SIZE")):
        with pytest.raises(UsageError, match=error):
            parse_max_memory(bad)


@pytest.fixture(scope="module")
def saved_tiny(tmp_path_factory):
    path = tmp_path_factory.mktemp("tiny")
    tiny_llama().save_pretrained(path)
    return str(path)


@pytest.fixture
def load(monkeypatch):
    """load_model for a checkpoint without tokenizer files (the tests feed token ids)."""
    from layerbench.models import loading
    monkeypatch.setattr(loading.AutoTokenizer, "from_pretrained", lambda *a, **k: None)
    return lambda path, **kw: load_model(path, dtype="float32", device="cpu", **kw).model


def test_explicit_per_layer_map_and_auto_give_the_same_tokens_as_no_map(saved_tiny, tmp_path, load):
    per_layer = {"model.embed_tokens": "cpu", **{f"model.layers.{i}": "cpu" for i in range(6)},
                 "model.norm": "cpu", "model.rotary_emb": "cpu", "lm_head": "cpu"}
    map_file = tmp_path / "map.json"
    map_file.write_text(json.dumps(per_layer))
    plain = Engine(load(saved_tiny))
    for device_map in (str(map_file), json.dumps(per_layer), "auto", "sequential"):
        mapped = Engine(load(saved_tiny, device_map=device_map))
        for seed in (1, 2):
            prompt = prompt_ids(seed)
            assert greedy(mapped, prompt, 20).token_ids == greedy(plain, prompt, 20).token_ids
        assert speculative(mapped, prompt_ids(3), 20, 3, 3).token_ids == greedy(plain, prompt_ids(3), 20).token_ids


def test_a_plan_that_needs_disk_is_refused_before_loading(saved_tiny, load):
    with pytest.raises(UsageError, match="offloaded to disk.*--max_memory"):
        load(saved_tiny, device_map="auto", max_memory="cpu=20KB")


def test_cpu_offloaded_weights_are_materialized_and_hooks_removed():
    from accelerate import cpu_offload
    model, reference = tiny_llama(), tiny_llama()
    cpu_offload(model, execution_device=CPU)  # weights on meta, the real ones in each hook's weights map
    assert {p.device.type for p in model.parameters()} == {"meta"}
    with pytest.raises(UsageError, match="not materialized"):
        Engine(model)
    assert materialize_offloaded(model)
    assert not any(hasattr(m, "_hf_hook") for m in model.modules())
    prompt = prompt_ids()
    assert greedy(Engine(model), prompt, 16).token_ids == greedy(Engine(reference), prompt, 16).token_ids
