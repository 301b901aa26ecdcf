"""disable_adapter on a merged model, run in PEFT and in lora_core: the two differ after the block.

Inside the block both give the base model's logits. After it, lora_core's `disable_lora` merges the
adapter back (the model is as it was), while PEFT's `disable_adapter()` leaves a merged model unmerged
(a disabled LoRA layer unmerges itself in forward, and leaving the block only re-enables the adapter).
The logits after the block are the adapted ones either way; what differs is the merged state, which
decides inference cost and what a later `unmerge` or `merge_and_unload` does. Both models get the same
tiny GPT-2 and the same non-zero factors from local generators (seeded.py), so nothing touches torch's
global RNG.
"""

from __future__ import annotations

import functools
import importlib.util
import math
import warnings

import torch
from torch import nn

from ...config import LoraConfig
from ...inject import inject_lora, lora_layers
from ...merging import disable_lora, merge_lora
from ..seeded import generator, materialize_gpt2, random_ids, tiny_gpt2, tiny_gpt2_on_meta

TARGETS = ["c_attn"]


def _fill_factors(model: nn.Module, seed: int) -> None:
    """Non-zero A and B (Kaiming-uniform, as nn.Linear) from a local generator, in parameter order."""
    g = generator(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if ".lora_A." in name or ".lora_B." in name:
                nn.init.kaiming_uniform_(p, a=math.sqrt(5), generator=g)


def _logits(model: nn.Module, ids: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(input_ids=ids).logits


def _row(library: str, base: torch.Tensor, adapted: torch.Tensor, inside: torch.Tensor, after: torch.Tensor,
         merged_before: bool, merged_after: bool) -> dict:
    return {"library": library, "merged before the block": merged_before,
            "max |Δ| vs base inside the block": float((inside - base).abs().max()),
            "merged after the block": merged_after,
            "max |Δ| vs adapted after the block": float((after - adapted).abs().max())}


@functools.lru_cache(maxsize=1)
def disable_on_merged(r: int = 4, seed: int = 0) -> dict:
    """Merge, disable for one block, look again: one row for lora_core and, if installed, one for PEFT."""
    ids = random_ids(512, (1, 8), seed)
    model = tiny_gpt2(seed)
    base = _logits(model, ids)
    inject_lora(model, LoraConfig(r=r, target_modules=TARGETS), generator=generator(seed + 1))
    _fill_factors(model, seed + 2)
    adapted = _logits(model, ids)
    merge_lora(model)
    with disable_lora(model):
        inside = _logits(model, ids)
    rows = [_row("lora_core (disable_lora)", base, adapted, inside, _logits(model, ids), True,
                 all(layer.merged for _, layer in lora_layers(model)))]
    if importlib.util.find_spec("peft") is None:
        return {"rows": rows, "available": False, "adapter_effect": float((adapted - base).abs().max())}
    import peft

    with warnings.catch_warnings(), torch.device("meta"):
        warnings.simplefilter("ignore")  # Conv1D fan_in_fan_out notice
        wrapped = peft.get_peft_model(tiny_gpt2_on_meta(), peft.LoraConfig(r=r, target_modules=TARGETS,
                                                                             init_lora_weights=False))
    wrapped = materialize_gpt2(wrapped, seed).eval()
    _fill_factors(wrapped, seed + 2)
    peft_adapted = _logits(wrapped, ids)
    wrapped.merge_adapter()
    peft_layers = [m for m in wrapped.modules() if isinstance(m, peft.tuners.lora.LoraLayer)]
    with wrapped.disable_adapter():
        inside = _logits(wrapped, ids)
    rows.append(_row("PEFT (disable_adapter)", base, peft_adapted, inside, _logits(wrapped, ids), True,
                     all(layer.merged for layer in peft_layers)))
    return {"rows": rows, "available": True, "adapter_effect": float((adapted - base).abs().max()),
            "same_adapter": float((peft_adapted - adapted).abs().max())}
