"""`custom_dataset` of the local tasks: their `dataset_kwargs.data_files` are relative to this folder, so the
tasks load from any working directory (datasets' own `json` builder, offline)."""
from __future__ import annotations

import os

import datasets

HERE = os.path.dirname(os.path.abspath(__file__))


def load(data_files: dict[str, str], **_metadata) -> datasets.DatasetDict:
    return datasets.load_dataset("json", data_files={split: os.path.join(HERE, path)
                                                     for split, path in data_files.items()})
