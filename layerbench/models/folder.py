"""What a local --model folder must hold, checked before torch or transformers is imported, so an empty or
incomplete folder is named in one line instead of failing deep inside transformers."""
from __future__ import annotations

import glob
import os

from layerbench.errors import UsageError

WEIGHTS = ("*.safetensors", "pytorch_model*.bin", "*.safetensors.index.json", "pytorch_model.bin.index.json")
TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "vocab.json", "spiece.model", "vocab.txt")


def looks_local(model: str) -> bool:
    """A path rather than a hub id (the same rule as `models.loading.load_model`)."""
    return model.startswith(("/", ".", "~")) or os.path.exists(model)


def check_model_folder(model: str | None) -> None:
    """Refuse a local --model that is not a folder, or lacks config.json, weights or tokenizer files."""
    if model is None or not looks_local(model):
        return
    path = os.path.expanduser(model)
    if not os.path.isdir(path):
        raise UsageError(f"--model {model}: no such directory")
    missing = []
    if not os.path.isfile(os.path.join(path, "config.json")):
        missing.append("config.json")
    if not any(glob.glob(os.path.join(path, pattern)) for pattern in WEIGHTS):
        missing.append("weights (*.safetensors or pytorch_model*.bin)")
    if not any(os.path.isfile(os.path.join(path, name)) for name in TOKENIZER_FILES):
        missing.append(f"tokenizer files ({', '.join(TOKENIZER_FILES[:3])} or similar)")
    if missing:
        raise UsageError(f"--model {model}: not a complete model folder; missing {', '.join(missing)}")
