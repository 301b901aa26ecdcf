"""DoRA inside a LoRA layer: the magnitude vector, the forward and the merge, with PEFT 0.21's semantics.

DoRA (Liu et al. 2024, arXiv 2402.09353) trains a magnitude m beside A and B: W' = m * (W + ΔW) / ‖W + ΔW‖, one
entry of m per output feature. dora.py holds the math as pure tensor functions; this file is where a LoraLayer meets
it (peft/tuners/lora/variants.py: DoraLinearVariant, DoraEmbeddingVariant, DoraConv2dVariant):

    lora_magnitude_vector[name].weight    m: (out,), or (1, out, 1, 1) for Conv2d, as in PEFT's state_dict
                                          (`c_attn.lora_magnitude_vector.default.weight`)

m starts at ‖W + ΔW‖ (after the factors' init), so W' = W + ΔW at step 0. With s = m / ‖W + ΔW‖ (norm detached,
paper §4.3) the forward adds, on top of `result` (the base output plus the adapters before this one, as PEFT):

    literal (PEFT as written):  result + (s - 1) * (result - b) + s * lora_B(lora_A(x)) * scaling
    cheap   (same numbers):     s * (result + scaling * (x Aᵀ) Bᵀ) + (1 - s) * b

The cheap form is the literal one regrouped: one addmm and one addcmul instead of six (N, out) passes. It needs
`result` itself, so it runs only when dropout is off (eval, or p = 0): with dropout PEFT feeds x̃ = dropout(x) to a
recomputed W x̃ (a second product), and so does the literal form here. On a LoraLinear, `forward_path` picks:
"plain" the literal form, "addmm" the cheap one, "one-node" (the default) FusedDoraLinear where fused.py's
one-node rules hold (CPU, enough tokens, no hooks, one adapter) and the cheap form elsewhere. Tests pin all three
to PEFT, gradients included. Measured on one CPU thread (Linear 576 -> 576, 8 x 128 tokens, r = 8, forward +
backward, tests/test_peft_oracle_dora.py prints it): one-node 0.6-0.7x PEFT's time, addmm 0.7-0.8x, plain ~1x.
‖W + ΔW‖ is built as PEFT builds it (W + scaling · B @ A in one addmm, then the row norms): expanding it as
‖W‖² + 2 B·(W Aᵀ) + ‖ΔW‖² would save one (out, in) pass, about 1% of a step, for a less exact number.

Merging folds m / ‖W + ΔW‖ (norm of the *unmerged* W, as the forward sees it) into the new weight; the layer keeps
W itself, so unmerging is exact (dora.unmerged_weight is PEFT's inexact way back).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torch.nn as nn
import torch.nn.functional as F

from . import dora
from .fused import has_hooks, one_node_applies

if TYPE_CHECKING:
    from .layers import Adapter, LoraLayer

Tensor = torch.Tensor


class Magnitude(nn.Module):
    """DoRA's m of one adapter, held as `weight` in a module (PEFT's DoraLinearLayer) so the state_dict keys match."""

    def __init__(self, magnitude: Tensor):
        super().__init__()
        self.weight = nn.Parameter(magnitude)

    def extra_repr(self) -> str:
        return f"magnitude={tuple(self.weight.shape)}"


def unmerged_weight(layer: LoraLayer) -> Tensor:
    """W as (out, in) (Conv2d: (out, in, kh, kw)), unmerged: Conv1D's and Embedding's stored transposes undone."""
    w = layer.original_weight()
    return w.T if layer.fan_in_fan_out else w


def add_magnitude(layer: LoraLayer, name: str) -> None:
    """Give adapter `name` its magnitude m = ‖W + ΔW‖ (PEFT's DoraLinearLayer.update_layer), from its factors as they
    start; trainable like A and B until the caller decides (set_adapter)."""
    a = layer.adapter(name)
    m = dora.initial_magnitude(unmerged_weight(layer), a.B, a.A, a.scaling)  # (out,), in W's dtype, as PEFT
    if isinstance(layer.base_layer, nn.Conv2d):
        m = m.view(1, -1, 1, 1)  # PEFT keeps a conv's m as (1, out, 1, 1)
    layer.lora_magnitude_vector[name] = Magnitude(m.to(a.A.dtype))  # the adapter's dtype (fp32 on a bf16 base)


def scale(layer: LoraLayer, a: Adapter, dtype: torch.dtype) -> Tensor:
    """s = m / ‖W + ΔW‖, shape (out,), the norm computed in `dtype` and detached: only m gets a gradient here."""
    return dora.magnitude_scale(a.magnitude, weight_norm(layer, a, dtype))


def weight_norm(layer: LoraLayer, a: Adapter, dtype: torch.dtype) -> Tensor:
    """‖W + scaling · B @ A‖ per output feature, (out,), in `dtype`, without a graph (PEFT detaches it)."""
    with torch.no_grad():
        w = unmerged_weight(layer).to(dtype)
        B, A = a.B.flatten(1), a.A.flatten(1)
        if w.dim() == 2 and B.dtype == A.dtype == dtype:  # W + scaling · (B @ A) in one addmm
            return torch.linalg.vector_norm(torch.addmm(w, B, A, alpha=a.scaling), dim=1)
        lora_weight = (B @ A).to(dtype)  # (out, r) @ (r, in) -> (out, in)
        return dora.weight_norm(w, a.scaling * lora_weight.view(w.shape))


# --- forward -------------------------------------------------------------------------------------------------------
def forward(layer: LoraLayer, x: Tensor, result: Tensor, name: str) -> Tensor:
    """`result` with DoRA adapter `name` applied, in the wider dtype (the layer rounds once, at the end).

    `result` is base_layer(x) plus the adapters before this one: DoRA rescales all of it but the bias, as PEFT's
    Linear.forward passes its running result to the variant (and as PEFT's merge of several adapters does).
    """
    a = layer.adapter(name)
    if isinstance(layer.base_layer, nn.Embedding):
        return _embedding_forward(layer, x, result, a)
    x = x.to(a.A.dtype)  # PEFT's _cast_input_dtype: the adapter computes in its own dtype
    s = scale(layer, a, x.dtype)  # (out,)
    conv = isinstance(layer.base_layer, nn.Conv2d)
    if dora.dropout_is_active(a.dropout):
        x = a.dropout(x)
        base_out = _base_product(layer, x)  # W x̃ without the bias: the second product PEFT makes
    elif not conv and getattr(layer, "forward_path", "plain") != "plain" and not has_hooks(layer.lora_B[name]):
        return _cheap_forward(layer, x, result, a, s)
    else:
        bias = layer.base_layer.bias
        base_out = result if bias is None else result - (bias.view(1, -1, 1, 1) if conv else bias)
    lora_out = layer.lora_B[name](layer.lora_A[name](x))  # unscaled: PEFT multiplies by s first, then by scaling
    return result + dora.dora_extra(base_out, lora_out, s, a.scaling, channel_dim=1 if conv else -1)


def _cheap_forward(layer: LoraLayer, x: Tensor, result: Tensor, a: Adapter, s: Tensor) -> Tensor:
    """s * (result + scaling * (x Aᵀ) Bᵀ) + (1 - s) * b: the literal form without dropout, regrouped.

    result + (s - 1)(result - b) + s·scaling·h Bᵀ = s·(result + scaling·h Bᵀ) + (1 - s)·b. One addmm writes
    result + scaling·h Bᵀ (B's GEMM, its scale and the add), one addcmul the rest; autograd's backward of the two
    touches the (N, out) gradient twice (g·s for z, Σ g·z for m) where PEFT's six ops touch it about ten times.
    """
    h = layer.lora_A[a.name](x)  # (..., in) @ Aᵀ -> (..., r); lora_A's hooks still run
    out = result.shape[-1]
    acc = result.reshape(-1, out)
    acc = acc.to(torch.promote_types(acc.dtype, h.dtype))  # a bf16 base with fp32 factors: add in fp32
    z = torch.addmm(acc, h.reshape(-1, a.r), a.B.T, alpha=a.scaling)  # (N, out) + s · (N, r) @ (r, out)
    bias = layer.base_layer.bias
    y = z * s if bias is None else torch.addcmul((1 - s) * bias, z, s)  # the bias is not rescaled: b + s·(z - b)
    return y.view(*result.shape[:-1], out)


def _base_product(layer: LoraLayer, x: Tensor) -> Tensor:
    """The base layer's product without its bias, on the dropped-out input (the current weight, merged or not)."""
    b = layer.base_layer
    w = b.weight.to(x.dtype)
    if isinstance(b, nn.Conv2d):  # like PEFT it ignores a non-zeros padding_mode
        return F.conv2d(x, w, None, b.stride, b.padding, b.dilation, b.groups)  # (N, out, H, W)
    return F.linear(x, w.T if layer.fan_in_fan_out else w)  # (..., in) @ Wᵀ -> (..., out)


def _embedding_forward(layer: LoraLayer, x: Tensor, result: Tensor, a: Adapter) -> Tensor:
    """PEFT's DoraEmbeddingVariant: s * result + s * (a_x @ Bᵀ) * scaling; no dropout, no bias."""
    e = layer.base_layer
    s = scale(layer, a, torch.promote_types(e.weight.dtype, a.A.dtype))  # (dim,): the norm runs over the vocabulary
    after_a = F.embedding(x, a.A.T, e.padding_idx, e.max_norm, e.norm_type, e.scale_grad_by_freq, e.sparse)
    return s * result + s * (after_a @ a.B.T) * a.scaling  # (..., r) @ (r, dim) -> (..., dim)


def one_node_forward(layer: LoraLayer, x: Tensor) -> Tensor | None:
    """LoraLinear's whole output as one FusedDoraLinear node, or None where it would not be exact or not pay.

    Only for one active DoRA adapter on an unmerged layer, with dropout off, factors in x's dtype, and fused.py's
    one-node rules (a plain Linear/Conv1D base, CPU, enough tokens, no hooks, no autocast or tracing).
    """
    if not layer.lora_magnitude_vector or layer.disabled or layer.merged or layer.forward_path != "one-node":
        return None
    active = layer.branch_adapters()
    if len(active) != 1 or active[0] not in layer.lora_magnitude_vector:
        return None
    a = layer.adapter(active[0])
    if dora.dropout_is_active(a.dropout) or a.A.dtype != x.dtype or not one_node_applies(layer, x, a.name):
        return None
    b = layer.base_layer
    norm = weight_norm(layer, a, x.dtype)
    return FusedDoraLinear.apply(x, b.weight, b.bias, a.A, a.B, a.magnitude, norm, a.scaling, layer.fan_in_fan_out)


class FusedDoraLinear(torch.autograd.Function):
    """s ⊙ (x Wᵀ + scaling · (x Aᵀ) Bᵀ) + b as one autograd node, s = m / ‖W + ΔW‖ (the norm given, detached).

    Forward: the base GEMM writes z, one addmm_ adds the LoRA product into it, one addcmul writes the output.
    Backward: gz = g ⊙ s once; dm = Σ g ⊙ z / ‖W + ΔW‖; dx = gz W, then += dh A in place. Autograd over the cheap
    form makes about twice as many (N, out) passes (addcmul's backward alone multiplies by its value=1 twice).
    Saved: x (for A's or W's gradient), h = x Aᵀ (for B's), z (for m's), only where needed.
    """

    @staticmethod
    def forward(ctx, x, weight, bias, A, B, magnitude, norm, scaling: float, fan_in_fan_out: bool):
        x2 = x.reshape(-1, x.shape[-1])                             # (N, in)
        z = x2 @ (weight if fan_in_fan_out else weight.T)           # (N, in) @ (in, out) -> (N, out)
        h = x2 @ A.T                                                # (N, in) @ (in, r) -> (N, r)
        z.addmm_(h, B.T, alpha=scaling)                             # += scaling · (N, r) @ (r, out)
        s = magnitude / norm                                        # (out,)
        y = z * s if bias is None else torch.addcmul(bias, z, s)    # the bias is not rescaled
        _, need_w, _, need_A, need_B, need_m = ctx.needs_input_grad[:6]
        ctx.scaling, ctx.fan_in_fan_out, ctx.x_shape = scaling, fan_in_fan_out, x.shape
        ctx.save_for_backward(x2 if (need_w or need_A) else None, h if need_B else None, z if need_m else None,
                              s, norm, weight, A, B)
        return y.view(*x.shape[:-1], y.shape[-1])

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad):
        x2, h, z, s, norm, weight, A, B = ctx.saved_tensors
        need_x, need_w, need_bias, need_A, need_B, need_m = ctx.needs_input_grad[:6]
        g = grad.reshape(-1, grad.shape[-1])                        # (N, out)
        gz = g * s                                                  # the gradient of z
        dx = dw = dbias = dA = dB = dm = None
        dh = (gz @ B).mul_(ctx.scaling) if (need_x or need_A) else None  # (N, out) @ (out, r) -> (N, r)
        if need_m:
            dm = (g * z).sum(0) / norm                              # (out,)
        if need_bias:
            dbias = g.sum(0)
        if need_B:
            dB = (gz.T @ h).mul_(ctx.scaling)                       # (out, N) @ (N, r) -> (out, r)
        if need_A:
            dA = dh.T @ x2                                          # (r, N) @ (N, in) -> (r, in)
        if need_x:
            dx = gz @ (weight.T if ctx.fan_in_fan_out else weight)  # (N, out) @ (out, in) -> (N, in)
            dx = dx.addmm_(dh, A).view(ctx.x_shape)                 # += (N, r) @ (r, in)
        if need_w:
            dw = x2.T @ gz if ctx.fan_in_fan_out else gz.T @ x2
        return dx, dw, dbias, dA, dB, dm, None, None, None


# --- merge ---------------------------------------------------------------------------------------------------------
def merge_step(layer: LoraLayer, merged: Tensor, name: str) -> Tensor:
    """`merged` (fp32, in the base weight's layout) with DoRA adapter `name` folded in: m / ‖W + ΔW‖ * (merged + ΔW).

    The norm is of the unmerged W, as the forward sees it (PEFT 0.21's _unmerged_base_weight), so merging a plain
    adapter, then this one, gives the weight the forward computes with both active.
    """
    a = layer.adapter(name)
    delta = layer.delta_weight(name)  # fp32, (out, in[, kh, kw])
    norm = dora.weight_norm(unmerged_weight(layer).detach().float(), delta)  # (out,)
    factor = a.magnitude.detach().float().flatten() / norm  # (out,)
    if layer.fan_in_fan_out:  # stored (in, out): scale the columns
        return factor.view(1, -1) * (merged + delta.T)
    return factor.view(-1, *([1] * (merged.dim() - 1))) * (merged + delta)
