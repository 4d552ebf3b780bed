import pytest
import torch

from layerbench.decoding.sampling import SamplingConfig, StopCondition, TokenChooser
from layerbench.engine.engine import Engine, EngineOptions
from layerbench.surgery.layers import make_identity_layers
from tests.helpers import VOCAB, greedy, hf_greedy, prompt_ids, speculative, tiny_gpt2, tiny_llama

MODELS = {"llama": tiny_llama, "gpt2": tiny_gpt2}


@pytest.mark.parametrize("arch", MODELS)
def test_autoregressive_equals_hf_generate(arch):
    model = MODELS[arch]()
    prompt = prompt_ids()
    assert greedy(model, prompt, 40).token_ids == hf_greedy(model, prompt, 40)


@pytest.mark.parametrize("arch", MODELS)
@pytest.mark.parametrize("exit_layer", [1, 3, 5])
@pytest.mark.parametrize("d", [1, 3, 6])
def test_self_speculative_greedy_equals_autoregressive(arch, exit_layer, d):
    engine = Engine(MODELS[arch]())
    prompt = prompt_ids(exit_layer + d)
    ar = greedy(engine, prompt, 40)
    ss = speculative(engine, prompt, 40, exit_layer, d)
    assert ss.token_ids == ar.token_ids
    assert len(ss.token_ids) == 40
    assert 0 <= ss.num_accepted <= ss.num_drafted


def test_acceptance_is_total_when_upper_layers_are_identities():
    model = tiny_llama(num_layers=6)
    make_identity_layers(model, range(3, 6))
    ss = speculative(model, prompt_ids(), 40, exit_layer=3, num_speculations=4)
    assert ss.num_accepted == ss.num_drafted > 0


def test_no_repeat_ngram_matches_hf_and_speculation():
    model = tiny_llama()
    prompt = prompt_ids()
    ref = hf_greedy(model, prompt, 30, no_repeat_ngram_size=2)
    chooser = lambda: TokenChooser(SamplingConfig(no_repeat_ngram_size=2))  # noqa: E731
    engine = Engine(model)
    ar = greedy(engine, prompt, 30, chooser=chooser())
    ss = speculative(engine, prompt, 30, 2, 3, chooser=chooser())
    assert ar.token_ids == ref == ss.token_ids


def test_sampling_follows_the_processed_target_distribution():
    """Temperature, top-k and top-p (nucleus: the smallest most-likely set holding top_p of the mass) computed
    here independently; the chooser's distribution must equal it, its draws must follow it (total variation
    under 0.04 over 4000 draws, where sampling noise gives about 0.02), and a seed must repeat its draws."""
    logits = torch.randn(VOCAB, generator=torch.Generator().manual_seed(0)) * 3
    cfg = SamplingConfig(sample=True, temperature=0.8, top_k=20, top_p=0.9, seed=7)
    scaled = logits / 0.8
    kept = scaled.topk(20).indices
    p = torch.softmax(scaled[kept], dim=0)
    order = p.argsort(descending=True)
    before = p[order].cumsum(0) - p[order]
    nucleus = kept[order][before < 0.9]
    expected = torch.zeros(VOCAB)
    expected[nucleus] = torch.softmax(scaled[nucleus], dim=0)
    chooser = TokenChooser(cfg)
    torch.testing.assert_close(chooser.probs(prompt_ids(), logits), expected, atol=1e-6, rtol=0)
    draws = torch.tensor([chooser.pick(prompt_ids(), logits)[0] for _ in range(4000)])
    empirical = torch.bincount(draws, minlength=VOCAB).float() / len(draws)
    assert set(draws.tolist()) <= set(nucleus.tolist())
    assert 0.5 * (empirical - expected).abs().sum() < 0.04
    again = TokenChooser(cfg)
    assert [again.pick(prompt_ids(), logits)[0] for _ in range(50)] == draws[:50].tolist()


@pytest.mark.slow  # 400 sampled generations each way: 3.5 s
@pytest.mark.parametrize("draft_vocabulary", [None, [0, 3, 5]])
def test_speculative_sampling_preserves_target_distribution(draft_vocabulary):
    """Rejection sampling must reproduce the full model's distribution of a token that the verification pass
    decides, whatever the draft proposed (also when drafts only propose 3 of the 7 tokens): compare the second
    generated token (drafted and then accepted or replaced by verification) with autoregressive sampling, and
    check that rejections really happened."""
    from layerbench.models.addons import DraftHead, get_addons
    model = tiny_llama(num_layers=4, vocab=7)
    engine = Engine(model)
    if draft_vocabulary:
        get_addons(model, create=True).draft_head = DraftHead(model.lm_head, torch.tensor(draft_vocabulary))
        engine = Engine(model)
    prompt = torch.tensor([[1, 2, 3]])
    n = 400
    ar_counts, ss_counts = torch.zeros(7), torch.zeros(7)
    ar_ch = TokenChooser(SamplingConfig(sample=True, temperature=1.0, top_p=1.0, seed=1))
    ss_ch = TokenChooser(SamplingConfig(sample=True, temperature=1.0, top_p=1.0, seed=2))
    drafted = accepted = 0
    for _ in range(n):
        ar_counts[greedy(engine, prompt, 2, chooser=ar_ch).token_ids[1]] += 1
        out = speculative(engine, prompt, 2, exit_layer=1, num_speculations=1, chooser=ss_ch)
        ss_counts[out.token_ids[1]] += 1
        drafted += out.num_drafted
        accepted += out.num_accepted
    assert drafted == n  # every sample ran exactly one round with one draft
    assert 0.05 * n < drafted - accepted < 0.95 * n  # both acceptances and rejections occurred
    assert torch.allclose(ar_counts / n, ss_counts / n, atol=0.05)


@pytest.mark.parametrize("strategy", ["ar", "ss"])
def test_stop_token_ends_generation_identically(strategy):
    engine = Engine(tiny_llama())
    free = greedy(engine, prompt_ids(), 30).token_ids
    stop_tok = free[10]
    first = free.index(stop_tok)
    stop = StopCondition({stop_tok})
    if strategy == "ar":
        out = greedy(engine, prompt_ids(), 30, stop=stop)
    else:
        out = speculative(engine, prompt_ids(), 30, 2, 4, stop=stop)
    assert out.token_ids == free[: first + 1]
    assert out.stopped


def test_early_exit_runs_only_the_first_blocks():
    model = tiny_llama(num_layers=6)
    engine = Engine(model)
    calls = []
    engine.observers.append(lambda block, before, after, phase: calls.append(block.position))
    out = greedy(engine, prompt_ids(), 5, exit_layer=2)
    assert len(out.token_ids) == 5
    assert set(calls) == {0, 1} and len(calls) == 2 * 5  # prefill + 4 decode steps, two layers each


@pytest.mark.parametrize("arch", MODELS)
def test_linear_kernels_agree(arch):
    """The few-row product and torch's F.linear give the same greedy tokens and leave the model untouched."""
    model = MODELS[arch]()
    reference = {k: v.clone() for k, v in model.state_dict().items()}
    classes = [type(m) for m in model.modules()]
    plain = Engine(model, EngineOptions(linear_kernel="torch"))
    fast = Engine(model, EngineOptions(linear_kernel="few_row_mm"))
    tuned = Engine(model)
    assert (plain.linear_kernel, fast.linear_kernel, tuned.linear_kernel) == ("torch", "few_row_mm", "tuned")
    for seed in (1, 2, 3):
        prompt = prompt_ids(seed)
        a = greedy(plain, prompt, 30)
        b = greedy(fast, prompt, 30)
        c = speculative(fast, prompt, 30, 2, 3)
        assert a.token_ids == b.token_ids == c.token_ids == greedy(tuned, prompt, 30).token_ids
    assert all(torch.equal(v, reference[k]) for k, v in model.state_dict().items())
    assert [type(m) for m in model.modules()] == classes


def test_kv_cache_keeps_each_position_at_its_index():
    from layerbench.engine.kv_cache import KVCache
    cache = KVCache(num_layers=2, kv_heads=2, head_dim=4, capacity=8, dtype=torch.float32, device="cpu")
    k = torch.arange(2 * 3 * 4, dtype=torch.float32).view(1, 2, 3, 4)
    cache.write(0, torch.arange(3), k, k + 1)
    keys, values = cache.read(0, 0, 3)
    assert torch.equal(keys, k) and torch.equal(values, k + 1)
    cache.write(0, torch.tensor([1]), k[:, :, :1] * 0, k[:, :, :1] * 0)  # a later pass overwrites position 1 only
    keys, _ = cache.read(0, 0, 3)
    assert torch.equal(keys[:, :, 0], k[:, :, 0]) and not keys[:, :, 1].any() and torch.equal(keys[:, :, 2], k[:, :, 2])
    with pytest.raises(IndexError):
        cache.write(1, torch.arange(6, 9), k, k)


@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize("rows", [1, 2, 5, 16, 17, 40])
def test_few_row_product_computes_the_linear_map(rows, bias):
    from layerbench.engine.linear_kernels import KERNELS
    torch.manual_seed(rows)
    linear = torch.nn.Linear(24, 40, bias=bias)
    x = torch.randn(1, rows, 24)
    out = KERNELS["few_row_mm"](linear)(x)
    assert out.shape == (1, rows, 40) and out.is_contiguous()
    torch.testing.assert_close(out, linear(x), rtol=1e-5, atol=1e-5)


def test_tuned_kernel_takes_the_few_row_product_exactly_at_its_row_counts(monkeypatch):
    from layerbench.engine import linear_kernels
    calls = []
    real = linear_kernels.few_row_product
    monkeypatch.setattr(linear_kernels, "few_row_product", lambda *a: calls.append(a[0].shape[1]) or real(*a))
    linear = torch.nn.Linear(8, 8)
    project = linear_kernels._tuned(frozenset({3, 5}))(linear)
    for rows in (1, 2, 3, 4, 5, 17):
        x = torch.randn(1, rows, 8)
        torch.testing.assert_close(project(x), linear(x))
    assert calls == [3, 5]


def test_tuner_takes_the_few_row_product_only_where_it_is_clearly_faster(monkeypatch):
    """Kernels replaced by sleeps: F.linear 1 ms; the few-row product 2 ms below 8 rows, 0.95 ms (within the 10%
    margin) from 8 to 11 rows, 0.2 ms from 12 rows on."""
    import time
    from types import SimpleNamespace
    from layerbench.engine import linear_kernels

    def few_row(x, w, b):
        rows = x.shape[1]
        time.sleep(0.002 if rows < 8 else 0.00095 if rows < 12 else 0.0002)
    monkeypatch.setattr(linear_kernels, "few_row_product", few_row)
    monkeypatch.setattr(linear_kernels, "F", SimpleNamespace(linear=lambda x, w, b: time.sleep(0.001)))
    assert linear_kernels.tune_row_counts([torch.zeros(4, 4)], reps=2) == frozenset(range(12, 17))


def test_tuner_on_real_kernels_chooses_whole_bands_and_computes_what_torch_computes():
    """The real tuner, timing the real kernels on matrices of the embedded model's shapes: whatever it chooses
    (timing decides, so no particular set is asserted) is a set of row counts in 1..16 that follows the measured
    ones, and the tuned projection equals F.linear within fp32 rounding (rtol 1e-5, atol 1e-5) at every row count,
    both at the chosen counts and with the few-row product forced at all of them."""
    from layerbench.engine import linear_kernels
    torch.manual_seed(0)
    linear = torch.nn.Linear(576, 1536)
    weights = [linear.weight, torch.randn(576, 1536), torch.randn(192, 576)]
    chosen = linear_kernels.tune_row_counts(weights, reps=1)
    assert chosen <= frozenset(range(1, linear_kernels.MAX_ROWS + 1))
    measured = [1, 2, 3, 4, 6, 8, 12, 16]
    for n in range(1, linear_kernels.MAX_ROWS + 1):  # a row count follows the measured one at or below it
        assert (n in chosen) == (max(m for m in measured if m <= n) in chosen)
    for rows_chosen in (chosen, frozenset(range(1, linear_kernels.MAX_ROWS + 1))):
        project = linear_kernels._tuned(rows_chosen)(linear)
        for rows in range(1, 19):
            x = torch.randn(1, rows, 576)
            torch.testing.assert_close(project(x), torch.nn.functional.linear(x, linear.weight, linear.bias),
                                       rtol=1e-5, atol=1e-5)


class _LetterTokenizer:
    """Token i decodes to the i-th lowercase letter (mod 26): enough to exercise stop words."""

    def decode(self, ids, skip_special_tokens=True):
        return "".join(chr(ord("a") + i % 26) for i in ids)


def test_stop_words_end_both_strategies_at_the_same_token():
    engine = Engine(tiny_llama())
    tok = _LetterTokenizer()
    free = greedy(engine, prompt_ids(), 30).token_ids
    text = tok.decode(free)
    word = text[12:14]
    first = text.find(word)
    stop = StopCondition(set(), [word], tok)
    ar = greedy(engine, prompt_ids(), 30, stop=stop)
    ss = speculative(engine, prompt_ids(), 30, 2, 4, stop=stop)
    assert ar.token_ids == ss.token_ids == free[: first + len(word)]
    assert ar.stopped and stop.cut_text(tok.decode(ar.token_ids)) == text[:first]


def test_self_speculative_stops_drafting_once_an_accepted_draft_is_a_stop_token():
    """An EOS accepted in the middle of a round must end generation; rounds after it would be wasted, timed work."""
    model = tiny_llama(num_layers=6)
    make_identity_layers(model, range(3, 6))  # every draft is accepted
    engine = Engine(model)
    free = greedy(engine, prompt_ids(), 30).token_ids
    stop_tok = free[4]  # drafted as the 4th token of the first round; the round's bonus token comes after it
    first = free.index(stop_tok)
    assert first == 4 and free[5] != stop_tok
    out = speculative(engine, prompt_ids(), 30, 3, 4, stop=StopCondition({stop_tok}))
    assert out.token_ids == free[: first + 1] and out.stopped
    assert out.num_drafted <= first + 4  # one round past the first token at most


def test_draft_confidence_shortens_drafts_and_keeps_greedy_output():
    engine = Engine(tiny_llama(num_layers=6))
    prompt = prompt_ids()
    full = speculative(engine, prompt, 40, 3, 4)
    short = speculative(engine, prompt, 40, 3, 4, draft_confidence=0.99)
    assert short.token_ids == full.token_ids == greedy(engine, prompt, 40).token_ids
    assert full.num_drafted / full.num_rounds > short.num_drafted / short.num_rounds >= 1


def test_stop_words_decode_only_a_bounded_tail():
    """Checking a new token decodes at most len(longest stop word) + margin tokens, never the whole prefix, and
    still finds a word that arrives late in a long generation."""
    from layerbench.decoding.sampling import STOP_WORD_MARGIN

    class Counting(_LetterTokenizer):
        longest = 0

        def decode(self, ids, skip_special_tokens=True):
            Counting.longest = max(Counting.longest, len(ids))
            return super().decode(ids, skip_special_tokens)

    tokens = [0, 1] * 200 + [25, 24, 23]  # "abab...ab" then "zyx"
    stop = StopCondition(set(), ["zyx", "q"], Counting())
    assert stop.first_stop(tokens) == len(tokens) - 1
    assert Counting.longest == len("zyx") + STOP_WORD_MARGIN
    assert StopCondition(set(), ["zyx"], Counting()).first_stop(tokens[:-1]) is None
