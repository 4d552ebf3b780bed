"""Compiled blocks (engine.compiled, --compile): torch.compile of DecoderBlock.compute for fixed-shape steps. In
float32 they give the uncompiled steps' greedy tokens for every family; one compiled graph serves every layer; in
exact mode compiled self-speculative decoding gives compiled autoregressive decoding's tokens in bfloat16; a
compiler failure falls back to eager blocks with one warning line."""
import pytest
import torch

from layerbench.decoding import STRATEGIES, GenerationConfig
from layerbench.decoding.sampling import StopCondition
from layerbench.engine import exact
from layerbench.engine.compiled import compile_blocks
from layerbench.engine.engine import Engine, EngineOptions
from layerbench.engine.static_steps import install_static_steps
from layerbench.runs import step_modes
from tests.helpers import greedy, prompt_ids, speculative, tiny_llama
from tests.unit.test_families import CONFIGS, VOCAB, build

pytestmark = pytest.mark.slow  # each model compiles for 10-30 s on two cores

ONE_PER_FAMILY = ["llama", "mistral_window", "qwen2", "qwen3", "phi3", "gemma2_window_softcap", "gpt2"]
MAX_STEPS = 24


def fixed_shape_engine(model, compiled: bool, rows: int = 0, spec: GenerationConfig | None = None) -> Engine:
    engine = Engine(model, EngineOptions(exact_rows=rows))
    if compiled:
        compile_blocks(engine)
    shapes = STRATEGIES["autoregressive"].static_shapes(engine, GenerationConfig(MAX_STEPS))
    if spec is not None:
        shapes += STRATEGIES["self_speculative"].static_shapes(engine, spec)
    install_static_steps(engine, 64 + MAX_STEPS + 16, shapes, "eager")
    return engine


def test_families_are_covered():
    assert {CONFIGS[name]().model_type for name in ONE_PER_FAMILY} == {CONFIGS[n]().model_type for n in CONFIGS}


@pytest.mark.parametrize("name", ONE_PER_FAMILY)
def test_compiled_steps_give_the_uncompiled_tokens_in_float32(name):
    model = build(name)
    torch._dynamo.reset()
    compiled, eager = fixed_shape_engine(model, True), fixed_shape_engine(model, False)
    for seed, length in ((1, 9), (2, 30)):
        prompt = prompt_ids(seed, length, VOCAB)
        assert greedy(compiled, prompt, MAX_STEPS).token_ids == greedy(eager, prompt, MAX_STEPS).token_ids


def test_one_compiled_graph_serves_every_layer():
    from torch._dynamo.utils import counters
    torch._dynamo.reset()
    counters.clear()
    engine = fixed_shape_engine(tiny_llama(num_layers=6), True)
    greedy(engine, prompt_ids(), 4)
    assert counters["stats"]["unique_graphs"] == 1  # six layers, one fixed-shape step: one graph


def test_compiled_self_speculation_equals_compiled_autoregressive_in_bfloat16_with_exact_mode():
    model = tiny_llama(num_layers=6, vocab=VOCAB).to(torch.bfloat16)
    torch._dynamo.reset()
    spec = GenerationConfig(MAX_STEPS, 3, 4)
    engine = fixed_shape_engine(model, True, exact.ROWS, spec)
    for seed, length in ((1, 9), (2, 23), (3, 14)):
        prompt = prompt_ids(seed, length, VOCAB)
        assert speculative(engine, prompt, MAX_STEPS, 3, 4).token_ids == greedy(engine, prompt, MAX_STEPS).token_ids


def test_a_compiler_failure_falls_back_to_eager_blocks_with_one_warning(monkeypatch, capsys):
    def broken(engine):
        engine.block_compute = lambda *args: (_ for _ in ()).throw(RuntimeError("no C++ compiler\nmore"))
    monkeypatch.setattr(step_modes, "compile_blocks", broken)
    engine = Engine(tiny_llama())
    status, seconds = step_modes.prepare_compile("on", engine, STRATEGIES["autoregressive"],
                                                 GenerationConfig(max_steps=8), list(range(5)), StopCondition())
    assert status == "off (compilation failed: RuntimeError: no C++ compiler)" and seconds is None
    assert engine.block_compute is None and engine.static is None
    assert capsys.readouterr().err == ("warning: --compile off (compilation failed: RuntimeError: no C++ compiler); "
                                       "decoder blocks run eagerly\n")
    assert greedy(engine, prompt_ids(), 8).token_ids == greedy(Engine(tiny_llama()), prompt_ids(), 8).token_ids


def test_a_compiled_run_logs_what_ran_and_its_compile_seconds(tmp_path, tiny_model_dir):
    import json

    import benchmark
    assert benchmark.main(["--model", tiny_model_dir, "--num_samples", "2", "--max_steps", "8", "--compile", "on",
                           "--output_dir", str(tmp_path), "--perplexity", "False"]) == 0
    [run] = [json.load(open(p)) for p in tmp_path.glob("benchmark_*.json")]
    generation = run["generation"]
    assert generation["compile"].startswith("on (torch.compile of the decoder block")
    assert generation["compile_seconds"] > 0 and generation["exact"] == "off (auto: float32)"
