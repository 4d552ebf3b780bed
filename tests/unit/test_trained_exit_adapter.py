"""--exit_adapter trained: benchmark.py drafts through the adapter train.py --trainable exit_adapter saved beside the
checkpoint (exit_adapter.safetensors, its exit layer in the metadata), applied as h + h A^T + b; greedy
self-speculative output stays autoregressive output; another --exit_layer, or a folder without the file, is
refused in one line."""
import json
import shutil

import pytest
import torch
from safetensors.torch import save_file

import benchmark
from layerbench.surgery.exit_adapter import load_trained_exit_adapter
from layerbench.surgery.linear_fit import residual_linear


def test_the_trained_adapter_loads_as_the_map_it_was_trained_as(tmp_path):
    torch.manual_seed(0)
    weight, bias = torch.randn(8, 8), torch.randn(8)
    save_file({"weight": weight, "bias": bias}, str(tmp_path / "exit_adapter.safetensors"), metadata={"exit_layer": "3"})
    fitted = load_trained_exit_adapter(str(tmp_path), 3, 2)
    module = residual_linear(fitted["W"], fitted["b"], weight)
    h = torch.randn(2, 8)
    torch.testing.assert_close(module(h), h @ weight.T + bias)
    assert fitted["exit_block"] == 2 and fitted["report"]["trained_for_exit_layer"] == 3


@pytest.mark.slow
def test_benchmark_drafts_through_a_trained_adapter(tmp_path, tiny_model_dir, capsys):
    model = tmp_path / "model"
    shutil.copytree(tiny_model_dir, model)
    save_file({"weight": torch.randn(64, 64) * 0.01, "bias": torch.zeros(64)}, str(model / "exit_adapter.safetensors"),
              metadata={"exit_layer": "3"})
    common = ["--model", str(model), "--num_samples", "2", "--max_steps", "8", "--output_dir", str(tmp_path / "logs"),
              "--perplexity", "False"]
    assert benchmark.main(common) == 0
    assert benchmark.main(common + ["--generation_strategy", "self_speculative", "--exit_layer", "3",
                                    "--num_speculations", "2", "--exit_adapter", "trained"]) == 0
    assert "2/2 predictions identical" in capsys.readouterr().out
    [spec] = [d for d in (json.load(open(p)) for p in (tmp_path / "logs").glob("benchmark_*.json"))
              if d["args"]["exit_adapter"] == "trained"]
    assert spec["prune"]["exit_adapter"]["trained_for_exit_layer"] == 3
    assert benchmark.main(common + ["--generation_strategy", "self_speculative", "--exit_layer", "2",
                                    "--num_speculations", "2", "--exit_adapter", "trained"]) == 2
    assert "was trained for exit layer 3, not --exit_layer 2" in capsys.readouterr().err
    assert benchmark.main(["--model", tiny_model_dir, "--exit_layer", "2", "--exit_adapter", "trained"]) == 2
    assert "--exit_adapter trained reads exit_adapter.safetensors from the --model folder" in capsys.readouterr().err
