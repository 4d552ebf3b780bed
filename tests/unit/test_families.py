"""Our own forward against Hugging Face's, for every supported family: a tiny random model of each (built here)
must give the same logits as HF's forward (fp32, atol 1e-4 on logits of magnitude ~1-10) and the same 64 greedy
tokens as HF generate, including prompts longer than the sliding window where the family has one."""
import pytest
import torch
import transformers

from layerbench.engine.engine import PREFILL, Engine
from layerbench.errors import UsageError
from layerbench.models.families import FAMILIES, get_family
from tests.helpers import greedy, hf_greedy, prompt_ids

VOCAB = 97
COMMON = dict(vocab_size=VOCAB, hidden_size=64, intermediate_size=96, num_hidden_layers=4, num_attention_heads=4,
              num_key_value_heads=2, max_position_embeddings=256, initializer_range=0.1, pad_token_id=0,
              bos_token_id=None, eos_token_id=None)  # no EOS: HF min_new_tokens would mask it

GPT2 = dict(vocab_size=VOCAB, n_embd=64, n_layer=4, n_head=4, n_positions=256, initializer_range=0.1,
            bos_token_id=None, eos_token_id=None)

CONFIGS = {
    "llama": lambda: transformers.LlamaConfig(**COMMON),
    "llama_rope_llama3": lambda: transformers.LlamaConfig(**COMMON, rope_scaling={
        "rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
        "original_max_position_embeddings": 64}),
    "llama_rope_linear": lambda: transformers.LlamaConfig(**COMMON, rope_scaling={"rope_type": "linear", "factor": 2.0}),
    "qwen2_rope_yarn": lambda: transformers.Qwen2Config(**COMMON, rope_scaling={
        "rope_type": "yarn", "factor": 2.0, "original_max_position_embeddings": 64}),  # not 256/64: the factor is read
    "mistral_window": lambda: transformers.MistralConfig(**COMMON, sliding_window=8),
    "qwen2": lambda: transformers.Qwen2Config(**COMMON),
    "qwen3": lambda: transformers.Qwen3Config(**COMMON, head_dim=24),
    "phi3": lambda: transformers.Phi3Config(**COMMON),
    "phi3_partial_rotary": lambda: transformers.Phi3Config(**COMMON, partial_rotary_factor=0.5),
    "gemma2_window_softcap": lambda: transformers.Gemma2Config(
        **{**COMMON, "num_hidden_layers": 5}, head_dim=16, sliding_window=8, query_pre_attn_scalar=24,
        attn_logit_softcapping=20.0, final_logit_softcapping=15.0, attn_implementation="eager"),
    "gpt2": lambda: transformers.GPT2Config(**GPT2),
    "gpt2_unscaled_attention": lambda: transformers.GPT2Config(**GPT2, scale_attn_weights=False),
    "gpt2_inverse_layer_scale": lambda: transformers.GPT2Config(**GPT2, scale_attn_by_inverse_layer_idx=True),
    # float32 scores: what transformers does only in eager attention, and what a float32 model does anyway
    "gpt2_upcast_attention": lambda: transformers.GPT2Config(**GPT2, reorder_and_upcast_attn=True,
                                                             scale_attn_by_inverse_layer_idx=True,
                                                             attn_implementation="eager"),
}
# features of one family that change HF's own output when switched off: (config, field, value when off)
SWITCHED = [("gpt2_unscaled_attention", "scale_attn_weights", True),
            ("gpt2_inverse_layer_scale", "scale_attn_by_inverse_layer_idx", False)]


def build(name: str, **changes):
    config = CONFIGS[name]()
    for field, value in changes.items():
        setattr(config, field, value)
    torch.manual_seed(0)
    return transformers.AutoModelForCausalLM.from_config(config).eval()


def test_every_family_is_covered():
    assert {CONFIGS[name]().model_type for name in CONFIGS} == set(FAMILIES)


@pytest.mark.parametrize("name", CONFIGS)
def test_logits_match_hf_forward(name):
    model = build(name)
    engine = Engine(model)
    prompt = prompt_ids(3, 40, VOCAB)  # longer than every sliding window here
    with torch.no_grad():
        expected = model(prompt).logits
        hidden = engine.run(engine.new_cache(40), 0, 0, engine.num_blocks, input_ids=prompt, phase=PREFILL)
        ours = engine.logits(hidden)
    assert expected.abs().max() > 1  # not a degenerate model
    torch.testing.assert_close(ours, expected, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("name", CONFIGS)
def test_64_greedy_tokens_match_hf_generate(name):
    model = build(name)
    engine = Engine(model)
    for seed, length in ((1, 5), (2, 30)):  # a short prompt, and one longer than the sliding windows
        prompt = prompt_ids(seed, length, VOCAB)
        assert greedy(engine, prompt, 64).token_ids == hf_greedy(model, prompt, 64), (seed, length)


def test_sliding_window_changes_the_output():
    """The window is really applied: the same weights without it predict differently on a long prompt."""
    model = build("mistral_window")
    prompt = prompt_ids(2, 30, VOCAB)
    windowed = greedy(Engine(model), prompt, 16).token_ids
    model.config.sliding_window = None
    assert greedy(Engine(model), prompt, 16).token_ids != windowed


def test_unsupported_model_type_is_a_usage_error():
    model = build("llama")
    model.config.model_type = "mamba"
    with pytest.raises(UsageError, match="model type 'mamba' is not supported"):
        get_family(model)


def test_unsupported_rope_type_is_a_usage_error():
    model = build("llama")
    model.config.rope_parameters = {"rope_type": "dynamic", "factor": 2.0, "rope_theta": 10000.0}
    with pytest.raises(UsageError, match="rope type 'dynamic' is not supported"):
        Engine(model)


@pytest.mark.parametrize("name, field, off", SWITCHED)
def test_each_gpt2_attention_scale_changes_hf_output_and_ours_follows(name, field, off):
    """The parity tests above cover these configs only if the feature matters: with the same weights and the
    feature switched off, HF's own logits move far beyond the parity tolerance, and so do ours."""
    prompt = prompt_ids(3, 20, VOCAB)
    on_model, off_model = build(name), build(name, **{field: off})
    with torch.no_grad():
        on, off_logits = on_model(prompt).logits, off_model(prompt).logits
        engine = Engine(off_model)
        ours_off = engine.logits(engine.run(engine.new_cache(20), 0, 0, engine.num_blocks, input_ids=prompt,
                                            phase=PREFILL))
    assert (on - off_logits).abs().max() > 0.05
    torch.testing.assert_close(ours_off, off_logits, atol=1e-4, rtol=1e-4)


def test_gpt2_inverse_layer_scale_keeps_the_original_index_after_pruning():
    """A layer's scale divides by its ORIGINAL index + 1: dropping layer 0 leaves the others' scales alone."""
    model = build("gpt2_inverse_layer_scale")
    family = get_family(model)
    scales = [family.attn_scale(model.config, 16, layer) for layer in family.layers(model)]
    assert scales == pytest.approx([0.25 / (i + 1) for i in range(4)])
    del family.layers(model)[0]
    assert [family.attn_scale(model.config, 16, layer) for layer in family.layers(model)] == pytest.approx(scales[1:])


def test_gpt2_upcast_attention_outside_float32_is_refused():
    model = build("gpt2_upcast_attention").to(torch.bfloat16)
    with pytest.raises(UsageError, match="reorder_and_upcast_attn=True in bfloat16: .*--dtype float32"):
        Engine(model)


@pytest.mark.parametrize("name", ["llama", "mistral_window", "gemma2_window_softcap", "gpt2"])
def test_padded_batch_scoring_equals_one_sequence_at_a_time(name):
    """lm-eval requests of different lengths scored in one right-padded pass (windows, soft-capping and learned
    positions included) give the log-likelihoods of scoring each alone, and HF's."""
    from layerbench.harness.scoring import Scorer
    model = build(name)
    scorer = Scorer(Engine(model))
    requests = [(prompt_ids(4, 1, VOCAB)[0].tolist(), prompt_ids(5, 30, VOCAB)[0].tolist()),
                (prompt_ids(6, 12, VOCAB)[0].tolist(), prompt_ids(7, 3, VOCAB)[0].tolist()),
                (prompt_ids(8, 2, VOCAB)[0].tolist(), prompt_ids(9, 1, VOCAB)[0].tolist())]
    batched = scorer.score_lone(requests)
    alone = [scorer.score_lone([request])[0] for request in requests]
    with torch.no_grad():
        expected = []
        for context, continuation in requests:
            logits = model(torch.tensor([context + continuation])).logits[0, len(context) - 1:-1]
            target = torch.tensor(continuation)
            expected.append(float(torch.log_softmax(logits, -1).gather(1, target[:, None]).sum()))
    assert [b[0] for b in batched] == pytest.approx([a[0] for a in alone], abs=1e-4)
    assert [b[1] for b in batched] == [a[1] for a in alone]
    assert [b[0] for b in batched] == pytest.approx(expected, abs=1e-3)
