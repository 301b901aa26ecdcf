"""What LoRA can wrap, and the facts about a base layer it needs: types, in/out features, weight layout.

Kept apart from the LoRA layers themselves (layers.py) because quantized bases (quant/nf4.py) register
here, like PEFT's dispatch_* functions, without importing the layers.
"""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING

import torch
import torch.nn as nn
from transformers.pytorch_utils import Conv1D

if TYPE_CHECKING:
    from .layers import LoraLayer

LINEAR_TYPES = (nn.Linear, Conv1D)
SUPPORTED_TYPES = (*LINEAR_TYPES, nn.Embedding, nn.Conv2d)

# Other Linear-like base types (a quantized Linear: quant/nf4.py) -> the LoRA layer class that wraps them.
DISPATCH: dict[type[nn.Module], type[LoraLayer]] = {}


def register_dispatch(base_type: type[nn.Module], lora_type: type[LoraLayer]) -> None:
    """Teach `make_lora_layer` a new base type (PEFT's dispatch_* functions); it needs in/out_features.

    `lora_type(base_layer, cfg, generator=..., fan_in_fan_out=..., adapter_name=...)` builds the LoRA layer
    (LoraLinear's signature).
    """
    DISPATCH[base_type] = lora_type


def weight_device_dtype(layer: nn.Module) -> tuple[torch.device, torch.dtype]:
    """Where a base layer's weight lives and its dtype, without building it (a quantized base says itself)."""
    if hasattr(layer, "weight_device_dtype"):
        return layer.weight_device_dtype()
    return layer.weight.device, layer.weight.dtype


def fan_in_fan_out_for(base_layer: nn.Module, requested: bool | None) -> bool:
    """The weight layout of `base_layer`, as PEFT's dispatch_default settles it: (in, out) for Conv1D only.

    A flag that contradicts the layer type gets PEFT's warning and is overridden; None says nothing.
    A registered (quantized) Linear stores (out, in), and PEFT's bnb layers set False without a word.
    """
    if isinstance(base_layer, tuple(DISPATCH)):
        return False
    if isinstance(base_layer, Conv1D):
        if requested is False:
            warnings.warn("fan_in_fan_out is set to False but the target module is `Conv1D`. "
                          "Setting fan_in_fan_out to True.", stacklevel=3)
        return True
    if requested:
        warnings.warn("fan_in_fan_out is set to True but the target module is `torch.nn.Linear`. "
                      "Setting fan_in_fan_out to False.", stacklevel=3)
    return False


def in_out_features(layer: nn.Module) -> tuple[int, int]:
    """(in_features, out_features) of a supported base layer."""
    if isinstance(layer, Conv1D):
        return tuple(layer.weight.shape)  # stored (in, out)
    if isinstance(layer, (nn.Linear, *DISPATCH)):  # a registered (quantized) Linear too
        return layer.in_features, layer.out_features
    if isinstance(layer, nn.Embedding):
        return layer.num_embeddings, layer.embedding_dim
    if isinstance(layer, nn.Conv2d):
        return layer.in_channels, layer.out_channels
    raise ValueError(f"{type(layer).__name__} is not a layer type LoRA can wrap: "
                     "allowed layer types are Linear, Conv1D, Embedding and Conv2d")


def is_supported(layer: nn.Module) -> bool:
    """Whether LoRA can wrap `layer`: a built-in type, or one a registered dispatcher knows."""
    return isinstance(layer, (*SUPPORTED_TYPES, *DISPATCH))
