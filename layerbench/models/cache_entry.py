"""A converted-model cache folder that can be trusted: a completion marker (every file's size) written last, and
every safetensors file exactly as long as its header says. A damaged folder is moved aside and deleted."""
from __future__ import annotations

import json
import os
import shutil
import tempfile

MARKER = ".layerbench_complete"


def write_marker(directory: str) -> None:
    sizes = {n: os.path.getsize(os.path.join(directory, n)) for n in sorted(os.listdir(directory)) if n != MARKER}
    with open(os.path.join(directory, MARKER), "w", encoding="utf-8") as f:
        json.dump({"files": sizes}, f)


def safetensors_problem(path: str) -> str | None:
    """Why a safetensors file is not whole (its size must be 8 + header + the end of its last tensor), or None."""
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            return f"{os.path.basename(path)} has no header"
        length = int.from_bytes(head, "little")
        if length > size - 8:
            return f"{os.path.basename(path)} is shorter than its header"
        try:
            header = json.loads(f.read(length))
        except ValueError:
            return f"{os.path.basename(path)} has an unreadable header"
    try:
        end = max((v["data_offsets"][1] for k, v in header.items() if k != "__metadata__"), default=0)
    except (AttributeError, KeyError, TypeError, IndexError):
        return f"{os.path.basename(path)} has an unreadable header"
    if size != 8 + length + end:
        return f"{os.path.basename(path)} holds {size} bytes, its header says {8 + length + end}"
    return None


def entry_problem(directory: str) -> str | None:
    """What is wrong with a converted-model cache folder, or None when it is whole. A folder written before the
    marker existed is accepted (and marked) when its config and every safetensors file are whole."""
    names = set(os.listdir(directory))
    if "config.json" not in names:
        return "no config.json"
    weights = sorted(n for n in names if n.endswith(".safetensors"))
    if not weights:
        return "no safetensors file"
    for name in weights:
        problem = safetensors_problem(os.path.join(directory, name))
        if problem:
            return problem
    if MARKER not in names:
        try:
            write_marker(directory)
        except OSError:
            pass
        return None
    try:
        with open(os.path.join(directory, MARKER), encoding="utf-8") as f:
            expected = json.load(f)["files"]
    except (OSError, ValueError, KeyError, TypeError):
        return "unreadable completion marker"
    for name, size in expected.items():
        if name not in names or os.path.getsize(os.path.join(directory, name)) != size:
            return f"{name} is missing or changed size"
    return None


def discard(directory: str) -> None:
    """Move a damaged folder aside (a process still reading it keeps its open files), then delete it."""
    trash = tempfile.mkdtemp(dir=os.path.dirname(directory), prefix=".damaged_")
    os.replace(directory, os.path.join(trash, "entry"))
    shutil.rmtree(trash, ignore_errors=True)
