"""What we know about each supported model family: where its weights live in the Hugging Face module tree and
which variant of each transformer ingredient it uses. Nothing here runs a forward; `layerbench.engine` does.

Everything else in the toolkit finds a model's parts only through a `Family`.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from torch import nn

from layerbench.errors import UsageError


@dataclass(frozen=True)
class ConfigRule:
    """A config field that changes the forward in a case the engine does not implement: `supported(value,
    dtype)` says when it may be used; otherwise the model is refused with `why`."""

    field: str
    supported: Callable[[object, object], bool]
    why: str


@dataclass(frozen=True)
class Family:
    """Module paths (dotted, relative to the CausalLM or to one decoder layer) and ingredient choices."""

    name: str
    layers_path: str
    embed_path: str
    final_norm_path: str
    head_path: str
    norm_kind: str  # key of engine.norms.NORMS
    eps_attr: str  # config attribute holding the norm epsilon
    attn_norm: str
    mlp_norm: str
    qkv: tuple[str, ...]  # (q, k, v) projections, or one fused projection
    o_proj: str
    mlp_in: tuple[str, ...]  # (gate, up), one fused gate_up, or the single input map of a plain MLP
    mlp_out: str
    gated_mlp: bool
    activation_attr: str
    rotary: bool = True
    position_embed_path: str | None = None  # learned absolute positions (GPT-2)
    qk_norms: tuple[str, str] | None = None  # per-head RMSNorm of queries and keys (Qwen3)
    post_attn_norm: str | None = None  # sandwich norms (Gemma 2)
    post_mlp_norm: str | None = None
    weight_layout: str = "out_in"  # GPT-2's Conv1D stores (in, out)
    # softmax scale of one layer's attention scores: (config, head_dim, HF decoder layer) -> scale
    attn_scale: Callable[[object, int, nn.Module], float] = lambda config, head_dim, layer: head_dim ** -0.5
    window: Callable[[object, int], int | None] = lambda config, index: None
    embed_scale: Callable[[object], float | None] = lambda config: None
    attn_softcap_attr: str | None = None
    final_softcap_attr: str | None = None
    config_rules: tuple[ConfigRule, ...] = ()

    @property
    def linear_names(self) -> tuple[str, ...]:
        """Linear maps of one decoder layer (what low-rank compression may factorize)."""
        return self.qkv + (self.o_proj,) + self.mlp_in + (self.mlp_out,)

    @property
    def residual_out_names(self) -> tuple[str, ...]:
        """The maps that write a layer's attention and MLP outputs into the residual stream."""
        return (self.o_proj, self.mlp_out)

    def layers(self, model: nn.Module) -> nn.ModuleList:
        return model.get_submodule(self.layers_path)

    def set_layers(self, model: nn.Module, layers: nn.ModuleList) -> None:
        model.set_submodule(self.layers_path, layers)

    def final_norm(self, model: nn.Module) -> nn.Module:
        return model.get_submodule(self.final_norm_path)

    def head(self, model: nn.Module) -> nn.Module:
        return model.get_submodule(self.head_path)

    def embedding(self, model: nn.Module) -> nn.Module:
        return model.get_submodule(self.embed_path)


def _window_from_layer_types(config, index: int) -> int | None:
    """Sliding window of layer `index` for configs that name each layer's attention type."""
    types = getattr(config, "layer_types", None)
    if types and types[index] == "sliding_attention":
        return config.sliding_window
    return None


def _window_everywhere(config, index: int) -> int | None:
    return getattr(config, "sliding_window", None)


_LLAMA_LAYER = dict(
    layers_path="model.layers", embed_path="model.embed_tokens", final_norm_path="model.norm", head_path="lm_head",
    norm_kind="rms", eps_attr="rms_norm_eps", attn_norm="input_layernorm", mlp_norm="post_attention_layernorm",
    qkv=("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"), o_proj="self_attn.o_proj",
    mlp_in=("mlp.gate_proj", "mlp.up_proj"), mlp_out="mlp.down_proj", gated_mlp=True, activation_attr="hidden_act",
)

LLAMA = Family("llama", **_LLAMA_LAYER)
MISTRAL = Family("mistral", **_LLAMA_LAYER, window=_window_everywhere)
QWEN2 = Family("qwen2", **_LLAMA_LAYER, window=_window_from_layer_types)  # q/k/v biases live in the Linear modules
QWEN3 = Family("qwen3", **_LLAMA_LAYER, window=_window_from_layer_types,
               qk_norms=("self_attn.q_norm", "self_attn.k_norm"))
PHI3 = Family("phi3", **{**_LLAMA_LAYER, "qkv": ("self_attn.qkv_proj",), "mlp_in": ("mlp.gate_up_proj",)},
              window=_window_everywhere)
GEMMA2 = Family(
    "gemma2", **{**_LLAMA_LAYER, "norm_kind": "rms_plus_one", "mlp_norm": "pre_feedforward_layernorm",
                 "activation_attr": "hidden_activation"},
    post_attn_norm="post_attention_layernorm", post_mlp_norm="post_feedforward_layernorm",
    attn_scale=lambda config, head_dim, layer: config.query_pre_attn_scalar ** -0.5,
    window=_window_from_layer_types, embed_scale=lambda config: config.hidden_size ** 0.5,
    attn_softcap_attr="attn_logit_softcapping", final_softcap_attr="final_logit_softcapping",
)
def _gpt2_attn_scale(config, head_dim: int, layer: nn.Module) -> float:
    """1/sqrt(head_dim) unless `scale_attn_weights` is off, and divided by (layer index + 1) with
    `scale_attn_by_inverse_layer_idx` (the layer's own index, which stays the original one after pruning)."""
    scale = head_dim ** -0.5 if getattr(config, "scale_attn_weights", True) else 1.0
    if getattr(config, "scale_attn_by_inverse_layer_idx", False):
        scale /= float(layer.attn.layer_idx + 1)
    return scale


GPT2 = Family(
    "gpt2", layers_path="transformer.h", embed_path="transformer.wte", final_norm_path="transformer.ln_f",
    head_path="lm_head", norm_kind="layer", eps_attr="layer_norm_epsilon", attn_norm="ln_1", mlp_norm="ln_2",
    qkv=("attn.c_attn",), o_proj="attn.c_proj", mlp_in=("mlp.c_fc",), mlp_out="mlp.c_proj", gated_mlp=False,
    activation_attr="activation_function", rotary=False, position_embed_path="transformer.wpe",
    weight_layout="in_out", attn_scale=_gpt2_attn_scale,
    config_rules=(ConfigRule(
        "reorder_and_upcast_attn", lambda value, dtype: not value or str(dtype) == "torch.float32",
        "computes attention scores in float32 (in transformers' eager attention), which this engine does only "
        "in a float32 model; use --dtype float32"),),
)

# model_type (from the HF config) -> family
FAMILIES: dict[str, Family] = {f.name: f for f in (LLAMA, MISTRAL, QWEN2, QWEN3, PHI3, GEMMA2, GPT2)}


class UnsupportedModelError(UsageError):
    pass


def get_family(model: nn.Module) -> Family:
    model_type = getattr(model.config, "model_type", None)
    if model_type not in FAMILIES:
        raise UnsupportedModelError(
            f"model type {model_type!r} is not supported; supported: {', '.join(sorted(FAMILIES))}")
    family = FAMILIES[model_type]
    dtype = next((p.dtype for p in model.parameters()), None)
    for rule in family.config_rules:
        value = getattr(model.config, rule.field, None)
        if not rule.supported(value, dtype):
            where = str(dtype).removeprefix("torch.")
            raise UnsupportedModelError(f"{model_type} config {rule.field}={value!r} in {where}: {rule.why}")
    return family
