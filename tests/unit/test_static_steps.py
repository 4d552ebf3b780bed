"""Static (graph-ready) steps on CPU: positions in device tensors, one reused cache, full-cache masked attention.
On CUDA the same steps are captured as CUDA graphs; here they run eagerly, so their bookkeeping is checked
against the ordinary eager path token for token."""
import os

import pytest
import torch

from layerbench.decoding import STRATEGIES, GenerationConfig
from layerbench.engine.engine import Engine
from layerbench.engine.static_steps import install_static_steps
from layerbench.errors import UsageError
from pruned_model import PruneConfig, PruneModel
from tests.helpers import greedy, prompt_ids, speculative, tiny_gpt2, tiny_llama
from tests.unit.test_families import build


def _static(model, config: GenerationConfig, strategy: str, capacity: int = 256) -> Engine:
    engine = Engine(model)
    install_static_steps(engine, capacity, STRATEGIES[strategy].static_shapes(engine, config), "eager")
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
    config = GenerationConfig(max_steps=40, exit_block=3, num_speculations=4, draft_confidence=confidence)
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
            install_static_steps(engine, 128, [(0, 6, 1, True)], "eager")
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
        install_static_steps(pm.attach(Engine(pm.model)), 64, [(0, 6, 1, True)], "eager")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_graph_replay_equals_eager():
    model = tiny_llama().cuda()
    config = GenerationConfig(max_steps=24, exit_block=3, num_speculations=3)
    graphed = Engine(model)
    install_static_steps(graphed, 128, STRATEGIES["self_speculative"].static_shapes(graphed, config), "cuda")
    prompt = prompt_ids().cuda()
    assert (speculative(graphed, prompt, 24, 3, 3).token_ids == greedy(Engine(model), prompt, 24).token_ids)


def _ss_config() -> GenerationConfig:
    return GenerationConfig(max_steps=30, exit_block=3, num_speculations=3)


def test_replayed_steps_count_every_layer_call_as_eager_steps_do():
    """Emulated replay runs each step without per-block callbacks, as a CUDA graph does: the counts must come from
    the replay bookkeeping and equal the eager ones (draft, verification and decode steps)."""
    model = tiny_llama(num_layers=6)
    counts = {}
    for mode in ("off", "eager", "emulated"):
        pm = PruneModel(model, None, PruneConfig(method="base"))
        engine = pm.attach(Engine(model))
        if mode != "off":
            shapes = STRATEGIES["self_speculative"].static_shapes(engine, _ss_config())
            install_static_steps(engine, 128, shapes, mode)
        pm.start_counting()
        tokens = speculative(engine, prompt_ids(), 30, 3, 3).token_ids
        counts[mode] = (pm.layer_call_counts(), pm.counter.token_snapshot(), tokens)
    assert counts["emulated"] == counts["eager"] == counts["off"]


def test_observers_are_refused_during_replay():
    model = tiny_llama(num_layers=6)
    engine = Engine(model)
    install_static_steps(engine, 128, [(0, 6, 1, True)], "emulated")
    engine.observers.append(lambda block, before, after, phase: None)
    with pytest.raises(RuntimeError, match="observers"):
        greedy(engine, prompt_ids(), 4)


def _graph_check(engine: Engine, mode: str) -> str:
    from layerbench.runs.graphs import capture_checked
    config = _ss_config()
    shapes = STRATEGIES["self_speculative"].static_shapes(engine, config)
    return capture_checked(engine, 128, shapes, mode, lambda: speculative(engine, prompt_ids(), 16, 3, 3).token_ids)


def test_capture_that_fails_falls_back_to_eager(capsys):
    model = tiny_llama(num_layers=6)
    engine = Engine(model)
    status = _graph_check(engine, "cuda")  # no CUDA here: the capture itself fails
    assert status.startswith("off (capture or replay failed: ") and engine.static is None
    assert capsys.readouterr().err.count("warning: CUDA graphs off") == 1
    assert greedy(engine, prompt_ids(), 20).token_ids == greedy(Engine(model), prompt_ids(), 20).token_ids


def test_replay_that_differs_from_eager_falls_back(monkeypatch, capsys):
    from layerbench.engine.static_steps import StaticStep
    original = StaticStep.capture_emulated

    def corrupted(step):
        original(step)
        replay = step.replay
        step.replay = lambda: (replay(), step.output.mul_(-1.0))
    monkeypatch.setattr(StaticStep, "capture_emulated", corrupted)
    engine = Engine(tiny_llama(num_layers=6))
    status = _graph_check(engine, "emulated")
    assert status.startswith("off (replay differs from the eager steps") and engine.static is None
    assert "warning: CUDA graphs off (replay differs" in capsys.readouterr().err


def test_checked_capture_keeps_the_steps():
    engine = Engine(tiny_llama(num_layers=6))
    assert _graph_check(engine, "emulated").startswith("on (5 captured steps")
    assert engine.static is not None and engine.static.replaying


def test_static_buffers_never_move_during_a_run_with_long_references(tiny_model_dir, tmp_path):
    """A full run through the static path with perplexity on references much longer than max_steps: every buffer
    the steps use keeps its address (a captured graph would keep reading the old one), and the perplexities equal
    those of an eager run."""
    from layerbench.runs.ranks import from_environment
    from layerbench.runs.generate import run_samples
    from layerbench.runs.plan import make_plan
    from layerbench.runs.prepare import prepare
    from layerbench.runs.run_log import RunLog

    results = {}
    for graphs in ("static", "off"):
        argv = ["--model", tiny_model_dir, "--num_samples", "3", "--max_steps", "4", "--cuda_graphs", graphs,
                "--generation_strategy", "self_speculative", "--exit_layer", "3", "--num_speculations", "2",
                "--warmup", "False", "--output_dir", str(tmp_path / graphs)]
        plan = make_plan(argv, from_environment())
        prepared = prepare(plan)
        static = prepared.engine.static
        before = {k: t.data_ptr() for k, t in static.buffers(prepared.engine).items()} if static else {}
        os.makedirs(plan.output_dir, exist_ok=True)
        records, status, _ = run_samples(plan, prepared, RunLog(plan.output_dir, graphs, 0), plan.samples)
        assert status["error"] is None
        assert all(r["perplexity"]["tokens"] > prepared.generation.max_steps * 4 for r in records)
        if static:
            assert prepared.cuda_graphs.startswith("static (")
            assert {k: t.data_ptr() for k, t in static.buffers(prepared.engine).items()} == before
            longest = max(r["prompt_tokens"] + r["perplexity"]["tokens"] for r in records)
            rotary = prepared.engine.rotary
            assert rotary.length < longest <= next(iter(rotary.longer.values()))[0].shape[0]
        results[graphs] = [(r["prediction"], r["perplexity"]["nll_sum"]) for r in records]
    for (text_s, nll_s), (text_e, nll_e) in zip(results["static"], results["off"]):
        assert text_s == text_e and nll_s == pytest.approx(nll_e, rel=1e-4)


def test_the_shared_cache_is_sized_once_and_reused_without_stale_reads():
    model = tiny_llama(num_layers=4)
    engine = Engine(model)
    long, short = prompt_ids(1, 40, model.config.vocab_size), prompt_ids(2, 5, model.config.vocab_size)
    first = greedy(engine, long, 20).token_ids
    cache = engine.cache
    assert cache is not None and cache.capacity >= 60
    # a short sequence after a long one reuses the cache, whose later positions still hold the long one's keys
    assert greedy(engine, short, 20).token_ids == greedy(Engine(model), short, 20).token_ids
    assert greedy(engine, long, 20).token_ids == first and engine.cache is cache
    greedy(engine, prompt_ids(3, 70, model.config.vocab_size), 20)  # longer: grows once
    assert engine.cache is not cache and engine.cache.capacity >= 90


def test_a_pass_past_the_cache_end_is_refused():
    engine = Engine(tiny_llama(num_layers=2))
    cache = engine.new_cache(8, shared=False)
    with pytest.raises(RuntimeError, match="KV cache overflow: 10 > 8"):
        engine.run(cache, 4, 0, engine.num_blocks, input_ids=prompt_ids(1, 6))
