"""A mixed batch, row by row: each example of one batch picks its own adapter, or the bare base (PEFT's
`adapter_names=`). The layers' side; the model-level switch, `lc.mixed_batch`, is mixed.py.

    layer(x, adapter_names=["a", "__base__", "b", "a"])    # row i goes through adapter_names[i]

One base forward serves the whole batch; then each adapter's rows get that adapter's branch. The active
adapters play no part: the names decide. Each row is computed as that example's own single-adapter forward
would be (base + branch in the wider dtype, rounded once), so a mixed row equals a separate run bit for bit,
in bf16 too. PEFT rounds each adapter's branch to the base dtype before adding it (peft/tuners/lora/layer.py,
`_mixed_batch_forward`), so its bf16 rows can differ from its own single-adapter forward by one rounding.

A module saved in full (modules_to_save) sends each row through its adapter's copy, or through the original
module for "__base__" and for an adapter that saves no copy of it.

layers.py and inject.py call this module, so it imports neither (only for type hints).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torch.nn as nn

if TYPE_CHECKING:
    from .inject import ModulesToSaveWrapper
    from .layers import LoraLayer

BASE = "__base__"  # PEFT's name for "no adapter" in adapter_names


def check_names(adapter_names: list[str]) -> None:
    """A list (or tuple) of names. A str is refused: PEFT takes "ab" as the names ["a", "b"]."""
    if isinstance(adapter_names, str) or not isinstance(adapter_names, (list, tuple)) \
            or not all(isinstance(n, str) for n in adapter_names):
        raise ValueError(f"adapter_names={adapter_names!r} must be a list with one adapter name per example "
                         f"(or {BASE!r} for the base alone)")


def check_length(x: torch.Tensor, adapter_names: list[str]) -> None:
    if len(adapter_names) != len(x):
        raise ValueError(f"adapter_names has {len(adapter_names)} names but the batch has {len(x)} examples: "
                         "give exactly one name per example")


def check_mixed_batch(layer: LoraLayer, x: torch.Tensor, adapter_names: list[str]) -> None:
    """PEFT's checks (`_check_forward_args`): one name per example, nothing merged, no DoRA."""
    check_names(adapter_names)
    check_length(x, adapter_names)
    if layer.merged:
        raise ValueError(f"adapter_names cannot be used while adapters are merged ({layer.merged_adapters}): "
                         "unmerge first")
    dora = [n for n in dict.fromkeys(adapter_names) if n in layer.lora_magnitude_vector]
    if dora:
        raise ValueError(f"adapter_names names {dora}, adapter(s) with use_dora=True: a mixed batch is allowed "
                         "for plain LoRA adapters only (as in PEFT)")


def mixed_batch_forward(layer: LoraLayer, x: torch.Tensor, adapter_names: list[str], *args, **kwargs) -> torch.Tensor:
    """base_layer(x), plus for each example i the branch of adapter_names[i] (none for "__base__", or for a
    name this layer does not hold)."""
    check_mixed_batch(layer, x, adapter_names)
    result = layer.base_layer(x, *args, **kwargs)
    if layer.disabled:
        return result
    for name in dict.fromkeys(adapter_names):  # each adapter once, in order of first appearance
        if name == BASE or name not in layer.r:
            continue
        rows = torch.tensor([i for i, n in enumerate(adapter_names) if n == name], device=result.device)
        # (k, ...) rows of this adapter: base + branch in the wider dtype, rounded once
        mixed = (result[rows] + layer.lora_branch(x[rows], name)).to(result.dtype)
        result = result.index_copy(0, rows, mixed)  # out of place: autograd and the base's output stay intact
    return result


# --- modules saved in full -------------------------------------------------------------------------------------
# The module types PEFT lets a mixed batch split by rows (utils/other.py, AuxiliaryTrainingWrapper
# `_mixed_batch_forward`): each row's output depends on that row alone.
ROW_WISE = (nn.Linear, nn.Embedding, nn.Conv1d, nn.Conv2d, nn.Conv3d)


def mixed_saved_forward(wrapper: ModulesToSaveWrapper, adapter_names: list[str], x: torch.Tensor,
                        *args, **kwargs) -> torch.Tensor:
    """Each example i through adapter_names[i]'s copy of the module; "__base__" and adapters without a copy
    through the original.

    PEFT 0.21 differs (utils/other.py, `AuxiliaryTrainingWrapper.forward` and `_mixed_batch_forward`): a row
    naming an adapter without a copy raises KeyError; rows follow their own names here, as in the LoRA layers.
    And PEFT raises a TypeError for a module outside ROW_WISE even when every row runs one module; here only
    a batch that would split its rows is refused.
    """
    check_names(adapter_names)
    check_length(x, adapter_names)
    if wrapper.disabled:
        return wrapper.original_module(x, *args, **kwargs)
    groups: dict[nn.Module, list[int]] = {}  # module -> the rows it runs, in order of first appearance
    for i, name in enumerate(adapter_names):
        module = wrapper.modules_to_save[name] if name in wrapper.modules_to_save else wrapper.original_module
        groups.setdefault(module, []).append(i)
    if len(groups) == 1:  # every row runs one module: no split, exactly that module's forward
        return next(iter(groups))(x, *args, **kwargs)
    if not isinstance(wrapper.original_module, ROW_WISE):
        raise ValueError(f"adapter_names={list(adapter_names)!r} sends rows through different copies of a "
                         f"{type(wrapper.original_module).__name__} saved in full; a mixed batch can split rows "
                         f"only for {', '.join(t.__name__ for t in ROW_WISE)} modules (as in PEFT), whose rows "
                         "are independent")
    result = None
    for module, rows in groups.items():
        index = torch.tensor(rows, device=x.device)
        out = module(x[index], *args, **kwargs)  # (k, ...) the rows of this module
        if result is None:
            result = out.new_empty((len(x), *out.shape[1:]))
        result = result.index_copy(0, index, out)  # out of place: autograd sees every row
    return result
