"""The mixed-batch switch for a whole model, as PEFT's `model(x, adapter_names=...)`
(peft/tuners/lora/model.py, `_enable_peft_forward_hooks`): a forward pre-hook on every LoRA layer and every
module saved in full hands them the names; the rows themselves are mixed_rows.py.

    with lc.mixed_batch(model, ["a", "__base__", "b", "a"]):   # eval mode; one name per example
        logits = model(tokens).logits                          # tokens: (4, T)
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch.nn as nn

from .inject import ModulesToSaveWrapper
from .layers import LoraLayer
from .mixed_rows import BASE, check_names

__all__ = ["BASE", "held_adapters", "mixed_batch"]


# --- the model-level switch ------------------------------------------------------------------------------------
def held_adapters(model: nn.Module) -> set[str]:
    """Every adapter name some LoRA layer of `model` holds."""
    return {name for m in model.modules() if isinstance(m, LoraLayer) for name in m.r}


@contextlib.contextmanager
def mixed_batch(model: nn.Module, adapter_names: list[str]) -> Iterator[nn.Module]:
    """Inside the block, every forward of `model` is a mixed batch: example i runs adapter_names[i]
    ("__base__": the base model alone). PEFT's `model(x, adapter_names=adapter_names)`.

    The model must be in eval mode, and every name other than "__base__" an adapter some layer holds (PEFT's
    checks and words). Each LoRA layer and module saved in full gets `adapter_names` through a forward pre-hook;
    the hooks go when the block ends, also when it raises (PEFT's stay after an exception). One name per
    example of each forward: for `model.generate(..., num_beams=k)` that is one name per expanded row,
    `[n for n in names for _ in range(k)]` (PEFT repeats the names itself; here the caller does).
    """
    check_names(adapter_names)
    if model.training:
        raise ValueError("Cannot pass `adapter_names` when the model is in training mode. Call model.eval() first "
                         "(a mixed batch is for inference)")
    held = held_adapters(model)
    if unknown := sorted({n for n in adapter_names if n != BASE} - held):
        raise ValueError(f"adapter_names={list(adapter_names)!r}: Trying to infer with non-existing adapter(s): "
                         f"{', '.join(unknown)}. The model holds {sorted(held)} (and {BASE!r} means the base alone)")
    if merged := sorted({n for m in model.modules() if isinstance(m, LoraLayer) for n in m.merged_adapters}):
        raise ValueError(f"adapter_names cannot be used while adapters are merged ({merged}): unmerge first")
    names = list(adapter_names)

    def hand_names(module: nn.Module, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
        return args, {**kwargs, "adapter_names": names}

    handles = [m.register_forward_pre_hook(hand_names, with_kwargs=True) for m in model.modules()
               if isinstance(m, (LoraLayer, ModulesToSaveWrapper))]
    try:
        yield model
    finally:
        for handle in handles:
            handle.remove()
