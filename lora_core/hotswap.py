"""Hot-swapping: replace what one adapter computes by another adapter file, in place (PEFT's peft/utils/hotswap.py).

    lc.inject_lora(model, cfg_a)                            # or lc.load_adapter(model, "adapters/a")
    lc.hotswap_adapter(model, "adapters/b", "default")      # "default" now computes adapter b

A served (or compiled) model keeps its modules, its adapter names and, at equal rank, its Parameter objects:
nothing is re-injected, so nothing is re-traced. As in PEFT 0.21 (`hotswap_adapter`, 625-716;
`hotswap_adapter_from_state_dict`, 420-584):
  * an adapter merged into the base weights cannot be swapped (ValueError; unmerge first);
  * use_rslora, lora_dropout and use_dora must be the adapter's (`check_hotswap_configs_compatible`); r, lora_alpha
    and the targets may differ;
  * the file may cover fewer layers than the adapter: A and B become zero there (ΔW = 0); a layer the adapter does
    not hold is an error found before anything changes (hot-swapping cannot add layers);
  * each layer's scaling comes from the new r and alpha; at equal rank the tensors are copied into the same
    Parameters (`copy_`).

Where PEFT 0.21 is wrong, lora_core is right (each pinned in tests/test_hotswap.py):
  * the layers' r, lora_alpha and scaling and `model.lora_configs[name]` describe the new adapter. PEFT keeps the
    old r and alpha in its layers and its `peft_config`, so `save_pretrained` after a swap writes the old config
    beside the new tensors: reloading that file gives other outputs;
  * the configs are compared with adapter `adapter_name`'s, the one swapped. PEFT compares with the *active*
    adapter's (hotswap.py 697: `model.active_peft_config`), so swapping an inactive adapter is checked against
    another adapter's config;
  * another rank: the new tensors themselves (in the old dtype, on the old device) go into the same Parameter
    objects (`torch.utils.swap_tensors`), so `r == A.shape[0]` holds everywhere (fused.py and the ledger rely on
    it). PEFT pads a smaller rank with zeros and keeps the old shape; the outputs are the same;
  * an adapter (file or model) that trains biases or saves modules in full is refused: only LoRA factors swap, and
    PEFT would keep the old adapter's biases and copies under the new adapter;
  * values are checked as every load checks them (`check_adapter_values`: NaN, inf, overflow);
  * Embedding layers swap too (PEFT finds the layer by cutting three parts off the key, which misses
    `lora_embedding_A.<name>`).
"""

from __future__ import annotations

import dataclasses
import os

import torch
import torch.nn as nn

from .config import LoraConfig, reject
from .inject import adapter_layers, adapter_name_of, lora_layers
from .layers import LoraLayer
from .peft_io import adapter_keys, check_adapter_values, read_adapter_config, read_adapter_weights

MATCHING_FIELDS = ("use_rslora", "lora_dropout", "use_dora")  # PEFT's CONFIG_KEYS_TO_CHECK, less alpha_pattern


def hotswap_adapter(model: nn.Module, directory: str | os.PathLike, adapter_name: str) -> None:
    """Make adapter `adapter_name` of `model` compute the PEFT adapter in folder `directory`, in place."""
    hotswap_adapter_from_state_dict(model, read_adapter_weights(directory), adapter_name,
                                    read_adapter_config(directory))


def hotswap_adapter_from_state_dict(model: nn.Module, tensors: dict[str, torch.Tensor], adapter_name: str,
                                    cfg: LoraConfig) -> None:
    """Make adapter `adapter_name` compute the adapter with config `cfg` and file tensors `tensors` (PEFT keys).

    Everything is checked before any tensor is written: a ValueError leaves the model as it was.
    """
    adapter_name = adapter_name_of(model, adapter_name)
    old = model.lora_configs[adapter_name]
    _check_swappable(model, adapter_name, old, cfg)
    plan = _plan(model, tensors, adapter_name, cfg)
    check_adapter_values(model, cfg, tensors)
    # Every check has passed: nothing raises from here on.
    with torch.no_grad():
        for layer, parts in plan:
            for param, new in parts:
                _write(param, new)
            _set_rank(layer, adapter_name, cfg)
    model.lora_configs[adapter_name] = dataclasses.replace(  # the new adapter, on the layers that still hold it
        cfg, target_modules=old.target_modules, layers_to_transform=old.layers_to_transform,
        layers_pattern=old.layers_pattern, fan_in_fan_out=old.fan_in_fan_out, modules_to_save=None)


def _check_swappable(model: nn.Module, adapter_name: str, old: LoraConfig, cfg: LoraConfig) -> None:
    if any(adapter_name in layer.merged_adapters for _, layer in lora_layers(model)):
        raise ValueError(f"Cannot hot-swap adapter '{adapter_name}' because it is currently merged into the base "
                         "weights: unmerge_lora(model) first")
    for field in MATCHING_FIELDS:
        was, new = getattr(old, field, False), getattr(cfg, field, False)
        if new != was:
            reject(field, new, f"Configs are incompatible: for {field}, {was} != {new}: adapter {adapter_name!r} has "
                               f"{field}={was!r}, and hot-swapping replaces its weights, rank and alpha only")
    for who, c in (("this file", cfg), (f"adapter {adapter_name!r}", old)):
        if c.bias != "none":
            reject("bias", c.bias, f"{who} trains biases; hot-swapping replaces LoRA factors only (bias='none')")
        if c.saved_module_names():
            reject("modules_to_save", c.saved_module_names(), f"{who} saves modules in full; hot-swapping replaces "
                                                              "LoRA factors only")


Plan = list[tuple[LoraLayer, list[tuple[nn.Parameter, torch.Tensor | None]]]]


def _plan(model: nn.Module, tensors: dict[str, torch.Tensor], adapter_name: str, cfg: LoraConfig) -> Plan:
    """[(layer, [(parameter, its new tensor)])] for every layer holding the adapter, all names and shapes checked.

    A layer the file does not cover gets zeros (None) of the new rank's shape for A and B.
    """
    keys = adapter_keys(model, adapter_name)  # {file key: our parameter name}
    if unexpected := sorted(set(tensors) - set(keys)):
        raise ValueError(f"Hot swapping the adapter did not succeed, unexpected keys found: {unexpected[:3]}"
                         f"{' …' if len(unexpected) > 3 else ''}: adapter {adapter_name!r} holds no such tensor, and "
                         "hot-swapping cannot add layers (load_adapter(..., adapter_name=...) adds a new adapter)")
    key_of = {name: key for key, name in keys.items()}
    names = {id(p): n for n, p in model.named_parameters(remove_duplicate=False)}
    plan: Plan = []
    for layer_name, layer in adapter_layers(model, adapter_name):
        a = layer.adapter(adapter_name)
        rank_dim = {id(a.A): 0, id(a.B): 1}  # A is (r, in, ...), B is (out, r, ...)
        params = [p for n, p in layer.named_parameters() if n != "base_layer" and not n.startswith("base_layer.")
                  and names[id(p)] in key_of]
        present = [key_of[names[id(p)]] in tensors for p in params]
        if any(present) and not all(present):
            lacking = [key_of[names[id(p)]] for p, there in zip(params, present, strict=True) if not there]
            raise ValueError(f"adapter tensor {lacking[0]!r} is missing: the file holds other tensors of layer "
                             f"{layer_name!r}, and a layer is swapped as a whole")
        if not any(present) and len(params) != 2:
            raise ValueError(f"the file does not cover layer {layer_name!r}, whose adapter {adapter_name!r} holds "
                             "more than A and B (DoRA's magnitude): it cannot be zeroed, so cover every layer")
        parts = []
        for p in params:
            want = list(p.shape)
            if id(p) in rank_dim:
                want[rank_dim[id(p)]] = cfg.r
            key = key_of[names[id(p)]]
            new = tensors.get(key)
            if new is not None and list(new.shape) != want:
                raise ValueError(f"adapter tensor {key!r} has shape {tuple(new.shape)}, but with r={cfg.r} layer "
                                 f"{layer_name!r} needs {tuple(want)}")
            parts.append((p, new if new is not None else torch.zeros(want, dtype=p.dtype, device=p.device)))
        plan.append((layer, parts))
    return plan


def _write(param: nn.Parameter, new: torch.Tensor) -> None:
    """Put `new` into `param`, keeping the Parameter object, its dtype, device and requires_grad."""
    if param.shape == new.shape:
        param.copy_(new)  # same rank: the same storage too (PEFT's copy_)
        return
    moved = nn.Parameter(new.to(param.device, param.dtype, copy=True), requires_grad=param.requires_grad)
    try:
        torch.utils.swap_tensors(param, moved)  # another rank: the same object, holding the new tensor
    except RuntimeError:  # e.g. a weakref to the tensor (as PEFT, fall back to rebinding its data)
        param.data = moved.data


def _set_rank(layer: LoraLayer, adapter_name: str, cfg: LoraConfig) -> None:
    """The layer's numbers for the new adapter, and the r its factor modules report (nn.Linear's out_features...)."""
    layer.r[adapter_name], layer.lora_alpha[adapter_name] = cfg.r, cfg.lora_alpha
    layer.scaling[adapter_name] = cfg.scaling
    if adapter_name in layer.lora_A:
        A, B = layer.lora_A[adapter_name], layer.lora_B[adapter_name]
        if isinstance(A, nn.Conv2d):
            A.out_channels, B.in_channels = cfg.r, cfg.r
        else:
            A.out_features, B.in_features = cfg.r, cfg.r
