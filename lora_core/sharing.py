"""One frozen base, many adapters: a per-session model tree that shares the base's tensors.

A server loads a model once (e.g. under Streamlit's `st.cache_resource`) and must never mutate it.
Each session calls `shared_base_copy(base)` and injects its own LoRA into the copy:

  * every parameter of the copy is a *new* `nn.Parameter` object viewing the *same* storage,
    so the copy costs no weight memory and its requires_grad flags are its own;
  * lora_core never writes a base tensor in place: merge and PiSSA swap in new tensors, and a
    base bias made trainable (bias="all"/"lora_only") is cloned first (copy on train).
"""

from __future__ import annotations

import copy

import torch.nn as nn


def shared_base_copy(model: nn.Module) -> nn.Module:
    """A copy of `model`'s module tree whose parameters share storage with `model`'s (frozen).

    Buffers are copied (they are small); tied weights stay tied in the copy.
    """
    memo = {id(p): nn.Parameter(p.data, requires_grad=False) for p in model.parameters()}
    return copy.deepcopy(model, memo)


def shares_storage(a: nn.Module, b: nn.Module) -> int:
    """How many parameters of `a` share storage with a parameter of `b` (for tests and memory notes)."""
    ptrs = {p.data_ptr() for p in b.parameters()}
    return sum(p.data_ptr() in ptrs for p in a.parameters())
