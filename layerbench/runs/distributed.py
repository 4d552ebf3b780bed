"""torch.distributed for data-parallel benchmark runs under torchrun (one process per GPU, or per CPU share)."""
from __future__ import annotations

import datetime
import os
from typing import Any

import torch
import torch.distributed as dist

from layerbench.runs.ranks import DistInfo


def init(info: DistInfo, device: str, timeout_minutes: int = 60) -> str:
    """Join the process group when there is more than one rank and pick this rank's device. On CPU the cores
    are divided among the local ranks (gloo); on CUDA each rank takes cuda:LOCAL_RANK (nccl). Returns the
    device string for model loading."""
    use_cuda = device != "cpu" and torch.cuda.is_available()
    if not info.enabled:
        return device
    if use_cuda:
        torch.cuda.set_device(info.local_rank)
        device = f"cuda:{info.local_rank}"
    else:
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // info.local_world_size))
        device = "cpu"
    if not dist.is_initialized():
        dist.init_process_group("nccl" if use_cuda else "gloo", timeout=datetime.timedelta(minutes=timeout_minutes))
    return device


def broadcast(obj: Any, info: DistInfo) -> Any:
    """Rank 0's object on every rank."""
    if not info.enabled:
        return obj
    box = [obj if info.is_main else None]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def gather(obj: Any, info: DistInfo) -> list[Any]:
    """Every rank's object, in rank order, on every rank."""
    if not info.enabled:
        return [obj]
    out: list[Any] = [None] * info.world_size
    dist.all_gather_object(out, obj)
    return out


def shutdown(info: DistInfo) -> None:
    if info.enabled and dist.is_initialized():
        dist.destroy_process_group()
