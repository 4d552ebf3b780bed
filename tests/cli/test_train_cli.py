"""train.py end to end on a tiny model with the real tokenizer: training lowers the early-exit loss and saves a
standard checkpoint (transformers loads it; self-speculative output equals autoregressive through the engine and
through benchmark.py), what each --trainable scope changes, SIGKILL then --resume gives bitwise the parameters of
an uninterrupted run, torchrun with two processes, and one-line errors from a subprocess."""
import glob
import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM

import benchmark
from layerbench.decoding import STRATEGIES, GenerationConfig
from layerbench.decoding.sampling import SamplingConfig, StopCondition, TokenChooser
from layerbench.engine.engine import Engine, EngineOptions
from layerbench.training.cli import main as train_main
from tests.conftest import ROOT

ENV = {**os.environ, "PATH": os.path.dirname(sys.executable) + os.pathsep + os.environ["PATH"]}
TRAIN = ["--max_examples", "8", "--batch_size", "2", "--max_length", "96", "--loss_on", "all", "--progress",
         "False", "--learning_rate", "3e-3"]
RECIPE = ["--layer_dropout_max", "0.2", "--early_exit_loss_scale", "1.0", "--early_exit_curriculum", "rotational"]


def _train(tmp_path, tiny_model_dir, name: str, *flags: str) -> str:
    out = str(tmp_path / name)
    assert train_main(["--model", tiny_model_dir, "--output_dir", out, *TRAIN, *flags]) == 0
    return out


def _log(out: str) -> dict:
    with open(os.path.join(out, "training_log.json")) as f:
        return json.load(f)


def _generate(engine: Engine, strategy: str, prompt: torch.Tensor, **config) -> list[int]:
    return STRATEGIES[strategy].generate(engine, prompt, GenerationConfig(max_steps=12, **config),
                                         TokenChooser(SamplingConfig()), StopCondition()).token_ids


@pytest.mark.slow
def test_training_lowers_the_early_exit_loss_and_saves_a_checkpoint(tmp_path, tiny_model_dir):
    out = _train(tmp_path, tiny_model_dir, "layerskip", "--max_train_steps", "12", "--layer_dropout_max", "0.2",
                 "--early_exit_loss_scale", "1.0", "--early_exit_layers", "3")
    log = _log(out)
    assert log["complete"] and [s["step"] for s in log["steps"]] == list(range(1, 13))
    exit3 = [s["exit_losses"]["3"] for s in log["steps"]]
    assert sum(exit3[-3:]) / 3 < sum(exit3[:3]) / 3 - 0.5
    assert log["recipe"]["exit_weights_at_step_0"] == {"3": 3 / 18, "6": 15 / 18}
    model = AutoModelForCausalLM.from_pretrained(out).eval()
    assert not hasattr(model.config, "quantization_config")
    assert "LayerSkip" in open(os.path.join(out, "README.md")).read()
    engine = Engine(model, EngineOptions(linear_kernel="torch"))
    prompt = torch.tensor([[1, 5, 9, 200, 7, 31, 4]])
    assert _generate(engine, "self_speculative", prompt, exit_block=3, num_speculations=2) == \
        _generate(engine, "autoregressive", prompt)


@pytest.mark.slow
def test_scopes_change_only_what_they_train(tmp_path, tiny_model_dir):
    before = load_file(os.path.join(tiny_model_dir, "model.safetensors"))
    below = load_file(os.path.join(_train(tmp_path, tiny_model_dir, "below", "--max_train_steps", "2",
                                          "--trainable", "layers_below_exit", "--exit_layer", "2"),
                                   "model.safetensors"))
    changed = {k for k in before if not torch.equal(before[k], below[k])}
    assert changed and all(k.startswith(("model.layers.0.", "model.layers.1.")) for k in changed)
    out = _train(tmp_path, tiny_model_dir, "adapter", "--max_train_steps", "6", "--trainable", "exit_adapter",
                 "--exit_layer", "3")
    after = load_file(os.path.join(out, "model.safetensors"))
    assert all(torch.equal(before[k], after[k]) for k in before)  # the backbone is bit-exact
    adapter = load_file(os.path.join(out, "exit_adapter.safetensors"))
    assert adapter["weight"].abs().sum() > 0
    losses = [s["exit_losses"]["3"] for s in _log(out)["steps"]]
    assert list(_log(out)["steps"][0]["exit_losses"]) == ["3"] and losses[-1] < losses[0]


@pytest.mark.slow
@pytest.mark.dist
def test_sigkill_then_resume_equals_an_uninterrupted_run(tmp_path, tiny_model_dir):
    """fp32 on CPU: the resumed run's parameters are bitwise those of the run that was never stopped."""
    flags = ["--model", tiny_model_dir, *TRAIN, *RECIPE, "--max_train_steps", "30"]
    full = _train(tmp_path, tiny_model_dir, "full", *RECIPE, "--max_train_steps", "30")
    out = str(tmp_path / "killed")
    proc = subprocess.Popen([sys.executable, "train.py", *flags, "--output_dir", out, "--save_every", "3"],
                            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=ENV)
    deadline = time.time() + 240
    while time.time() < deadline and not glob.glob(os.path.join(out, "checkpoints", "step_*", "trainer_state.json")):
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    saved = glob.glob(os.path.join(out, "checkpoints", "step_*"))
    assert saved, "the run never saved a state"
    assert not _log(out)["complete"] and not os.path.exists(os.path.join(out, "model.safetensors"))
    assert train_main([*flags, "--output_dir", out, "--save_every", "3", "--resume"]) == 0
    log = _log(out)
    assert log["complete"] and log["resumed_at_steps"] and log["resumed_at_steps"][0] < 30
    assert [s["step"] for s in log["steps"]] == list(range(1, 31))
    a, b = load_file(os.path.join(full, "model.safetensors")), load_file(os.path.join(out, "model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.slow
@pytest.mark.dist
def test_the_checkpoint_runs_through_benchmark_with_speculation_equal_to_autoregressive(tmp_path, tiny_model_dir):
    out = _train(tmp_path, tiny_model_dir, "trained", *RECIPE, "--max_train_steps", "4")
    common = ["--model", out, "--num_samples", "2", "--max_steps", "16", "--linear_kernel", "torch"]
    assert benchmark.main(common + ["--output_dir", str(tmp_path / "ar")]) == 0
    assert benchmark.main(common + ["--output_dir", str(tmp_path / "ss"), "--generation_strategy", "self_speculative",
                                    "--exit_layer", "3", "--num_speculations", "2"]) == 0
    predictions = {}
    for name in ("ar", "ss"):
        [samples] = glob.glob(str(tmp_path / name / "*_samples.jsonl"))
        predictions[name] = [json.loads(line)["prediction"] for line in open(samples)]
    assert predictions["ar"] == predictions["ss"] and len(predictions["ar"]) == 2


@pytest.mark.slow
@pytest.mark.dist
def test_torchrun_two_processes_share_the_batch(tmp_path, tiny_model_dir):
    out = str(tmp_path / "ddp")
    proc = subprocess.run(["torchrun", "--standalone", "--nproc_per_node", "2", "train.py", "--model", tiny_model_dir,
                           *TRAIN, *RECIPE, "--max_train_steps", "3", "--output_dir", out], cwd=ROOT,
                          capture_output=True, text=True, timeout=300, env=ENV)
    assert proc.returncode == 0, proc.stderr[-3000:]
    log = _log(out)
    assert log["complete"] and log["recipe"]["processes"] == 2 and log["recipe"]["examples_per_step"] == 4
    assert AutoModelForCausalLM.from_pretrained(out) is not None


@pytest.mark.slow
@pytest.mark.dist
def test_bad_flag_subprocess_is_one_line_without_torch(tmp_path):
    code = ("import sys; sys.modules['torch'] = None; sys.modules['transformers'] = None; sys.argv = ['train.py', "
            f"'--output_dir', {str(tmp_path / 'o')!r}, '--early_exit_loss_scale', '-1']; import runpy; "
            "runpy.run_path('train.py', run_name='__main__')")
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.strip().splitlines() == ["error: --early_exit_loss_scale must be >= 0, got -1.0"]
