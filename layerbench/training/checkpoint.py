"""The training state in `--output_dir/checkpoints/step_NNNNNN/`: accelerate's own state (model, optimizer,
scheduler, random number generators; sharded under FSDP) plus `trainer_state.json` (the step and the recipe).

A state is written into a temporary folder and renamed into place only once complete, so a process killed while
saving (SIGKILL included) leaves the previous state intact; older states are removed after the new one is in
place. `--resume` continues from the newest complete state. Finding states needs no torch (flag checks)."""
from __future__ import annotations

import json
import os
import re
import shutil
from typing import Any

from layerbench.errors import UsageError

CHECKPOINTS = "checkpoints"
STATE_FILE = "trainer_state.json"
LOG_FILE = "training_log.json"
STEP_DIR = re.compile(r"^step_(\d+)$")


def step_dirs(output_dir: str) -> list[tuple[int, str]]:
    """(step, folder) of every complete saved state, oldest first."""
    root = os.path.join(output_dir, CHECKPOINTS)
    if not os.path.isdir(root):
        return []
    found = [(int(m.group(1)), os.path.join(root, name)) for name in os.listdir(root)
             if (m := STEP_DIR.match(name)) and os.path.isfile(os.path.join(root, name, STATE_FILE))]
    return sorted(found)


def latest(output_dir: str) -> tuple[str, dict] | None:
    """(folder, trainer state) of the newest complete saved state, if any."""
    dirs = step_dirs(output_dir)
    if not dirs:
        return None
    path = dirs[-1][1]
    with open(os.path.join(path, STATE_FILE), encoding="utf-8") as f:
        return path, json.load(f)


def holds_run(output_dir: str) -> bool:
    """Whether a training run has already written to `output_dir`."""
    return os.path.exists(os.path.join(output_dir, LOG_FILE)) or os.path.isdir(os.path.join(output_dir, CHECKPOINTS))


def check_resumable(output_dir: str, recipe: dict) -> None:
    """A saved state exists in `output_dir`, and it was trained with the same recipe."""
    found = latest(output_dir) if os.path.isdir(output_dir) else None
    if found is None:
        raise UsageError(f"--resume: {output_dir} holds no saved training state ({CHECKPOINTS}/step_*/{STATE_FILE}); "
                         "runs save one every --save_every steps")
    saved = found[1]["recipe"]
    differing = sorted(k for k in set(recipe) | set(saved) if recipe.get(k) != saved.get(k))
    if differing:
        shown = ", ".join(f"--{k} ({saved.get(k)!r} -> {recipe.get(k)!r})" for k in differing[:4])
        raise UsageError(f"--resume: the flags differ from the saved run's: {shown}")


def save(accelerator: Any, output_dir: str, step: int, state: dict) -> str:
    """Save the training state after `step` optimizer steps (every process calls this); returns its folder."""
    root = os.path.join(output_dir, CHECKPOINTS)
    final = os.path.join(root, f"step_{step:06d}")
    tmp = os.path.join(root, f".saving_step_{step:06d}")
    if accelerator.is_main_process:
        shutil.rmtree(tmp, ignore_errors=True)  # left by a process killed while saving
        os.makedirs(tmp)
    accelerator.wait_for_everyone()
    accelerator.save_state(tmp, safe_serialization=False)  # tied embeddings share storage; safetensors refuses that
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        with open(os.path.join(tmp, STATE_FILE), "w", encoding="utf-8") as f:
            json.dump({**state, "step": step}, f, indent=1)
            f.flush()
            os.fsync(f.fileno())
        shutil.rmtree(final, ignore_errors=True)
        os.replace(tmp, final)
        for older, path in step_dirs(output_dir):
            if older != step:
                shutil.rmtree(path, ignore_errors=True)
    accelerator.wait_for_everyone()
    return final


def restore(accelerator: Any, output_dir: str) -> dict:
    """Load the newest saved state into the prepared model, optimizer and scheduler; returns its trainer state."""
    path, state = latest(output_dir)
    accelerator.load_state(path)
    return state
