"""One process per run at a time: an exclusive flock on `.benchmark_<run id>.lock` beside the run's files, held
from the moment the run (or its --resume) owns them until it ends. A second --resume of a run in progress meets
one `error:` line. The kernel drops the lock when its process dies, so the file a killed run leaves behind is
simply taken over; a run that ends removes it."""
from __future__ import annotations

import fcntl
import os
from dataclasses import dataclass

from layerbench.errors import UsageError


@dataclass
class RunLock:
    path: str
    fd: int

    def release(self) -> None:
        """Remove the file while still holding the lock (a process waiting on the old file sees it is gone and
        tries again), then let go."""
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass
        os.close(self.fd)


def lock_path(output_dir: str, run_id: str) -> str:
    return os.path.join(output_dir, f".benchmark_{run_id}.lock")


def acquire(output_dir: str, run_id: str, flag: str) -> RunLock:
    """The run's lock, or a UsageError naming the process that holds it."""
    path = lock_path(output_dir, run_id)
    while True:
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise UsageError(f"{flag}: cannot lock run {run_id} in {output_dir} ({exc.strerror})") from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 64, 0).decode("ascii", "replace").strip() or "unknown"
            os.close(fd)
            raise UsageError(f"{flag}: run {run_id} is in use by another process (pid {holder}); one process "
                             f"per run at a time") from None
        try:
            same = os.path.samestat(os.fstat(fd), os.stat(path))
        except FileNotFoundError:
            same = False
        if same:
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
            return RunLock(path, fd)
        os.close(fd)  # its holder removed it as we opened it: take the next one
