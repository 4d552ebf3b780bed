"""A model's content hash, for keying what is computed from its weights (calibration products).

A checkpoint on disk is hashed by its files (config.json and every weight file): each file's SHA-256 is computed
once and remembered by path, size and modification time in `file_digests.json` under the cache folder, so later
runs pay only a stat() per file. Files in the Hugging Face hub cache are named by their own content hash (blobs/
<sha256> for LFS weights, <git sha1> for small files): that name is used directly and the bytes are never read.
A model built in memory (no checkpoint) is hashed by its state-dict tensors (name, dtype, shape, bytes): exact,
and cheap for the small models that have no files.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile

import torch
from torch import nn

from layerbench.models.cache_entry import file_sha256

WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".gguf")
DIGEST_INDEX = "file_digests.json"
_CONTENT_NAMED = re.compile(r"^[0-9a-f]{40}$|^[0-9a-f]{64}$")


def _read_index(path: str) -> dict:
    try:
        with open(path, encoding="utf-8") as f:
            index = json.load(f)
        return index if isinstance(index, dict) else {}
    except (OSError, ValueError):
        return {}


def _write_index(path: str, index: dict) -> None:
    """Atomic replace; a lost update from a concurrent writer only costs a re-hash later."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), prefix=".digests_")
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        json.dump(index, f)
    os.replace(tmp, path)


def file_digest(path: str, index: dict) -> tuple[str, bool]:
    """(content digest of `path`, whether `index` gained an entry)."""
    real = os.path.realpath(path)
    name = os.path.basename(real)
    if os.path.basename(os.path.dirname(real)) == "blobs" and _CONTENT_NAMED.match(name):
        return f"blob:{name}", False
    st = os.stat(real)
    known = index.get(real)
    if known and known.get("size") == st.st_size and known.get("mtime_ns") == st.st_mtime_ns:
        return known["sha256"], False
    index[real] = {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "sha256": file_sha256(real)}
    return index[real]["sha256"], True


def checkpoint_files(directory: str) -> list[str]:
    """config.json and the weight files of a checkpoint folder (sorted), or [] when it holds no weights."""
    names = sorted(os.listdir(directory))
    weights = [n for n in names if n.endswith(WEIGHT_SUFFIXES) and os.path.isfile(os.path.join(directory, n))]
    if not weights:
        return []
    return [n for n in names if n == "config.json"] + weights


def checkpoint_hash(directory: str, cache_dir: str) -> str | None:
    """Hash of a checkpoint folder's config and weight files, or None when it has no weight files."""
    files = checkpoint_files(directory)
    if not files:
        return None
    index_path = os.path.join(cache_dir, DIGEST_INDEX)
    index = _read_index(index_path)
    combined = hashlib.sha256()
    changed = False
    for name in files:
        digest, added = file_digest(os.path.join(directory, name), index)
        changed |= added
        combined.update(f"{name}={digest}\n".encode())
    if changed:
        try:
            _write_index(index_path, index)
        except OSError:
            pass  # an unwritable cache only means hashing again next time
    return combined.hexdigest()


def tensor_hash(model: nn.Module) -> str:
    """Hash of every state-dict tensor's name, dtype, shape and bytes."""
    combined = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        t = tensor.detach().contiguous().cpu()
        combined.update(f"{name}|{t.dtype}|{tuple(t.shape)}\n".encode())
        combined.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return combined.hexdigest()


def local_checkpoint_dir(source: str | None) -> str | None:
    """The folder a model was loaded from: a local directory, or a hub id's snapshot in the local hub cache."""
    if not source:
        return None
    if os.path.isdir(source):
        return source
    try:
        from transformers.utils import cached_file
        config = cached_file(source, "config.json", local_files_only=True,
                             _raise_exceptions_for_missing_entries=False)
    except (OSError, ValueError):
        return None
    return os.path.dirname(config) if config else None


def model_content_hash(model: nn.Module, source: str | None, cache_dir: str) -> tuple[str, str]:
    """(hash, how it was computed: "checkpoint files" or "state-dict tensors")."""
    directory = local_checkpoint_dir(source)
    if directory is not None:
        digest = checkpoint_hash(directory, cache_dir)
        if digest is not None:
            return digest, "checkpoint files"
    return tensor_hash(model), "state-dict tensors"
