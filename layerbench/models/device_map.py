"""`--device_map` and `--max_memory`: one model split over several devices in one process.

The map is planned before any weight is read (accelerate's own planner over an empty model, or the map given),
refused when it would put weights on disk, then handed to transformers as an explicit map. After loading, modules
that accelerate offloaded to the CPU (weights on `meta`, kept by a hook) get their weights back on the CPU and every
accelerate hook is removed: the engine computes each module where its weights live and never relies on hooks.

Parsing needs no torch, so flags are checked before anything heavy is imported.
"""
from __future__ import annotations

import json
import os
import re

from layerbench.errors import UsageError

STRATEGIES = ("auto", "balanced", "balanced_low_0", "sequential")
SIZE = re.compile(r"^\d+(\.\d+)?\s*([gmk]ib|[gmk]b)$", re.IGNORECASE)  # what accelerate's size parser reads


def _json(value: str, flag: str) -> dict:
    text = value
    if not value.lstrip().startswith("{"):
        if not os.path.isfile(value):
            raise UsageError(f"{flag} {value!r}: not one of {', '.join(STRATEGIES)}, a JSON object, or a JSON file")
        with open(value) as f:
            text = f.read()
    try:
        parsed = json.loads(text)
    except json.JSONDecodeError as exc:
        raise UsageError(f"{flag}: invalid JSON ({exc.msg} at line {exc.lineno} column {exc.colno})") from None
    if not isinstance(parsed, dict) or not parsed:
        raise UsageError(f"{flag}: expected a non-empty JSON object")
    return parsed


def _device_name(value: object, where: str) -> str | int:
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    if isinstance(value, str) and (value in ("cpu", "disk", "cuda") or value.isdigit()
                                   or (value.startswith("cuda:") and value[5:].isdigit())):
        return int(value) if value.isdigit() else value
    raise UsageError(f"--device_map: {where} -> {value!r} is not a device (a GPU index, 'cuda:N', 'cpu' or 'disk')")


def parse_device_map(value: str) -> str | dict[str, str | int]:
    """A strategy name, or an explicit {module name prefix: device} map (inline JSON or a JSON file)."""
    if value in STRATEGIES:
        return value
    parsed = _json(value, "--device_map")
    mapping = {str(k): _device_name(v, str(k) or "''") for k, v in parsed.items()}
    refuse_disk(mapping, "--device_map")
    return mapping


def parse_max_memory(value: str) -> dict[str | int, str]:
    """`0=20GiB,1=20GiB,cpu=60GiB` or a JSON object."""
    if value.lstrip().startswith("{") or value.endswith(".json"):
        pairs = _json(value, "--max_memory").items()
    else:
        try:
            pairs = [item.split("=", 1) for item in value.split(",")]
            pairs = [(k.strip(), v.strip()) for k, v in pairs]
        except ValueError:
            raise UsageError(f"--max_memory {value!r}: expected DEVICE=SIZE pairs, e.g. 0=20GiB,cpu=60GiB") from None
    out: dict[str | int, str] = {}
    for key, size in pairs:
        device = int(key) if str(key).isdigit() else str(key)
        if not (isinstance(device, int) or device in ("cpu", "disk")):
            raise UsageError(f"--max_memory: {key!r} is not a GPU index, 'cpu' or 'disk'")
        if device == "disk":
            raise UsageError("--max_memory disk=...: the engine computes where weights live and refuses disk offload")
        out[device] = _size(device, size)
    return out


def _size(device: str | int, size: object) -> int | str:
    """A size accelerate understands: a number of bytes, or a number with a unit (GiB, MiB, KiB, GB, MB, KB)."""
    text = str(size).strip()
    if isinstance(size, int) and not isinstance(size, bool) and size >= 0 or isinstance(size, str) and text.isdigit():
        return int(text)
    if isinstance(size, str) and SIZE.match(text):
        return text
    raise UsageError(f"--max_memory {device}={size}: not a size; give bytes or a number with a unit, e.g. 20GiB, "
                     f"500MB")


def refuse_disk(mapping: dict, flag: str) -> None:
    on_disk = [name or "the whole model" for name, device in mapping.items() if device == "disk"]
    if on_disk:
        raise UsageError(f"{flag}: {len(on_disk)} module(s) would be offloaded to disk ({on_disk[0]}"
                         f"{', ...' if len(on_disk) > 1 else ''}); the engine computes where weights live and cannot "
                         f"run weights from disk: give the GPUs and the CPU more memory (--max_memory) or a map "
                         f"without 'disk'")


def plan_device_map(source: str, device_map: str | dict, max_memory: dict | None, dtype) -> dict:
    """The explicit map transformers will load with: accelerate's planner over an empty model of `source`'s
    config (as transformers does it), before any weight is read."""
    if isinstance(device_map, dict):
        return device_map
    from accelerate import infer_auto_device_map, init_empty_weights
    from accelerate.utils import get_balanced_memory
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.from_pretrained(source)
    with init_empty_weights():
        empty = AutoModelForCausalLM.from_config(config, dtype=dtype)
    no_split = list(getattr(empty, "_no_split_modules", None) or [])
    if device_map != "sequential":
        max_memory = get_balanced_memory(empty, max_memory=max_memory, no_split_module_classes=no_split, dtype=dtype,
                                         low_zero=device_map == "balanced_low_0")
    planned = infer_auto_device_map(empty, max_memory=max_memory, no_split_module_classes=no_split, dtype=dtype)
    refuse_disk(planned, f"--device_map {device_map}" + (" --max_memory" if max_memory else ""))
    return dict(planned)


def materialize_offloaded(model) -> list[str]:
    """Give modules that accelerate offloaded to the CPU (weights on `meta`, real tensors in their hook's weights
    map) their weights back on the CPU, where the engine will run them; then remove every accelerate hook.
    Returns the names of the modules materialized."""
    from accelerate.hooks import remove_hook_from_module
    from accelerate.utils import named_module_tensors, set_module_tensor_to_device

    refuse_disk(dict(getattr(model, "hf_device_map", None) or {}), "--device_map")
    materialized = []
    for name, module in model.named_modules():
        hook = getattr(module, "_hf_hook", None)
        for h in getattr(hook, "hooks", [hook] if hook is not None else []):
            if not getattr(h, "offload", False) or h.weights_map is None:
                continue
            for tensor_name, tensor in named_module_tensors(module, include_buffers=h.offload_buffers,
                                                            recurse=h.place_submodules):
                if tensor.device.type == "meta":
                    set_module_tensor_to_device(module, tensor_name, "cpu", value=h.weights_map[tensor_name])
            materialized.append(name)
    remove_hook_from_module(model, recurse=True)
    return materialized
