"""Exact mode (engine.exact): every decode, draft and verification step computes each row as it would alone, so
in bfloat16 every decoding path gives autoregressive decoding's tokens bit for bit; and without it they can
differ (so these tests can fail)."""
import pytest
import torch
import torch.nn.functional as F

from layerbench.decoding import STRATEGIES, GenerationConfig
from layerbench.decoding.layer_skip_speculative import LayerSkipSettings
from layerbench.decoding.sampling import SamplingConfig, StopCondition, TokenChooser
from layerbench.engine import exact
from layerbench.engine.attention import attend, visible
from layerbench.engine.engine import Engine, EngineOptions
from layerbench.engine.linear_kernels import few_row_product
from layerbench.engine.norms import _rms
from layerbench.engine.static_steps import install_static_steps
from tests.helpers import greedy, prompt_ids, speculative, tiny_gpt2, tiny_llama
from tests.unit.test_families import VOCAB, build

FAMILIES = {"llama": lambda: tiny_llama(num_layers=6, vocab=VOCAB), "mistral_window": lambda: build("mistral_window"),
            "gemma2_window_softcap": lambda: build("gemma2_window_softcap"), "gpt2": lambda: tiny_gpt2(vocab=VOCAB)}
PROMPTS = [(seed, length) for seed, length in ((1, 9), (2, 23), (3, 14), (4, 31))]
MAX_STEPS = 40


def bf16_engine(name: str, rows: int) -> Engine:
    return Engine(FAMILIES[name]().to(torch.bfloat16), EngineOptions(exact_rows=rows))


def layer_skip(engine: Engine, prompt: torch.Tensor, skipped: list[int], d: int) -> list[int]:
    """Layer-skip speculation whose draft skips `skipped` blocks (settings as configure() builds them)."""
    first = skipped[0]
    segments = [(b, b + 1) for b in range(first, engine.num_blocks) if b not in skipped]
    settings = LayerSkipSettings(skipped_layers=skipped, skipped_blocks=skipped, shared_blocks=first,
                                 draft_segments=segments, chosen_by="test")
    config = GenerationConfig(max_steps=MAX_STEPS, exit_block=first, num_speculations=d, settings=settings)
    return STRATEGIES["layer_skip_speculative"].generate(engine, prompt, config, TokenChooser(SamplingConfig()),
                                                         StopCondition()).token_ids


def other_paths(name: str, rows: int, prompt: torch.Tensor) -> dict[str, list[int]]:
    """Greedy tokens of every path that must equal autoregressive decoding: self-speculative at several (E, d),
    one of them with d + 1 > R (verification in two tiles), layer-skip speculation, fixed-shape steps."""
    engine = bf16_engine(name, rows)
    out = {f"ss E={e} d={d}": speculative(engine, prompt, MAX_STEPS, e, d).token_ids
           for e, d in ((1, 1), (2, 3), (3, 9))}
    out["layer skip"] = layer_skip(engine, prompt, [2, 3], 4)
    static = bf16_engine(name, rows)
    shapes = STRATEGIES["self_speculative"].static_shapes(static, GenerationConfig(MAX_STEPS, 2, 3))
    capacity = STRATEGIES["autoregressive"].capacity(prompt.shape[1], GenerationConfig(MAX_STEPS))
    install_static_steps(static, capacity, shapes, "eager")
    out["static ss E=2 d=3"] = speculative(static, prompt, MAX_STEPS, 2, 3).token_ids
    install_static_steps(static, capacity, [(0, static.num_blocks, 1, True)], "eager")
    out["static ar"] = greedy(static, prompt, MAX_STEPS).token_ids
    return out


def test_every_strategy_sizes_the_same_cache():
    """Masked attention over a longer cache reduces in another order, so the strategies of one run must read one
    key span: the cache a generation needs cannot depend on the strategy or its number of speculations."""
    sizes = {STRATEGIES[name].capacity(37, GenerationConfig(MAX_STEPS, exit_block=2, num_speculations=d))
             for name in STRATEGIES for d in (-1, 1, 6, 20)}
    assert sizes == {37 + MAX_STEPS + 2}


def test_self_speculation_in_bfloat16_gives_autoregressive_tokens_only_with_exact_mode():
    """The fast tier's version of the two tests below: one prompt where bfloat16 rounding parts them."""
    prompt = prompt_ids(3, 14, VOCAB)
    tokens = {}
    for rows in (0, exact.ROWS):
        engine = bf16_engine("llama", rows)
        tokens[rows] = greedy(engine, prompt, MAX_STEPS).token_ids, speculative(engine, prompt, MAX_STEPS, 2, 3).token_ids
    assert tokens[exact.ROWS][0] == tokens[exact.ROWS][1]
    assert tokens[0][0] != tokens[0][1]


@pytest.mark.slow
@pytest.mark.parametrize("name", list(FAMILIES))
def test_every_path_gives_autoregressive_tokens_in_bfloat16_with_exact_mode(name):
    for seed, length in PROMPTS:
        prompt = prompt_ids(seed, length, VOCAB)
        reference = greedy(bf16_engine(name, exact.ROWS), prompt, MAX_STEPS).token_ids
        for path, tokens in other_paths(name, exact.ROWS, prompt).items():
            assert tokens == reference, f"{name}, prompt {seed}: {path}"


@pytest.mark.slow
def test_without_exact_mode_bfloat16_paths_can_differ():
    """The same comparisons with exact mode off: some path parts from autoregressive decoding (the property the
    test above checks is not one every run has anyway)."""
    differing = []
    for name in FAMILIES:
        for seed, length in PROMPTS:
            prompt = prompt_ids(seed, length, VOCAB)
            reference = greedy(bf16_engine(name, 0), prompt, MAX_STEPS).token_ids
            differing += [(name, seed, path) for path, tokens in other_paths(name, 0, prompt).items()
                          if tokens != reference]
    assert differing


@pytest.mark.slow
def test_device_map_in_bfloat16_gives_the_same_tokens(tmp_path, monkeypatch):
    from layerbench.models import loading
    tiny_llama(vocab=VOCAB).save_pretrained(tmp_path)
    monkeypatch.setattr(loading.AutoTokenizer, "from_pretrained", lambda *a, **k: None)
    mapped = loading.load_model(str(tmp_path), dtype="bfloat16", device="cpu", device_map="auto").model
    plain = loading.load_model(str(tmp_path), dtype="bfloat16", device="cpu").model
    for seed, length in PROMPTS[:2]:
        prompt = prompt_ids(seed, length, VOCAB)
        reference = greedy(Engine(plain, EngineOptions(exact_rows=exact.ROWS)), prompt, MAX_STEPS).token_ids
        engine = Engine(mapped, EngineOptions(exact_rows=exact.ROWS))
        assert speculative(engine, prompt, MAX_STEPS, 3, 4).token_ids == reference


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_graphs_in_bfloat16_give_autoregressive_tokens_with_exact_mode():
    model = tiny_llama(num_layers=6, vocab=VOCAB).to(torch.bfloat16).cuda()
    config = GenerationConfig(MAX_STEPS, 3, 4)
    graphed = Engine(model, EngineOptions(exact_rows=exact.ROWS))
    install_static_steps(graphed, 128, STRATEGIES["self_speculative"].static_shapes(graphed, config), "cuda")
    reference = Engine(model, EngineOptions(exact_rows=exact.ROWS))
    for seed, length in PROMPTS:
        prompt = prompt_ids(seed, length, VOCAB).cuda()
        assert speculative(graphed, prompt, MAX_STEPS, 3, 4).token_ids == greedy(reference, prompt, MAX_STEPS).token_ids


def test_padding_rows_are_not_counted_and_tiles_split_long_steps():
    from pruned_model import PruneConfig, PruneModel
    counts = {}
    for rows in (0, 4):
        model = tiny_llama()
        pm = PruneModel(model, None, PruneConfig(method="base"))
        engine = pm.attach(Engine(model, EngineOptions(exact_rows=rows)))
        pm.start_counting()
        speculative(engine, prompt_ids(), 20, 3, 6)  # verification of up to 7 rows: two tiles of 4
        counts[rows] = pm.layer_call_counts(), pm.counter.token_snapshot()
    assert counts[4][1] == counts[0][1]  # the same token positions computed, padding left out


def test_tiles():
    assert exact.tile_spans(1, 8) == [(0, 1)]
    assert exact.tile_spans(9, 4) == [(0, 4), (4, 8), (8, 9)]
    x = torch.arange(6.0).view(1, 3, 2)
    padded = exact.pad_rows(x, 5)
    assert padded.shape == (1, 5, 2) and torch.equal(padded[:, :3], x) and not padded[:, 3:].any()
    calls = []
    out = exact.tiled(lambda t: calls.append(t.shape) or t * 2, torch.arange(10.0).view(1, 5, 2), 2)
    assert calls == [(1, 2, 2)] * 3 and torch.equal(out, torch.arange(10.0).view(1, 5, 2) * 2)


def rows_alone_and_in_tiles(kernel, x: torch.Tensor, rows: int) -> int:
    """How many rows of x differ (bitwise) between computing the row in a tile at every offset with other rows
    beside it and computing it alone (row 0 of a tile of zeros)."""
    alone = [kernel(exact.pad_rows(x[:, r:r + 1], rows))[:, 0] for r in range(x.shape[1])]
    differ = 0
    for shift in range(rows):
        shifted = torch.roll(x, shift, dims=1)[:, :rows]
        out = kernel(shifted)
        differ += sum(not torch.equal(out[:, i], alone[(i - shift) % x.shape[1]]) for i in range(rows))
    return differ


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_every_kernel_computes_a_row_of_a_tile_as_it_would_alone(dtype):
    torch.manual_seed(0)
    rows, d = exact.ROWS, 576
    x = torch.randn(1, 12, d).to(dtype)
    weight = torch.randn(1536, d).to(dtype)
    keys, values = torch.randn(1, 3, 64, 64).to(dtype), torch.randn(1, 3, 64, 64).to(dtype)
    q = torch.randn(1, 12, 9 * 64).to(dtype)

    def attention(qs: torch.Tensor) -> torch.Tensor:
        heads = qs.view(1, rows, 9, 64).transpose(1, 2)
        mask = visible(torch.full((rows,), 39), torch.arange(64), None)  # every row sees keys 0..39
        return attend(heads, keys, values, 0.125, mask).transpose(1, 2).reshape(1, rows, -1)
    kernels = {"F.linear": lambda t: F.linear(t, weight), "few_row_mm": lambda t: few_row_product(t, weight, None),
               "rms": lambda t: _rms(t, 1e-5), "silu*up": lambda t: F.silu(t) * t}
    for name, kernel in kernels.items():
        assert rows_alone_and_in_tiles(kernel, x, rows) == 0, name
    # attention: every query sees the same keys here, so a row's result may not depend on its offset either
    assert rows_alone_and_in_tiles(attention, q, rows) == 0


@pytest.mark.parametrize("rows", [0, exact.ROWS])
def test_a_real_position_past_learned_positions_is_refused_while_padding_rows_may_lie_there(rows):
    model = tiny_gpt2(vocab=VOCAB)
    model.config.n_positions = 32
    model.transformer.wpe = type(model.transformer.wpe)(32, model.config.n_embd)
    engine = Engine(model, EngineOptions(exact_rows=rows))
    assert len(greedy(engine, prompt_ids(1, 20, VOCAB), 12).token_ids) == 12  # last tile pads past position 31
    with pytest.raises(IndexError, match="position 32 is past the model's 32 learned positions"):
        greedy(engine, prompt_ids(1, 20, VOCAB), 14)
