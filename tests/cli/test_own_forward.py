"""The benchmark never calls Hugging Face's decoder layers, attention, MLP, norms, rotary module or cache: with
every one of them made to raise, each strategy and each surgery still runs and gives the same predictions."""
import glob
import json

import pytest
from transformers import cache_utils
from transformers.models.llama import modeling_llama

import benchmark

SPIED = [(modeling_llama.LlamaDecoderLayer, "forward"), (modeling_llama.LlamaAttention, "forward"),
         (modeling_llama.LlamaMLP, "forward"), (modeling_llama.LlamaRMSNorm, "forward"),
         (modeling_llama.LlamaRotaryEmbedding, "forward"), (cache_utils.DynamicCache, "__init__")]

RUNS = {
    "autoregressive": [],
    "early_exit": ["--exit_layer", "3"],
    "self_speculative": ["--generation_strategy", "self_speculative", "--exit_layer", "3", "--num_speculations", "2"],
    "angular_stand_in": ["--prune_method", "angular", "--prune_n", "2", "--stand_in", "linear",
                         "--calibration_samples", "4"],
    "lowrank_asvd": ["--prune_method", "lowrank", "--compression_ratio", "0.5", "--lowrank_method", "asvd",
                     "--calibration_samples", "4"],
    "gated": ["--prune_method", "gated", "--available_compute", "0.6"],
    "exit_adapter": ["--generation_strategy", "self_speculative", "--exit_layer", "3", "--num_speculations", "2",
                     "--exit_adapter", "linear", "--draft_confidence", "0.3", "--calibration_samples", "4"],
}


def _predictions(out_dir):
    [path] = glob.glob(str(out_dir / "benchmark_*_samples.jsonl"))
    return [json.loads(line)["prediction"] for line in open(path)]


@pytest.mark.parametrize("run", RUNS)
def test_runs_without_any_hf_layer_forward(run, tmp_path, tiny_model_dir, monkeypatch):
    args = ["--model", tiny_model_dir, "--num_samples", "2", "--max_steps", "8", *RUNS[run]]
    assert benchmark.main(args + ["--output_dir", str(tmp_path / "free")]) == 0

    def boom(*a, **k):
        raise AssertionError("Hugging Face's own forward was called")
    for cls, name in SPIED:
        monkeypatch.setattr(cls, name, boom)
    assert benchmark.main(args + ["--output_dir", str(tmp_path / "spied")]) == 0
    assert _predictions(tmp_path / "spied") == _predictions(tmp_path / "free")
