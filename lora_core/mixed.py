"""A mixed batch: each example of one batch picks its own adapter, or the bare base (PEFT's `adapter_names=`).

    layer(x, adapter_names=["a", "__base__", "b", "a"])    # row i goes through adapter_names[i]

One base forward serves the whole batch; then each adapter's rows get that adapter's branch. The active
adapters play no part: the names decide. Each row is computed as that example's own single-adapter forward
would be (base + branch in the wider dtype, rounded once), so a mixed row equals a separate run bit for bit,
in bf16 too. PEFT rounds each adapter's branch to the base dtype before adding it (peft/tuners/lora/layer.py,
`_mixed_batch_forward`), so its bf16 rows can differ from its own single-adapter forward by one rounding.

The model-level switch (a forward pre-hook on every LoRA layer) is `mixed_batch`, further down.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from .layers import LoraLayer

BASE = "__base__"  # PEFT's name for "no adapter" in adapter_names


def check_mixed_batch(layer: LoraLayer, x: torch.Tensor, adapter_names: list[str]) -> None:
    """PEFT's checks (`_check_forward_args`): one name per example, nothing merged, no DoRA."""
    if isinstance(adapter_names, str) or not isinstance(adapter_names, (list, tuple)):
        raise ValueError(f"adapter_names={adapter_names!r} must be a list with one adapter name per example "
                         f"(or {BASE!r} for the base alone)")
    if len(adapter_names) != len(x):
        raise ValueError(f"adapter_names has {len(adapter_names)} names but the batch has {len(x)} examples: "
                         "give exactly one name per example")
    if layer.merged:
        raise ValueError(f"adapter_names cannot be used while adapters are merged ({layer.merged_adapters}): "
                         "unmerge first")
    dora = [n for n in dict.fromkeys(adapter_names) if n in layer.lora_magnitude_vector]
    if dora:
        raise ValueError(f"adapter_names names the DoRA adapter(s) {dora}: a mixed batch is allowed for plain "
                         "LoRA adapters only (as in PEFT)")


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
