"""Static (graph-ready) steps on CPU: positions in device tensors, one reused cache, full-cache masked attention.
On CUDA the same steps are captured as CUDA graphs; here they run eagerly, so their bookkeeping is checked
against the ordinary eager path token for token."""
import pytest
import torch

from layerbench.decoding import STRATEGIES, GenerationConfig
from layerbench.engine.engine import Engine
from layerbench.errors import UsageError
from pruned_model import PruneConfig, PruneModel
from tests.helpers import greedy, prompt_ids, speculative, tiny_gpt2, tiny_llama
from tests.unit.test_families import build


def _static(model, config: GenerationConfig, strategy: str, capacity: int = 256) -> Engine:
    engine = Engine(model)
    engine.use_static_steps(capacity, STRATEGIES[strategy].static_shapes(engine, config), graphs=False)
    return engine


@pytest.mark.parametrize("factory", [tiny_llama, tiny_gpt2, lambda: build("gemma2_window_softcap"),
                                     lambda: build("mistral_window")])
def test_static_autoregressive_equals_eager(factory):
    model = factory()
    static = _static(model, GenerationConfig(max_steps=40), "autoregressive")
    eager = Engine(model)
    for seed, length in ((1, 6), (2, 30), (3, 11)):  # consecutive sequences reuse the one cache
        prompt = prompt_ids(seed, length, model.config.vocab_size)
        assert greedy(static, prompt, 40).token_ids == greedy(eager, prompt, 40).token_ids


@pytest.mark.parametrize("confidence", [None, 0.9])
def test_static_self_speculative_equals_eager_for_every_draft_length(confidence):
    model = tiny_llama(num_layers=6)
    config = GenerationConfig(max_steps=40, exit_layer=3, num_speculations=4, draft_confidence=confidence)
    static = _static(model, config, "self_speculative")
    assert len(static.static.steps) == 6  # one draft step, verification of 1..5 rows
    eager = Engine(model)
    for seed in (1, 2):
        prompt = prompt_ids(seed)
        ss = speculative(static, prompt, 40, 3, 4, draft_confidence=confidence)
        assert ss.token_ids == greedy(eager, prompt, 40).token_ids
        assert ss.num_drafted == speculative(eager, prompt, 40, 3, 4, draft_confidence=confidence).num_drafted


def test_static_steps_report_the_same_layer_calls():
    model = tiny_llama(num_layers=6)
    counts = {}
    for name, static in (("eager", False), ("static", True)):
        pm = PruneModel(model, None, PruneConfig(method="base"))
        engine = pm.attach(Engine(model))
        if static:
            engine.use_static_steps(128, [(0, 6, 1, True)], graphs=False)
        pm.start_counting()
        greedy(engine, prompt_ids(), 10)
        counts[name] = pm.layer_call_counts()
    assert counts["static"] == counts["eager"] == [10] * 6


def test_static_cache_capacity_and_gating_are_checked():
    model = tiny_llama()
    engine = _static(model, GenerationConfig(max_steps=8), "autoregressive", capacity=16)
    with pytest.raises(RuntimeError, match="exceeds the static cache"):
        greedy(engine, prompt_ids(1, 20), 8)
    pm = PruneModel(tiny_llama(), None, PruneConfig(method="gated"))
    pm.apply()
    with pytest.raises(UsageError, match="layer policy"):
        pm.attach(Engine(pm.model)).use_static_steps(64, [(0, 6, 1, True)], graphs=False)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_graph_replay_equals_eager():
    model = tiny_llama().cuda()
    config = GenerationConfig(max_steps=24, exit_layer=3, num_speculations=3)
    graphed = Engine(model)
    graphed.use_static_steps(128, STRATEGIES["self_speculative"].static_shapes(graphed, config), graphs=True)
    prompt = prompt_ids().cuda()
    assert (speculative(graphed, prompt, 24, 3, 3).token_ids == greedy(Engine(model), prompt, 24).token_ids)
