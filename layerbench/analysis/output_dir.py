"""Checking an output folder before any work: it must be a folder (or creatable as one) that can be written.
Nothing is created here, so a refused or failed command leaves no empty folder behind."""
from __future__ import annotations

import os
import tempfile

from layerbench.errors import UsageError


def check_writable_dir(path: str, flag: str) -> None:
    """Refuse (UsageError) a path that is a file, lies under a file, or whose nearest existing folder cannot be
    written (tried by creating and removing a file: permission bits alone say nothing for root)."""
    if os.path.exists(path) and not os.path.isdir(path):
        raise UsageError(f"{flag} {path}: is a file, not a folder")
    existing = os.path.abspath(path)
    while not os.path.exists(existing):
        existing = os.path.dirname(existing)
    if not os.path.isdir(existing):
        raise UsageError(f"{flag} {path}: lies under a file ({existing})")
    try:
        fd, probe = tempfile.mkstemp(dir=existing, prefix=".write_check_")
    except OSError as exc:
        raise UsageError(f"{flag} {path}: not writable ({exc.strerror or exc})") from None
    os.close(fd)
    os.remove(probe)
