"""The model a memory measurement trains: a shipped config's real shapes (or a narrow copy), weights cheap.

    model = build_model(MemoryConfig(model="distilgpt2", method="lora", target_modules=["c_attn"]))
    build_model(cfg, narrow=True)      # 2 of the same blocks at width 64: for questions widths do not change

No byte count depends on the weights' values, only on shapes and dtypes. So the model is built on the meta
device in its final dtype (a cached skeleton, deep-copied), given memory once with `to_empty`, and filled from
one small pool of normals drawn from a local torch.Generator and tiled (a strided copy at memory speed, where
drawing 82M normals takes seconds). Nothing here seeds or sets anything process-wide, and nothing cached is
ever trained or written. QLoRA's base is lora_core's own NF4Linear (quant/nf4.py, QLoRA arXiv 2305.14314).
"""

from __future__ import annotations

import copy
import functools

import torch
from torch import nn

from ..config import reject
from ..inject import inject_lora
from ..models.sources import build_on_meta, load_config
from ..sharing import shared_base_copy
from .memory import MemoryConfig
from .nf4 import quantize_model

MEASURABLE_MODELS = ("distilgpt2", "SmolLM2-135M")   # shipped configs small enough to train one step here
TORCH_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
NARROW = {  # model_type -> a narrow copy's config fields: 2 of the same blocks, the same module names, tiny widths
    "gpt2": dict(n_layer=2, n_embd=64, n_head=4, vocab_size=512, n_positions=64, bos_token_id=0, eos_token_id=0),
    "llama": dict(num_hidden_layers=2, hidden_size=64, intermediate_size=128, num_attention_heads=4, head_dim=16,
                  num_key_value_heads=2, vocab_size=512, max_position_embeddings=64, bos_token_id=0, eos_token_id=0),
}
POOL = 10_007  # a prime: the tiled draws start at a different offset on every row of every matrix


@functools.lru_cache(maxsize=8)
def _skeleton(model: str, weight_dtype: str, narrow: bool) -> nn.Module:
    """The model on the meta device, in `weight_dtype`: shapes only, no memory. Cached and never written;
    every build deep-copies it first."""
    config = load_config(model)
    if narrow:
        config.update(NARROW[config.model_type])
    return build_on_meta(config).to(TORCH_DTYPES[weight_dtype])


def narrow_description(model: str) -> str:
    """Which model `build_model(..., narrow=True)` builds, in words, for a page to say what the trap ran on."""
    meta = _skeleton(model, "fp32", True)
    c, n = meta.config, sum(p.numel() for p in meta.parameters())
    return (f"a narrow {model}: {c.num_hidden_layers} of its {c.model_type} blocks with the same module names, "
            f"width {c.hidden_size}, {c.num_attention_heads} heads, vocabulary {c.vocab_size} ({n:,} parameters)")


def _fill(model: nn.Module, generator: torch.Generator, std: float = 0.02) -> None:
    """Random-looking weights, cheaply: no byte count depends on the values, only on shapes and dtypes.

    One pool of POOL normals N(0, std²) is drawn from `generator` and tiled over every matrix and embedding
    (a strided copy, memcpy speed, where drawing 82M normals takes seconds); norms 1, biases 0; a tied weight
    once. Buffers computed in a constructor (RoPE's inv_freq) are rebuilt exactly.
    """
    pool = torch.randn(POOL, generator=generator) * std
    seen: set[int] = set()
    with torch.no_grad():
        for module in model.modules():
            norm = "norm" in type(module).__name__.lower()
            for leaf, p in module.named_parameters(recurse=False):
                if id(p) in seen:
                    continue
                seen.add(id(p))
                if norm:
                    p.fill_(1.0 if leaf == "weight" else 0.0)
                elif leaf == "bias" or p.dim() < 2:
                    p.zero_()
                else:
                    flat, src = p.view(-1), pool.to(p.dtype)
                    rows = flat.numel() // POOL
                    flat[: rows * POOL].view(rows, POOL).copy_(src.expand(rows, POOL))
                    flat[rows * POOL:].copy_(src[: flat.numel() - rows * POOL])
            if hasattr(module, "inv_freq") and hasattr(module, "config"):
                fresh = type(module)(module.config)          # pure arithmetic, in fp32 as from_pretrained keeps it
                for name, buf in fresh.named_buffers(recurse=False):
                    setattr(module, name, buf.to(module.inv_freq.device))


def random_base(model: str, weight_dtype: str = "fp32", device: str | torch.device = "cpu",
                generator: torch.Generator | None = None, narrow: bool = False) -> nn.Module:
    """A fresh frozen base with `model`'s real shapes (or its narrow copy) in `weight_dtype`: built on the meta
    device, given memory once (`to_empty`, in the final dtype: no fp32 detour) and filled by `_fill`."""
    base = copy.deepcopy(_skeleton(model, weight_dtype, narrow)).to_empty(device=device)
    base.tie_weights()                   # to_empty gave the embedding and lm_head separate memory
    _fill(base, generator or torch.Generator().manual_seed(0))
    return base.requires_grad_(False)


def build_model(cfg: MemoryConfig, device: str | torch.device = "cpu",
                generator: torch.Generator | None = None, narrow: bool = False) -> nn.Module:
    """The model `cfg` describes, for real: shapes from the shipped config (`narrow`: its narrow copy), weights
    from `generator` in `weight_dtype`; QLoRA's Linear weights in NF4 (lora_core's NF4Linear); LoRA injected
    (its factors from `generator`) unless full. Nothing cached is ever trained or written."""
    if cfg.model not in MEASURABLE_MODELS:
        reject("model", cfg.model, f"measured models are {', '.join(MEASURABLE_MODELS)} (shapes, random weights)")
    generator = generator or torch.Generator().manual_seed(0)
    if cfg.method == "qlora" and not narrow:  # quantizing is the slow part: one NF4 base, copied (never written)
        base = shared_base_copy(_nf4_base(cfg.model, cfg.weight_dtype, cfg.quant_block_size, str(torch.device(device))))
    else:
        base = random_base(cfg.model, cfg.weight_dtype, device, generator, narrow)
    if cfg.method == "full":
        return base.requires_grad_(True)
    if cfg.method == "qlora" and narrow:
        base = quantize_model(base, block_size=cfg.quant_block_size)
    inject_lora(base, cfg.lora_config(), generator=generator)
    return base


@functools.lru_cache(maxsize=1)
def _nf4_base(model: str, weight_dtype: str, block_size: int, device: str) -> nn.Module:
    """The real-shaped base with every Linear/Conv1D but the output layer in NF4 (quantize_model): quantizing
    42M weights costs seconds, so it is built once per process; each model trains a shared_base_copy of it."""
    return quantize_model(random_base(model, weight_dtype, device), block_size=block_size)
