"""Folders a run writes to: checked before anything is loaded (without creating them, so a refused run leaves
nothing behind), created only when the run starts."""
from __future__ import annotations

import os
import tempfile

from layerbench.errors import UsageError


def check_writable_folder(path: str, flag: str) -> None:
    """`path` is a writable folder, or could be created as one: its nearest existing ancestor is a writable
    folder, where a folder can really be made (proc, sysfs and read-only mounts refuse even root, whom access()
    allows everything)."""
    if not path.strip():
        raise UsageError(f"{flag} must name a folder, got {path!r}")
    existing = os.path.abspath(os.path.expanduser(path))
    while not os.path.exists(existing):
        existing = os.path.dirname(existing)
    if not os.path.isdir(existing):
        where = "is a file" if existing == os.path.abspath(path) else f"{existing} is a file"
        raise UsageError(f"{flag} {path}: {where}")
    if not os.access(existing, os.W_OK | os.X_OK):
        where = "not writable" if existing == os.path.abspath(path) else f"{existing} is not writable"
        raise UsageError(f"{flag} {path}: {where}")
    try:
        os.rmdir(tempfile.mkdtemp(dir=existing, prefix=".layerbench_probe_"))
    except OSError as exc:
        raise UsageError(f"{flag} {path}: cannot create a folder in {existing} ({exc.strerror})") from exc


def create_folder(path: str, flag: str) -> None:
    try:
        os.makedirs(path, exist_ok=True)
    except OSError as exc:
        raise UsageError(f"{flag} {path}: cannot create ({exc.strerror})") from exc
    if not os.access(path, os.W_OK | os.X_OK):
        raise UsageError(f"{flag} {path}: not writable")
