"""Checks on the real embedded SmolLM2-135M-Instruct and real aclsum prompts."""
import copy
import os
import subprocess
import sys

import pytest
import torch

from layerbench.decoding.sampling import StopCondition
from layerbench.engine.engine import Engine, EngineOptions
from layerbench.evaluation import datasets
from pruned_model import Calibration, PruneConfig, PruneModel
from tests.conftest import ROOT
from tests.helpers import greedy, speculative

pytestmark = pytest.mark.slow


def _aclsum_prompts(tokenizer, n):
    _, samples = datasets.load_split("aclsum_summarization", "test", datasets.DatasetOptions())
    chosen = datasets.select_samples(samples, n, seed=42, shuffle=True)
    tmpl = datasets.DATASETS["aclsum_summarization"].template
    return [datasets.build_prompt(tokenizer, tmpl.format(input=s.input), True) for s in chosen]


def _calibration(tokenizer, n=8):
    _, train = datasets.load_split("aclsum_summarization", "train", datasets.DatasetOptions())
    ids = [tokenizer(s.input)["input_ids"][:128] for s in train[:n]]
    return lambda: Calibration(ids, {"dataset": "aclsum_summarization", "split": "train"})


def test_embedded_model_is_a_30_layer_llama(embedded):
    assert embedded.model.config.model_type == "llama"
    assert len(embedded.model.model.layers) == 30
    assert embedded.model.dtype == torch.float32
    assert not hasattr(embedded.model.config, "quantization_config")


def test_engine_matches_hf_generate_with_either_kernel(embedded):
    """HF generate (the oracle), our engine with torch's F.linear and our tuned engine produce the same greedy
    tokens on real prompts, stopping at the same EOS."""
    model, tok = embedded.model, embedded.tokenizer
    plain = Engine(model, EngineOptions(linear_kernel="torch"))
    tuned = Engine(model)
    stop = StopCondition({tok.eos_token_id})
    for prompt_ids in _aclsum_prompts(tok, 3):
        prompt = torch.tensor([prompt_ids])
        ref = model.generate(prompt, max_new_tokens=24, do_sample=False, pad_token_id=tok.eos_token_id,
                             eos_token_id=tok.eos_token_id)[0, prompt.shape[1]:].tolist()
        ours = greedy(plain, prompt, 24, stop=stop)
        assert ours.token_ids == ref and len(ref) >= 8  # a real summary starts, not an immediate EOS
        assert greedy(tuned, prompt, 24, stop=stop).token_ids == ref


def test_greedy_self_speculative_equals_autoregressive_on_embedded_model(embedded):
    engine = Engine(embedded.model)
    stop = StopCondition({embedded.tokenizer.eos_token_id})
    total_drafted = 0
    for prompt_ids in _aclsum_prompts(embedded.tokenizer, 5):
        prompt = torch.tensor([prompt_ids])
        ar = greedy(engine, prompt, 24, stop=stop)
        ss = speculative(engine, prompt, 24, 20, 4, stop=stop)
        assert ss.token_ids == ar.token_ids
        total_drafted += ss.num_drafted
    assert total_drafted > 0


def test_greedy_self_speculative_equals_autoregressive_after_angular_pruning(embedded):
    model = copy.deepcopy(embedded.model)
    pm = PruneModel(model, embedded.tokenizer, PruneConfig(method="angular", prune_n=6),
                    _calibration(embedded.tokenizer))
    report = pm.apply()
    assert len(model.model.layers) == 24 and len(report["removed_layers"]) == 6
    engine = Engine(model)
    exit_layer = pm.map_exit_layer(20)
    stop = StopCondition({embedded.tokenizer.eos_token_id})
    for prompt_ids in _aclsum_prompts(embedded.tokenizer, 2):
        prompt = torch.tensor([prompt_ids])
        ar = greedy(engine, prompt, 16, stop=stop)
        ss = speculative(engine, prompt, 16, exit_layer, 4, stop=stop)
        assert ss.token_ids == ar.token_ids


def test_bytes_fall_with_parameters_after_angular_and_lowrank(embedded):
    for config in (PruneConfig(method="angular", prune_n=6, keep_originals=False),
                   PruneConfig(method="lowrank", compression_ratio=0.5, keep_originals=False)):
        pm = PruneModel(copy.deepcopy(embedded.model), embedded.tokenizer, config, _calibration(embedded.tokenizer))
        report = pm.apply()
        removed_params = report["num_parameters_before"] - report["num_parameters_after"]
        assert removed_params > 0
        assert report["num_bytes_before"] - report["num_bytes_after"] == 4 * removed_params  # fp32


def test_converted_embedded_model_reloads_from_the_cache_identically(embedded, tmp_path):
    """A run after the first loads the cached safetensors conversion, never the GGUF (the converter is made to
    fail in that process), and gets the same weights."""
    code = ("import torch; from layerbench.models import loading; "
            "loading._convert_embedded = lambda *a: (_ for _ in ()).throw(AssertionError('converted again')); "
            "m = loading.load_model(None, 'float32', 'cpu'); print(m.loaded_from); "
            f"torch.save({{k: v for k, v in m.model.state_dict().items()}}, {str(tmp_path / 'sd.pt')!r})")
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300,
                          env={**os.environ})
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.split()[-1] == "cache", proc.stdout
    reloaded = torch.load(tmp_path / "sd.pt")
    for k, v in embedded.model.state_dict().items():
        assert torch.equal(v, reloaded[k]), k


def test_cache_holds_exactly_what_the_gguf_converter_gives(embedded):
    import contextlib
    import io

    from transformers import AutoModelForCausalLM, AutoTokenizer

    from layerbench.models.loading import EMBEDDED_FILE, embedded_model_dir
    with contextlib.redirect_stderr(io.StringIO()):
        direct = AutoModelForCausalLM.from_pretrained(embedded_model_dir(), gguf_file=EMBEDDED_FILE,
                                                      dtype=torch.float32)
        tok = AutoTokenizer.from_pretrained(embedded_model_dir(), gguf_file=EMBEDDED_FILE)
    cached = embedded.model.state_dict()
    assert set(direct.state_dict()) == set(cached)
    assert all(torch.equal(v, cached[k]) for k, v in direct.state_dict().items())
    text = "Summarize: the cat sat on the mat. Ünïcode, digits 12345 and\ttabs."
    assert embedded.tokenizer(text)["input_ids"] == tok(text)["input_ids"]
    chat = [{"role": "user", "content": text}]
    assert (embedded.tokenizer.apply_chat_template(chat, add_generation_prompt=True, tokenize=False)
            == tok.apply_chat_template(chat, add_generation_prompt=True, tokenize=False))


@pytest.mark.slow
def test_device_map_auto_gives_the_same_predictions_as_no_map(tmp_path):
    """`--device_map auto` on the embedded model (one device here: the planner puts everything on the CPU) runs
    through the placement-aware engine and must predict exactly what a run without a map predicts."""
    import glob
    import json

    import benchmark
    predictions = {}
    for name, extra in (("plain", []), ("auto", ["--device_map", "auto"])):
        out = tmp_path / name
        assert benchmark.main(["--num_samples", "2", "--max_steps", "24", "--perplexity", "False",
                               "--output_dir", str(out), *extra]) == 0
        [path] = glob.glob(str(out / "benchmark_*.json"))
        doc = json.load(open(path))
        with open(out / doc["samples_file"]) as f:
            predictions[name] = [json.loads(line)["prediction"] for line in f]
        if name == "auto":
            assert doc["model"]["device_map"] and doc["model"]["placement"]["devices"] == ["cpu"]
    assert predictions["auto"] == predictions["plain"]
