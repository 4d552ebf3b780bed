"""Checks on the real embedded SmolLM2-135M-Instruct and real aclsum prompts."""
import torch

import data
from decoding import Decoder, autoregressive, self_speculative
from sampling import SamplingConfig, StopCondition, TokenChooser


def _aclsum_prompts(tokenizer, n):
    _, samples = data.load_split("aclsum_summarization", "test", data.DatasetOptions())
    chosen = data.select_samples(samples, n, seed=42, shuffle=True)
    tmpl = data.DATASETS["aclsum_summarization"].template
    return [data.build_prompt(tokenizer, tmpl.format(input=s.input), True) for s in chosen]


def test_embedded_model_is_a_30_layer_llama(embedded):
    assert embedded.model.config.model_type == "llama"
    assert len(embedded.model.model.layers) == 30
    assert embedded.model.dtype == torch.float32
    assert not hasattr(embedded.model.config, "quantization_config")


def test_greedy_self_speculative_equals_autoregressive_on_embedded_model(embedded):
    dec = Decoder(embedded.model)
    stop = StopCondition({embedded.tokenizer.eos_token_id})
    total_drafted = 0
    for prompt_ids in _aclsum_prompts(embedded.tokenizer, 5):
        prompt = torch.tensor([prompt_ids])
        ar = autoregressive(dec, prompt, 24, TokenChooser(SamplingConfig()), stop)
        ss = self_speculative(dec, prompt, 24, TokenChooser(SamplingConfig()), stop, exit_layer=20,
                              num_speculations=4)
        assert ss.token_ids == ar.token_ids
        assert len(ar.token_ids) > 0
        total_drafted += ss.num_drafted
    assert total_drafted > 0


def test_engine_matches_hf_generate_and_unoptimized_engine_on_embedded_model(embedded):
    """HF generate, our engine with torch's linear kernels, and our engine with the few-row kernel agree."""
    import copy

    from fast_linear import restore_linears
    model = copy.deepcopy(embedded.model)
    restore_linears(model)  # other tests may already have switched the shared model's linears
    plain = Decoder(model, optimize=False)
    for prompt_ids in _aclsum_prompts(embedded.tokenizer, 3):
        prompt = torch.tensor([prompt_ids])
        ref = model.generate(prompt, max_new_tokens=16, min_new_tokens=16, do_sample=False,
                             pad_token_id=embedded.tokenizer.eos_token_id)[0, prompt.shape[1]:].tolist()
        ours = autoregressive(plain, prompt, 16, TokenChooser(SamplingConfig()), StopCondition())
        assert ours.token_ids == ref
    fast = Decoder(copy.deepcopy(model))
    assert plain.linear_kernel == "torch" and fast.linear_kernel == "few_row_mm"
    for prompt_ids in _aclsum_prompts(embedded.tokenizer, 3):
        prompt = torch.tensor([prompt_ids])
        a = autoregressive(plain, prompt, 16, TokenChooser(SamplingConfig()), StopCondition())
        b = autoregressive(fast, prompt, 16, TokenChooser(SamplingConfig()), StopCondition())
        assert a.token_ids == b.token_ids


def test_greedy_self_speculative_equals_autoregressive_after_angular_pruning(embedded):
    import copy

    from pruned_model import Calibration, PruneConfig, PruneModel
    model = copy.deepcopy(embedded.model)
    _, train = data.load_split("aclsum_summarization", "train", data.DatasetOptions())
    calib = [embedded.tokenizer(s.input)["input_ids"][:128] for s in train[:8]]
    pm = PruneModel(model, embedded.tokenizer, PruneConfig("angular", prune_n=6),
                    lambda: Calibration(calib, {"dataset": "aclsum_summarization", "split": "train"}))
    report = pm.apply()
    assert len(model.model.layers) == 24 and len(report["removed_layers"]) == 6
    dec = Decoder(model)
    exit_layer = pm.map_exit_layer(20)
    stop = StopCondition({embedded.tokenizer.eos_token_id})
    for prompt_ids in _aclsum_prompts(embedded.tokenizer, 2):
        prompt = torch.tensor([prompt_ids])
        ar = autoregressive(dec, prompt, 16, TokenChooser(SamplingConfig()), stop)
        ss = self_speculative(dec, prompt, 16, TokenChooser(SamplingConfig()), stop, exit_layer=exit_layer,
                              num_speculations=4)
        assert ss.token_ids == ar.token_ids
