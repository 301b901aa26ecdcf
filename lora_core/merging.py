"""Merging: fold ΔW = B @ A * scaling into the base weight, take it out again, or switch LoRA off.

After a merge each adapted layer is one matmul again, W + ΔW, so inference costs what the base costs
(LoRA, arXiv 2106.09685, §4.1). Merges here are explicit and out of place (see LoraLayer.merge): the
frozen W is never written, so a base shared by several sessions stays intact and `unmerge` restores
it bit for bit. `.eval()` never merges.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch.nn as nn

from .inject import ModulesToSaveWrapper, lora_layers, unload
from .layers import LoraLayer


def merge_lora(model: nn.Module) -> None:
    """Fold ΔW into every LoRA layer's weight (out of place; see layers.py)."""
    for _, layer in lora_layers(model):
        layer.merge()


def unmerge_lora(model: nn.Module) -> None:
    """Undo `merge_lora`, restoring the original weights bit for bit."""
    for _, layer in lora_layers(model):
        layer.unmerge()


def merge_and_unload(model: nn.Module) -> nn.Module:
    """Merge every adapter and return the plain model: no LoRA modules, zero inference overhead."""
    for _, layer in lora_layers(model):
        if not layer.merged:
            layer.merge()
    return unload(model, keep_trained_copies=True)


@contextlib.contextmanager
def disable_lora(model: nn.Module) -> Iterator[nn.Module]:
    """Inside the block the model behaves as its base (merged layers are unmerged for the while)."""
    layers = [m for m in model.modules() if isinstance(m, (LoraLayer, ModulesToSaveWrapper))]
    remerge = [m for m in layers if isinstance(m, LoraLayer) and m.merged]
    for m in remerge:
        m.unmerge()
    for m in layers:
        m.disabled = True
    try:
        yield model
    finally:
        for m in layers:
            m.disabled = False
        for m in remerge:
            m.merge()
