"""The trained model as a standard Hugging Face checkpoint in --output_dir: config, safetensors weights and
tokenizer (it loads with `AutoModelForCausalLM.from_pretrained`, in `benchmark.py --model`, and in lm-eval's `hf`
model), the model card, and for `--trainable exit_adapter` the adapter in `exit_adapter.safetensors`.

The weights are gathered with accelerate (whole on the main process, under FSDP too), their names mapped back
from the training wrapper's (`model.` prefix, each layer under `.layer`) to the model's own."""
from __future__ import annotations

import os
import re
from typing import Any

from layerbench import names
from layerbench.training.forward import LayerSkipModel

ADAPTER_FILE = names.TRAINED_EXIT_ADAPTER_FILE  # benchmark.py --exit_adapter trained reads it
CARD_FILE = "README.md"


def hf_state_dict(state: dict, layers_path: str) -> dict:
    """The training module's state dict -> the Hugging Face model's (adapter entries left out)."""
    wrapped = re.compile(rf"^({re.escape(layers_path)}\.\d+)\.layer\.")
    return {wrapped.sub(r"\1.", key[len("model."):]): value for key, value in state.items()
            if key.startswith("model.")}


def drop_quantization(model: Any) -> None:
    """A model converted from GGUF is already dequantized: it must save like any other (see models.loading)."""
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config


def save_trained(accelerator: Any, prepared: Any, tokenizer: Any, output_dir: str, card: str) -> None:
    """Write the checkpoint (every process calls this; the main one writes)."""
    from safetensors.torch import save_file
    from transformers.utils import logging as hf_logging
    hf_logging.disable_progress_bar()  # the training bar is the one progress display
    state = accelerator.get_state_dict(prepared)
    module: LayerSkipModel = accelerator.unwrap_model(prepared)
    layers_path = module.family.layers_path
    model = module.restore_layers()
    if accelerator.is_main_process:
        drop_quantization(model)
        model.save_pretrained(output_dir, state_dict=hf_state_dict(state, layers_path))
        tokenizer.save_pretrained(output_dir)
        if module.adapter is not None:
            adapter = {k[len("adapter."):]: v.detach().cpu().contiguous() for k, v in state.items()
                       if k.startswith("adapter.")}
            save_file(adapter, os.path.join(output_dir, ADAPTER_FILE), metadata={"exit_layer": str(module.exit_layer)})
        with open(os.path.join(output_dir, CARD_FILE), "w", encoding="utf-8") as f:
            f.write(card)
    accelerator.wait_for_everyone()
