"""Several adapters on one model, with PEFT's named-adapter semantics: add, switch, delete.

    lc.inject_lora(model, cfg_a, adapter_name="a")   # the first adapter: active and trainable
    lc.add_adapter(model, "b", cfg_b)                # another one, inactive and frozen: the forward is a's alone
    lc.set_adapter(model, "b")                       # b active and trainable, a frozen
    lc.set_adapter(model, ["a", "b"])                # both: each layer adds a's branch, then b's
    lc.merge_lora(model, ["a", "b"])                 # W + ΔW_a + ΔW_b, out of place (merging.py)
    lc.delete_adapter(model, "a")

Every adapter lives in the same layers under its own name (layers.py), so `model.state_dict()` holds PEFT's keys
for all of them. `model.lora_configs` maps names to configs in the order they were added, `model.lora_active`
lists the active ones (PEFT's `peft_config` and `active_adapters`). As in PEFT, a layer may hold only some of the
adapters; an active adapter a layer lacks adds nothing there. A module saved in full (modules_to_save, a task
head) holds one copy per adapter that saves it (inject.ModulesToSaveWrapper); the active adapter's copy runs
and trains, and two adapters with copies of one module cannot be active together.

Where lora_core differs from PEFT 0.21, on purpose:
  * deleting the active adapter activates one adapter for the whole model, the first of the rest in sorted order
    (PEFT picks per layer from the adapters each layer holds, so two layers can end up with different ones);
  * the last adapter cannot be deleted: `remove_lora(model)` takes LoRA out (PEFT leaves empty layers);
  * an added adapter may not be PiSSA or OLoRA (they would rewrite the base weight under the other adapters);
  * adding an adapter to a merged model leaves it merged (PEFT unmerges it with a warning).
"""

from __future__ import annotations

import dataclasses
import warnings

import torch
import torch.nn as nn

from .config import LoraConfig, check_adapter_name
from .inject import (
    ModulesToSaveWrapper,
    lora_layers,
    matched_modules,
    no_targets_message,
    save_in_full,
    saved_in_full,
    wrap_targets,
)
from .layers import LoraLayer, check_lora_target

ONE_BIAS_ADAPTER = ("LoraModel supports only 1 adapter with bias. When using multiple adapters, set bias to 'none' "
                    "for all adapters.")  # PEFT's words


def _configs(model: nn.Module) -> dict[str, LoraConfig]:
    configs = getattr(model, "lora_configs", None)
    if not configs:
        raise ValueError("model has no LoRA adapter: the first one comes from "
                         "inject_lora(model, cfg, adapter_name=...)")
    return configs


def active_adapters(model: nn.Module) -> list[str]:
    """The names of the adapters the forward adds, in order (PEFT's `active_adapters`)."""
    _configs(model)
    return list(model.lora_active)


def add_adapter(model: nn.Module, adapter_name: str, cfg: LoraConfig,
                generator: torch.Generator | None = None) -> list[str]:
    """Add adapter `adapter_name` from `cfg` to a model that already has LoRA; returns the layers it targets.

    As PEFT's `add_adapter`: the new adapter is neither active nor trainable (`set_adapter` makes it so), the
    trainability of everything else is left as it was, a layer that already has LoRA gets the new adapter beside
    its others, and a new target is wrapped (active adapters as the model's, so it adds nothing yet). A module
    `cfg` saves in full gets a frozen deep copy of its original for this adapter. Everything is checked first: a
    ValueError leaves the model as it was.
    """
    configs = _configs(model)
    check_adapter_name(adapter_name)
    if adapter_name in configs:
        raise ValueError(f"adapter_name={adapter_name!r}: Adapter with name {adapter_name!r} already exists. "
                         f"The model has {list(configs)}; delete_adapter(model, {adapter_name!r}) first to replace it")
    if cfg.bias != "none" and any(c.bias != "none" for c in configs.values()):
        raise ValueError(f"bias={cfg.bias!r} is not allowed here: {ONE_BIAS_ADAPTER}")
    if cfg.init_lora_weights in ("pissa", "olora"):
        raise ValueError(f"init_lora_weights={cfg.init_lora_weights!r} is not allowed for an added adapter: it would "
                         f"replace the base weight under the model's other adapters {list(configs)} with its residual")
    names = matched_modules(model, cfg)
    if not names:
        raise ValueError(no_targets_message(model, cfg))
    modules = dict(model.named_modules())
    for name in names:
        target = modules[name]
        check_lora_target(target.base_layer if isinstance(target, LoraLayer) else target, cfg, name)
    saved = saved_in_full(model, cfg, names)
    # Every check has passed: nothing raises from here on.
    settled = wrap_targets(model, names, cfg, generator, adapter_name, active=list(model.lora_active))
    save_in_full(model, saved, adapter_name, active=False)  # its copies: frozen, and not run until set_adapter
    for name in names:
        layer = model.get_submodule(name)
        for p in layer.adapter(adapter_name).parameters():  # A, B (and DoRA's magnitude)
            p.requires_grad_(False)
    model.lora_configs[adapter_name] = dataclasses.replace(cfg, fan_in_fan_out=settled,
                                                           modules_to_save=cfg.saved_module_names())
    return names


def set_adapter(model: nn.Module, adapter_names: str | list[str], inference_mode: bool = False) -> None:
    """Make `adapter_names` the active adapters: the forward adds them, in that order (PEFT's `set_adapter`).

    Their factors train (unless `inference_mode`), every other adapter's are frozen; biases are left as they are.
    A saved module runs the copy of the one active adapter that has one. A merged model is unmerged first, with
    PEFT's warning.
    """
    configs = _configs(model)
    names = [adapter_names] if isinstance(adapter_names, str) else list(adapter_names)
    if not names:
        raise ValueError("adapter_names=[] is not allowed: name at least one adapter; to run the base model alone "
                         "use `with disable_lora(model): ...`")
    if unknown := [n for n in names if n not in configs]:
        raise ValueError(f"adapter_names={adapter_names!r}: Adapter {unknown[0]} not found. "
                         f"The model has {list(configs)}")
    for module_name, wrapper in ((n, m) for n, m in model.named_modules() if isinstance(m, ModulesToSaveWrapper)):
        if len(held := [n for n in names if n in wrapper.modules_to_save]) > 1:  # PEFT's check_set_adapter
            raise ValueError(f"adapter_names={names!r}: {held} each have their own copy of {module_name!r} "
                             "(modules_to_save), and only one adapter with a copy of a module can be active at a "
                             "time, as in PEFT")
    merged = [layer for _, layer in lora_layers(model) if layer.merged]
    if merged:
        warnings.warn("Adapter cannot be set when the model is merged. Unmerging the model first.", stacklevel=2)
    for layer in merged:
        layer.unmerge()
    _activate(model, names, inference_mode)


def _activate(model: nn.Module, names: list[str], inference_mode: bool = False) -> None:
    """Set the active adapters on every LoRA layer and saved module, and which factors and copies train."""
    for module in model.modules():
        if isinstance(module, LoraLayer):
            module.set_adapter(names, inference_mode)
        elif isinstance(module, ModulesToSaveWrapper):
            module.active_adapter = next((n for n in names if n in module.modules_to_save), None)
            for name, copy in module.modules_to_save.items():
                copy.requires_grad_(name == module.active_adapter and not inference_mode)
    model.lora_active = list(names)


def delete_adapter(model: nn.Module, adapter_name: str) -> None:
    """Delete adapter `adapter_name` from every layer (PEFT's `delete_adapter`); it may not be merged.

    If it was active, the other active adapters stay; if none is left, the first remaining adapter in sorted
    order becomes active, for the whole model, with PEFT's warning. The last adapter is not deleted here:
    `remove_lora(model)` takes LoRA out.
    """
    configs = _configs(model)
    if adapter_name not in configs:
        raise ValueError(f"adapter_name={adapter_name!r}: Adapter {adapter_name} does not exist. "
                         f"The model has {list(configs)}")
    if any(adapter_name in layer.merged_adapters for _, layer in lora_layers(model)):
        raise ValueError(f"adapter_name={adapter_name!r}: Cannot delete adapter(s) [{adapter_name!r}] while they are "
                         "merged. Please unmerge them first.")
    if len(configs) == 1:
        raise ValueError(f"adapter_name={adapter_name!r} is the model's only adapter: remove_lora(model) takes LoRA "
                         "out of the model")
    active = [n for n in model.lora_active if n != adapter_name]
    if adapter_name in model.lora_active and not active:
        active = [sorted(n for n in configs if n != adapter_name)[0]]
        warnings.warn(f"Adapter {adapter_name} was active which is now deleted. Setting active adapter to "
                      f"{active[0]}.", stacklevel=2)
    for _, layer in lora_layers(model):
        if adapter_name in layer.r:
            layer.delete_adapter(adapter_name)
    for wrapper in (m for m in model.modules() if isinstance(m, ModulesToSaveWrapper)):
        if adapter_name in wrapper.modules_to_save:
            del wrapper.modules_to_save[adapter_name]
    del configs[adapter_name]
    if active != model.lora_active:
        _activate(model, active)  # as PEFT: no unmerge here (merged adapters stay merged)
