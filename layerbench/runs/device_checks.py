"""Device flags whose meaning depends on the machine (is there CUDA, how many GPUs): checked once torch is
imported, before the model is loaded, each as one `error:` line. What the flags alone decide (e.g.
`--attention_backend flash --device cpu`) is refused earlier, in `flag_checks`."""
from __future__ import annotations

import torch

from layerbench.errors import UsageError
from layerbench.models.device_map import parse_device_map, parse_max_memory
from layerbench.runs.arguments import BenchmarkArguments


def named_gpus(b: BenchmarkArguments) -> list[tuple[str, int]]:
    """(where, GPU index) of every GPU that --device_map or --max_memory names."""
    gpus = []
    mapping = parse_device_map(b.device_map) if b.device_map else None
    for module, device in (mapping.items() if isinstance(mapping, dict) else []):
        if isinstance(device, int) or str(device).startswith("cuda"):
            index = device if isinstance(device, int) else int(str(device).partition(":")[2] or 0)
            gpus.append((f"--device_map {module or repr('')} -> {device}", index))
    for key in (parse_max_memory(b.max_memory) if b.max_memory else {}):
        if isinstance(key, int):
            gpus.append((f"--max_memory {key}=...", key))
    return gpus


def check_devices(b: BenchmarkArguments) -> None:
    available = torch.cuda.device_count() if torch.cuda.is_available() else 0
    gpus = named_gpus(b)
    for where, index in gpus:
        if index >= available:
            have = f"this machine has {available} GPU(s)" if available else "there is no CUDA device on this machine"
            raise UsageError(f"{where}: {have}")
    on_cuda = b.device.startswith("cuda") or (b.device == "auto" and available > 0) or bool(gpus)
    if b.attention_backend != "auto" and not on_cuda:
        raise UsageError(f"--attention_backend {b.attention_backend} chooses among CUDA's SDPA kernels; this run "
                         f"computes on the CPU (no CUDA device here)")
