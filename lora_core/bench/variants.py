"""The adapters the benchmark times, built the same way for lora_core and for PEFT, and what each one saves.

    ours = ours_model(shared_base_copy(base), "c_attn", r=8, alpha=16, adapter="dora")
    theirs = peft_model(shared_base_copy(base), "c_attn", r=8, alpha=16, adapter="dora")
    saved = saved_activation_bytes(ours, ids)   # what one forward keeps for the backward, weights excluded

Three adapters, each on the same targets and rank (issue 14 asked for the last two):

    lora           one plain LoRA adapter (LoRA, arXiv 2106.09685)
    dora           one DoRA adapter, use_dora=True: a magnitude per output feature beside A and B, and the row
                   norms ‖W + ΔW‖ recomputed every forward (DoRA, arXiv 2402.09353)
    two-adapters   two plain LoRA adapters, "first" and "second", both active and both training: every targeted
                   layer adds first's branch, then second's (lc.add_adapter + lc.set_adapter(model, [first, second]);
                   PEFT: add_adapter, then the tuner's set_adapter([...]), as PeftModel.set_adapter takes one name).
                   Not "a" and "b": PEFT warns about any name inside its "lora_" prefix

Both libraries start from their default init (B = 0), so the first step's loss is the base model's; the tests load
our factors into PEFT's model and compare losses over several steps, so the steps timed are the same computation.
"""

from __future__ import annotations

import weakref

import torch
import torch.nn as nn

from ..adapters import add_adapter, set_adapter
from ..config import LoraConfig
from ..inject import inject_lora

ADAPTERS = ("lora", "dora", "two-adapters")
TARGETS = {"c_attn": ["c_attn"], "all-linear": "all-linear"}  # distilgpt2: all-linear = c_attn+c_proj+c_fc
TWO_ADAPTERS = ("first", "second")  # the names of the two active adapters of "two-adapters"


def check_adapter(adapter: str) -> None:
    if adapter not in ADAPTERS:
        raise ValueError(f"adapters=[{adapter!r}] is not allowed: choose from {', '.join(ADAPTERS)}")


def ours_model(model: nn.Module, targets: str, r: int, alpha: float, adapter: str = "lora") -> nn.Module:
    """`model` (a shared base copy) with lora_core's `adapter` injected in place, its factors training."""
    check_adapter(adapter)
    cfg = LoraConfig(r=r, lora_alpha=alpha, target_modules=TARGETS[targets], use_dora=adapter == "dora")
    if adapter != "two-adapters":
        inject_lora(model, cfg)
        return model
    first, second = TWO_ADAPTERS
    inject_lora(model, cfg, adapter_name=first)
    add_adapter(model, second, cfg)            # added frozen and inactive, as in PEFT
    set_adapter(model, [first, second])        # both active, both training
    return model


def peft_model(model: nn.Module, targets: str, r: int, alpha: float, adapter: str = "lora") -> nn.Module:
    """PEFT's model for the same `adapter` (raises ImportError without PEFT, a test dependency only)."""
    check_adapter(adapter)
    from peft import LoraConfig as PeftLoraConfig
    from peft import get_peft_model
    from transformers.pytorch_utils import Conv1D

    conv1d = any(isinstance(m, Conv1D) for m in model.modules())

    def config() -> PeftLoraConfig:  # a fresh one per adapter: PEFT writes into the config it is given
        return PeftLoraConfig(r=r, lora_alpha=alpha, target_modules=TARGETS[targets], lora_dropout=0.0,
                              fan_in_fan_out=conv1d, use_dora=adapter == "dora")

    if adapter != "two-adapters":
        return get_peft_model(model, config())
    first, second = TWO_ADAPTERS
    wrapped = get_peft_model(model, config(), adapter_name=first)
    wrapped.add_adapter(second, config())
    wrapped.base_model.set_adapter([first, second])  # the tuner's set_adapter: several names, all trainable
    return wrapped


class _Saved:
    """A saved tensor as autograd holds it; a weak reference to this box tells whether the graph still does."""

    __slots__ = ("__weakref__", "tensor")

    def __init__(self, tensor: torch.Tensor) -> None:
        self.tensor = tensor


def saved_activation_bytes(model: nn.Module, ids: torch.Tensor) -> int:
    """Bytes autograd keeps for the backward after one forward and the LM loss: the activation memory of a step.

    Every tensor the forward saves goes through a saved-tensors hook into a box; boxes of graph pieces that are
    already gone (a detached norm, as DoRA's ‖W + ΔW‖) die with them, so only what the backward will read is
    counted. Each storage counts once (views share it), and the model's own weights and buffers not at all.
    """
    own = {t.untyped_storage().data_ptr() for t in (*model.parameters(), *model.buffers())}
    boxes: list = []

    def pack(tensor: torch.Tensor) -> _Saved:
        box = _Saved(tensor)
        boxes.append(weakref.ref(box))
        return box

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda box: box.tensor):
        loss = model(input_ids=ids, labels=ids).loss
    storages = {}
    for ref in boxes:
        box = ref()
        if box is not None:
            storage = box.tensor.untyped_storage()
            if storage.data_ptr() not in own:
                storages[storage.data_ptr()] = storage.nbytes()
    del loss  # the graph (and every box) goes now; no backward was run, so no gradient changed
    return sum(storages.values())
