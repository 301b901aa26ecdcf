"""Merging: fold ΔW = B @ A * scaling into the base weight, take it out again, or switch LoRA off.

After a merge each adapted layer is one matmul again, W + ΔW, so inference costs what the base costs
(LoRA, arXiv 2106.09685, §4.1). Merges here are explicit and out of place (see LoraLayer.merge): the
frozen W is never written, so a base shared by several sessions stays intact and `unmerge` restores
it bit for bit. `.eval()` never merges.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator

import torch.nn as nn

from .inject import ModulesToSaveWrapper, lora_layers, unload
from .layers import LoraLayer


def _checked_names(model: nn.Module, adapter_names: list[str] | None) -> list[str] | None:
    """`adapter_names` if every one is an adapter of `model` (None stays None: the active adapters)."""
    if adapter_names is None:
        return None
    if isinstance(adapter_names, str):
        raise ValueError(f"adapter_names={adapter_names!r} must be a list of adapter names, e.g. [{adapter_names!r}]")
    held = list(getattr(model, "lora_configs", {}))
    if unknown := [n for n in adapter_names if n not in held]:
        raise ValueError(f"adapter_names={adapter_names!r}: {unknown[0]!r} is not an adapter of this model, "
                         f"which has {held}")
    return list(adapter_names)


def merge_lora(model: nn.Module, adapter_names: list[str] | None = None) -> None:
    """Fold ΔW of `adapter_names` (None: the active adapters) into every LoRA layer's weight (out of place;
    see layers.py). PEFT's `merge_adapter`."""
    adapter_names = _checked_names(model, adapter_names)
    for _, layer in lora_layers(model):
        layer.merge(adapter_names)


def unmerge_lora(model: nn.Module) -> None:
    """Undo `merge_lora` for every adapter, restoring the original weights bit for bit (PEFT's `unmerge_adapter`).

    A layer that holds no merged adapter is left alone; if no layer is merged, this warns and does nothing.
    """
    merged = [layer for _, layer in lora_layers(model) if layer.merged]
    if not merged:
        warnings.warn("LoRA layers are not merged; unmerge_lora() did nothing.", stacklevel=2)
    for layer in merged:
        layer.unmerge()


def merge_and_unload(model: nn.Module, adapter_names: list[str] | None = None) -> nn.Module:
    """Merge `adapter_names` (None: the active adapters) and return the plain model: no LoRA modules,
    zero inference overhead. Adapters merged already stay merged."""
    adapter_names = _checked_names(model, adapter_names)
    for _, layer in lora_layers(model):
        names = layer.active_adapters if adapter_names is None else adapter_names
        if [n for n in names if n in layer.r and n not in layer.merged_adapters]:
            layer.merge(names)
    return unload(model, keep_trained_copies=True)


@contextlib.contextmanager
def disable_lora(model: nn.Module) -> Iterator[nn.Module]:
    """Inside the block the model behaves as its base (merged layers are unmerged for the while)."""
    layers = [m for m in model.modules() if isinstance(m, (LoraLayer, ModulesToSaveWrapper))]
    remerge = {m: m.merged_adapters for m in layers if isinstance(m, LoraLayer) and m.merged}
    for m in remerge:
        m.unmerge()
    for m in layers:
        m.disabled = True
    try:
        yield model
    finally:
        for m in layers:
            m.disabled = False
        for m, names in remerge.items():
            m.merge(names)
