"""Build the random-init benchmark models (seeded) as bf16 safetensors checkpoints with the real SmolLM2 tokenizer.

    python3 build_models.py --out /tmp/models --tok tok --device cuda [--only m1b m1b_identity m8b s135m] [--small]

m1b          Llama-3.2-1B shape: hidden 2048, 16 layers, intermediate 8192, 32 heads, 8 kv heads (head_dim 64),
             vocab = tokenizer size, tied embeddings, rope_theta 500000 (no llama3 rope scaling: speed-neutral).
             torch.manual_seed(0); every Linear/Embedding weight ~ N(0, 0.02), RMSNorm weights 1.
m1b_identity the same weights, but layers >= IDENTITY_FROM (8) have o_proj and down_proj zeroed: those layers
             return their input, so a self-speculative draft exiting at layer 8 is always accepted.
m8b          Llama-3-8B shape: hidden 4096, 32 layers, intermediate 14336, 32 heads, 8 kv heads (head_dim 128),
             untied head, rope_theta 500000; vocab = the SmolLM2 tokenizer's (49152, not Llama 3's 128256), so about
             7.4B parameters (14.8 GB in bf16). Built on the device in bf16 (no float32 copy first).
m8b_identity the same with layers >= 16 identities (written only when asked: speed.py builds its identity
             variant in memory from m8b, which saves writing and reading 15 GB).
s135m        SmolLM2-135M shape: hidden 576, 30 layers, intermediate 1536, 9 heads, 3 kv heads, tied, rope 1e5.
--small      tiny versions (2-4 layers, small hidden size) for a CPU smoke test of the bundle.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time

import torch

from transformers import AutoTokenizer, GenerationConfig, LlamaConfig, LlamaForCausalLM


def shapes(small: bool) -> dict:
    if small:
        return {
            "m1b": dict(hidden_size=256, num_hidden_layers=4, intermediate_size=1024, num_attention_heads=4,
                        num_key_value_heads=2, head_dim=64, rope_theta=500000.0),
            "s135m": dict(hidden_size=192, num_hidden_layers=2, intermediate_size=512, num_attention_heads=3,
                          num_key_value_heads=1, head_dim=64, rope_theta=100000.0),
            "m8b": dict(hidden_size=256, num_hidden_layers=4, intermediate_size=896, num_attention_heads=4,
                        num_key_value_heads=2, head_dim=64, rope_theta=500000.0, tie_word_embeddings=False),
            "identity_from": 2, "identity_from_8b": 2,
        }
    return {
        "m1b": dict(hidden_size=2048, num_hidden_layers=16, intermediate_size=8192, num_attention_heads=32,
                    num_key_value_heads=8, head_dim=64, rope_theta=500000.0),
        "s135m": dict(hidden_size=576, num_hidden_layers=30, intermediate_size=1536, num_attention_heads=9,
                      num_key_value_heads=3, head_dim=64, rope_theta=100000.0),
        "m8b": dict(hidden_size=4096, num_hidden_layers=32, intermediate_size=14336, num_attention_heads=32,
                    num_key_value_heads=8, head_dim=128, rope_theta=500000.0, tie_word_embeddings=False),
        "identity_from": 8, "identity_from_8b": 16,
    }


def make_config(spec: dict, tok) -> LlamaConfig:
    spec = dict(spec)
    theta = spec.pop("rope_theta")
    spec.setdefault("tie_word_embeddings", True)
    return LlamaConfig(vocab_size=len(tok), hidden_act="silu", max_position_embeddings=8192, rms_norm_eps=1e-5,
                       bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                       pad_token_id=tok.pad_token_id, initializer_range=0.02,
                       rope_parameters={"rope_type": "default", "rope_theta": theta}, **spec)


@torch.no_grad()
def build(config: LlamaConfig, device: torch.device, seed: int = 0) -> LlamaForCausalLM:
    with torch.device(device):
        model = LlamaForCausalLM._from_config(config, dtype=torch.bfloat16)  # no float32 copy: 8B fits
    model.tie_weights()
    torch.manual_seed(seed)
    for name, p in model.named_parameters():  # deterministic order; the tied head is listed once
        if name.endswith("norm.weight"):
            p.fill_(1.0)
        elif p.dim() >= 2:
            p.normal_(0.0, config.initializer_range)
        else:
            p.zero_()
    tied = model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()
    assert tied == config.tie_word_embeddings, "head tying differs from the config"
    return model.eval()


def save(model: LlamaForCausalLM, tok, path: str, note: dict) -> dict:
    t0 = time.perf_counter()
    if os.path.isdir(path):
        shutil.rmtree(path)
    model.generation_config = GenerationConfig(bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                                               pad_token_id=tok.pad_token_id, do_sample=False)
    model.save_pretrained(path)
    tok.save_pretrained(path)
    n = sum(p.numel() for p in model.parameters())
    info = {"path": path, "num_parameters": n, "save_seconds": round(time.perf_counter() - t0, 2),
            "files": {f: os.path.getsize(os.path.join(path, f)) for f in sorted(os.listdir(path))}, **note}
    print(json.dumps(info), flush=True)
    return info


def identity_layers(model: LlamaForCausalLM, first: int) -> None:
    with torch.no_grad():
        for layer in model.model.layers[first:]:
            layer.self_attn.o_proj.weight.zero_()
            layer.mlp.down_proj.weight.zero_()


def build_8b(sh: dict, tok, device: torch.device, out: str, want: set, manifest: dict) -> None:
    t0 = time.perf_counter()
    model = build(make_config(sh["m8b"], tok), device)
    built = round(time.perf_counter() - t0, 2)
    if "m8b" in want:
        manifest["models"]["m8b"] = save(model, tok, os.path.join(out, "m8b"), {"build_seconds": built})
    if "m8b_identity" in want:
        identity_layers(model, sh["identity_from_8b"])
        manifest["models"]["m8b_identity"] = save(model, tok, os.path.join(out, "m8b_identity"),
                                                  {"identity_layers_from": sh["identity_from_8b"]})
    del model
    if device.type == "cuda":
        torch.cuda.empty_cache()


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="/tmp/models")
    ap.add_argument("--tok", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "tok"))
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--small", action="store_true")
    ap.add_argument("--only", nargs="*", default=None, help="subset of m1b m1b_identity m8b m8b_identity s135m "
                                                            "(default: m1b m1b_identity s135m)")
    a = ap.parse_args()
    device = torch.device(a.device)
    tok = AutoTokenizer.from_pretrained(a.tok)
    sh = shapes(a.small)
    want = set(a.only or ["m1b", "m1b_identity", "s135m"])
    os.makedirs(a.out, exist_ok=True)
    manifest = {"small": a.small, "device": str(device), "torch": torch.__version__, "models": {}}
    if want & {"m1b", "m1b_identity"}:
        t0 = time.perf_counter()
        cfg = make_config(sh["m1b"], tok)
        model = build(cfg, device)
        built = round(time.perf_counter() - t0, 2)
        if "m1b" in want:
            manifest["models"]["m1b"] = save(model, tok, os.path.join(a.out, "m1b"), {"build_seconds": built})
        k = sh["identity_from"]
        identity_layers(model, k)
        if "m1b_identity" in want:
            manifest["models"]["m1b_identity"] = save(model, tok, os.path.join(a.out, "m1b_identity"),
                                                      {"identity_layers_from": k})
        del model
        if device.type == "cuda":
            torch.cuda.empty_cache()
    if want & {"m8b", "m8b_identity"}:
        build_8b(sh, tok, device, a.out, want, manifest)
    if "s135m" in want:
        t0 = time.perf_counter()
        model = build(make_config(sh["s135m"], tok), device)
        manifest["models"]["s135m"] = save(model, tok, os.path.join(a.out, "s135m"),
                                           {"build_seconds": round(time.perf_counter() - t0, 2)})
        del model
    with open(os.path.join(a.out, "manifest.json"), "w") as f:
        json.dump(manifest, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
