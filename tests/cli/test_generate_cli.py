"""generate.py: the interactive generator, on a tiny saved model."""
import os
import re
import subprocess
import sys

import pytest

import generate
from layerbench.decoding.autoregressive import Autoregressive
from layerbench.errors import UsageError
from tests.conftest import ROOT

STATS = re.compile(r"^\[(\d+) tokens, [\d.]+ tok/s, (acceptance n/a|acceptance (\d+)/(\d+) = [\d.]+)\]$")
FLAGS = ["--max_steps", "12", "--linear_kernel", "torch"]


def _answers(out: str) -> list[tuple[str, re.Match]]:
    lines, answers, text = out.split("\n"), [], []
    for line in lines:
        match = STATS.match(line)
        if match:
            answers.append(("\n".join(text), match))
            text = []
        else:
            text.append(line)
    return answers


def test_self_speculative_answer_equals_autoregressive_and_reports_acceptance(tiny_model_dir, capsys):
    assert generate.main(["--model", tiny_model_dir, "--prompt", "Hello there", *FLAGS]) == 0
    [(ar_text, ar)] = _answers(capsys.readouterr().out)
    assert generate.main(["--model", tiny_model_dir, "--prompt", "Hello there", *FLAGS, "--color", "never",
                          "--generation_strategy", "self_speculative", "--exit_layer", "2",
                          "--num_speculations", "3"]) == 0
    [(ss_text, ss)] = _answers(capsys.readouterr().out)
    assert ss_text == ar_text and ss.group(1) == ar.group(1)  # greedy: the same answer
    assert ar.group(2) == "acceptance n/a" and int(ss.group(3)) <= int(ss.group(4))
    assert "\033[" not in ar_text + ss_text  # not a terminal: plain text


def test_ctrl_c_ends_the_answer_not_the_session(tiny_model_dir, capsys, monkeypatch):
    def interrupted(self, engine, prompt, config, chooser, stop, on_commit=None):
        on_commit("verified", [42])
        raise KeyboardInterrupt
    monkeypatch.setattr(Autoregressive, "generate", interrupted)
    assert generate.main(["--model", tiny_model_dir, "--prompt", "one", "--prompt", "two", *FLAGS]) == 0
    out = capsys.readouterr().out
    assert out.count("[interrupted: 1 tokens, ") == 2


def test_bad_strategy_flags_are_refused_before_loading():
    with pytest.raises(UsageError, match="--exit_layer must be > 0 for self_speculative"):
        generate.main(["--generation_strategy", "self_speculative", "--num_speculations", "3"])


@pytest.mark.slow
@pytest.mark.dist
def test_prompts_from_a_pipe_until_end_of_input(tiny_model_dir):
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "generate.py"), "--model", tiny_model_dir, *FLAGS,
                           "--generation_strategy", "self_speculative", "--exit_layer", "3", "--num_speculations",
                           "2"], input="first prompt\n\nsecond prompt\n", capture_output=True, text=True,
                          env={**os.environ, "HF_HUB_OFFLINE": "1"}, timeout=300)
    assert proc.returncode == 0, proc.stderr
    answers = _answers(proc.stdout)
    assert len(answers) == 2 and all(m.group(3) is not None for _, m in answers)  # blank line skipped
    assert "\033[" not in proc.stdout and proc.stderr.startswith(f"loading {tiny_model_dir} ... ")


def test_own_flags_leave_benchmark_flags_alone():
    own, rest = generate.own_flags().parse_known_args(["--prompt", "a", "--prompt_field", "p", "--prompt", "b",
                                                       "--color", "never", "--max_steps", "3"])
    assert own.prompt == ["a", "b"] and own.color == "never" and rest == ["--prompt_field", "p", "--max_steps", "3"]


@pytest.mark.parametrize("argv,message", [
    (["--prompt", ""], "--prompt: an empty prompt"),
    (["--prompt", "a\udc80b"], "--prompt: the prompt is not valid Unicode text ('\\udc80' at character 1)"),
    (["--output_dir", "x"], "--output_dir is a benchmark.py flag that generate.py does not use"),
    (["--num_samples", "3"], "--num_samples is a benchmark.py flag that generate.py does not use"),
    (["--cuda_graphs", "off"], "--cuda_graphs is a benchmark.py flag that generate.py does not use"),
    (["--temperature", "0.7"], "--temperature only applies with --sample True"),
])
def test_bad_prompts_and_unused_flags_are_refused_before_torch(argv, message):
    with pytest.raises(UsageError) as refused:
        generate.main(argv)
    assert str(refused.value).startswith(message)


def test_a_prompt_longer_than_the_context_is_one_line(tiny_model_dir):
    with pytest.raises(UsageError, match=r"^a prompt of \d{4} tokens: the model's context is 512 "):
        generate.main(["--model", tiny_model_dir, "--prompt", "word " * 1200, *FLAGS])


@pytest.mark.slow
@pytest.mark.dist
def test_binary_input_is_one_line_and_status_2(tiny_model_dir):
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "generate.py"), "--model", tiny_model_dir, *FLAGS],
                          input=b"fine prompt\n\xff\xfe binary\n", capture_output=True,
                          env={**os.environ, "HF_HUB_OFFLINE": "1"}, timeout=300)
    assert proc.returncode == 2
    errors = [line for line in proc.stderr.decode().splitlines() if not line.startswith("loading ")]
    assert len(errors) == 1 and errors[0].startswith("error: stdin line 2: "), errors
    assert len(_answers(proc.stdout.decode())) == 1  # the first prompt was answered
