"""Calibration products (hidden states, fitted stand-ins and exit adapters, ASVD column scales, draft vocabularies)
kept on disk, so a sweep calibrates once per key.

A key is the JSON of everything the product depends on: the product's name, the cache format version, the torch
version, the model (content hash of its weights, dtype, device type, and the surgery applied before calibrating;
see `PruneModel.model_state`), the calibration text (its source and the SHA-256 of its token ids, so the
template, tokenizer and excluded evaluation samples are covered) and the product's own parameters. An entry is a
folder named by the key's SHA-256 holding `tensors.safetensors` and `meta.json` (the key, the tensors file's
SHA-256, and the product's non-tensor parts), written into a temporary folder and renamed into place, so a
killed run never leaves half an entry. An entry that cannot be read back exactly is recomputed, with one warning.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import torch
from safetensors.torch import load_file, save_file

from layerbench.models.fingerprint import file_sha256

FORMAT_VERSION = 2  # 2: exit adapters store exit_block
TENSORS = "tensors.safetensors"
META = "meta.json"


def key_digest(key: dict) -> str:
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()


def _flatten(obj: Any, tensors: dict[str, torch.Tensor]) -> Any:
    """JSON-able copy of `obj` with each tensor moved into `tensors` and replaced by a reference."""
    if isinstance(obj, torch.Tensor):
        name = f"t{len(tensors)}"
        tensors[name] = obj.detach().contiguous().cpu()
        return {"__tensor__": name}
    if isinstance(obj, dict):
        if not all(isinstance(k, str) for k in obj):
            raise TypeError("calibration products must use string keys")
        return {k: _flatten(v, tensors) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_flatten(v, tensors) for v in obj]
    return obj


def _restore(obj: Any, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(obj, dict):
        if set(obj) == {"__tensor__"}:
            return tensors[obj["__tensor__"]]
        return {k: _restore(v, tensors) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_restore(v, tensors) for v in obj]
    return obj


def value_digest(value: Any) -> str:
    """SHA-256 of a product's non-tensor parts and tensor bytes (names what a fitted product put into a model)."""
    tensors: dict[str, torch.Tensor] = {}
    digest = hashlib.sha256(json.dumps(_flatten(value, tensors), sort_keys=True, default=str).encode())
    for name in sorted(tensors):
        t = tensors[name]
        digest.update(f"{name}|{t.dtype}|{tuple(t.shape)}".encode())
        digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def _stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


@dataclass
class CalibrationCache:
    """`root` None: nothing is read or written (every product is computed). `model_hash` is called at most once,
    and only when a key is needed. `log` receives one status line per product (None: silent); warnings always go
    to stderr."""

    root: str | None = None
    model_hash: Callable[[], tuple[str, str]] | None = None
    log: Callable[[str], None] | None = None
    _hash: tuple[str, str] | None = field(default=None, init=False)

    @property
    def enabled(self) -> bool:
        return self.root is not None

    def weights_hash(self) -> tuple[str, str]:
        """(content hash, how it was computed), memoized."""
        if self._hash is None:
            if self.model_hash is None:
                raise ValueError("a calibration cache needs a model_hash function")
            self._hash = self.model_hash()
        return self._hash

    def entry_dir(self, digest: str) -> str:
        return os.path.join(self.root, digest[:2], digest)

    def fetch(self, product: str, key: Callable[[], dict], compute: Callable[[], Any]) -> tuple[Any, dict]:
        """(the product, what happened: status "cached" / "computed" / "computed (cache off)", seconds, key)."""
        t0 = time.perf_counter()
        if not self.enabled:
            value = compute()
            return value, self._record(product, "computed (cache off)", time.perf_counter() - t0, None)
        # through JSON and back, so it compares equal to the key an entry stores (tuples become lists)
        full_key = json.loads(json.dumps({"product": product, "format": FORMAT_VERSION, "torch": torch.__version__,
                                          **key()}))
        digest = key_digest(full_key)
        path = self.entry_dir(digest)
        if os.path.isdir(path):
            try:
                value = self._load(path, full_key)
                return value, self._record(product, "cached", time.perf_counter() - t0, digest)
            except Exception as exc:  # noqa: BLE001 - any unreadable entry is recomputed
                reason = f"{type(exc).__name__}: {str(exc).splitlines()[0]}" if str(exc) else type(exc).__name__
                _stderr(f"warning: calibration cache entry {path} is damaged ({reason}); recomputing it")
        value = compute()
        seconds = time.perf_counter() - t0
        try:
            self._store(path, full_key, value, seconds)
        except OSError as exc:
            _stderr(f"warning: cannot write the calibration cache entry {path} ({exc}); continuing without it")
        return value, self._record(product, "computed", seconds, digest)

    # ---- entries -----------------------------------------------------------------------------------------
    @staticmethod
    def _load(path: str, key: dict) -> Any:
        with open(os.path.join(path, META), encoding="utf-8") as f:
            meta = json.load(f)
        if meta["key"] != key:
            raise ValueError("its key does not match")
        tensor_path = os.path.join(path, TENSORS)
        if file_sha256(tensor_path) != meta["tensors_sha256"]:
            raise ValueError("its tensors file does not match its checksum")
        return _restore(meta["value"], load_file(tensor_path))

    def _store(self, path: str, key: dict, value: Any, seconds: float) -> None:
        tensors: dict[str, torch.Tensor] = {}
        flat = _flatten(value, tensors)
        parent = os.path.dirname(path)
        os.makedirs(parent, exist_ok=True)
        tmp = tempfile.mkdtemp(dir=parent, prefix=".writing_")
        try:
            tensor_path = os.path.join(tmp, TENSORS)
            save_file(tensors, tensor_path)
            meta = {"key": key, "tensors_sha256": file_sha256(tensor_path), "value": flat,
                    "compute_seconds": seconds, "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
            with open(os.path.join(tmp, META), "w", encoding="utf-8") as f:  # written last
                json.dump(meta, f)
            if os.path.isdir(path):  # a damaged entry: move it aside, then put the new one in its place
                trash = tempfile.mkdtemp(dir=parent, prefix=".damaged_")
                os.replace(path, os.path.join(trash, "entry"))
                shutil.rmtree(trash, ignore_errors=True)
            os.replace(tmp, path)
        except OSError:
            shutil.rmtree(tmp, ignore_errors=True)
            if not os.path.isdir(path):  # not just a concurrent run that stored it first
                raise

    # ---- reporting -----------------------------------------------------------------------------------------
    def _record(self, product: str, status: str, seconds: float, digest: str | None) -> dict:
        if self.log is not None:
            self.log(f"calibration: {product} cached" if status == "cached"
                     else f"calibration: {product} {seconds:.1f} s")
        record = {"status": status, "seconds": seconds}
        if digest is not None:
            record["key"] = digest[:16]
        return record
