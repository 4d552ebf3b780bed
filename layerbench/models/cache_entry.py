"""A converted-model cache folder that can be trusted. At conversion a completion marker is written last; it
records every file's SHA-256, size and mtime. When the entry is used, a file whose size and mtime are as recorded
is taken as it is (the fast path: one stat() per file); any other file, or every file with `verify=True`
(`--verify_cache`), is hashed and compared with its digest. A damaged folder is moved aside and deleted."""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile

MARKER = ".layerbench_complete"
MARKER_VERSION = 2  # 2: each file's sha256, size and mtime (1: sizes only)


def file_sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _entry(path: str, sha256: str) -> dict:
    st = os.stat(path)
    return {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "sha256": sha256}


def _write_marker(directory: str, files: dict[str, dict]) -> None:
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".marker_")
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        json.dump({"version": MARKER_VERSION, "files": files}, f)
    os.replace(tmp, os.path.join(directory, MARKER))


def write_marker(directory: str) -> None:
    """Record every file of a freshly written folder (its digest, size and mtime), last."""
    files = {}
    for name in sorted(os.listdir(directory)):
        path = os.path.join(directory, name)
        if name != MARKER and os.path.isfile(path):
            files[name] = _entry(path, file_sha256(path))
    _write_marker(directory, files)


def _recorded(directory: str) -> dict[str, dict] | str:
    """The marker's files, or why there is none to trust."""
    try:
        with open(os.path.join(directory, MARKER), encoding="utf-8") as f:
            marker = json.load(f)
    except FileNotFoundError:
        return "no completion marker"
    except (OSError, ValueError) as exc:
        return f"unreadable completion marker ({type(exc).__name__})"
    if not isinstance(marker, dict) or marker.get("version") != MARKER_VERSION:
        return "written before file digests were recorded"
    files = marker.get("files")
    if not isinstance(files, dict) or not all(isinstance(v, dict) and {"size", "mtime_ns", "sha256"} <= set(v)
                                              for v in files.values()):
        return "unreadable completion marker"
    return files


def entry_problem(directory: str, verify: bool = False) -> str | None:
    """What is wrong with a converted-model cache folder, or None when it is whole. A file whose size or mtime
    changed but whose digest still matches is accepted and its new mtime recorded (so the next use is fast)."""
    files = _recorded(directory)
    if isinstance(files, str):
        return files
    present = {n for n in os.listdir(directory) if n != MARKER and os.path.isfile(os.path.join(directory, n))}
    extra = sorted(present - set(files))
    if extra:
        return f"{extra[0]} was not written by the conversion"
    refreshed = False
    for name, recorded in files.items():
        path = os.path.join(directory, name)
        if name not in present:
            return f"{name} is missing"
        st = os.stat(path)
        if not verify and (st.st_size, st.st_mtime_ns) == (recorded["size"], recorded["mtime_ns"]):
            continue
        if file_sha256(path) != recorded["sha256"]:
            return f"{name} differs from its SHA-256 at conversion"
        if (st.st_size, st.st_mtime_ns) != (recorded["size"], recorded["mtime_ns"]):
            files[name], refreshed = _entry(path, recorded["sha256"]), True
    if refreshed:
        try:
            _write_marker(directory, files)
        except OSError:
            pass  # a read-only cache only means hashing that file again next time
    return None


def discard(directory: str) -> None:
    """Move a damaged folder aside (a process still reading it keeps its open files), then delete it."""
    trash = tempfile.mkdtemp(dir=os.path.dirname(directory), prefix=".damaged_")
    os.replace(directory, os.path.join(trash, "entry"))
    shutil.rmtree(trash, ignore_errors=True)
