"""DoRA as pure tensor functions, with PEFT 0.21's semantics (peft/tuners/lora/dora.py and variants.py).

DoRA (Liu et al. 2024, arXiv 2402.09353, eq. 5) splits the adapted weight into a magnitude and a direction:

    W' = m * (W + ΔW) / ‖W + ΔW‖_c        ΔW = B @ A * scaling, all (out, in) like nn.Linear

The paper writes W as (in, out) = (d, k) and takes the norm of each of its k columns: the weights feeding one
output feature. In torch's (out, in) layout those are the rows, so the norm runs over dim 1 (over dims 1, 2, 3 of
a conv's (out, in, kh, kw) weight) and m has one entry per output feature.

PEFT never builds W'. It adds an extra term to the base output (s = m / ‖W + ΔW‖, one number per output feature):

    h = result + (s - 1) * base + s * lora_B(lora_A(x̃)) * scaling          (Linear, Conv)
    h = s * result + s * lora_B(lora_A(x)) * scaling                         (Embedding: no dropout, no bias)

`result` is base_layer(x) with its bias; `base` is the same product without the bias. Without dropout
s*W x + b + s*ΔW x equals W' x + b (up to rounding). With dropout active PEFT feeds x̃ = dropout(x) to both the
LoRA branch and `base`, which it then recomputes as W x̃ (a second matmul), while `result` keeps W x + b.

‖W + ΔW‖ is detached (paper §4.3: "treat ‖V + ΔV‖_c as a constant"): A and B get gradients only through the
LoRA branch, m through s. Functions here take (out, in) weights; a caller with GPT-2's Conv1D passes W.T, and one
with an embedding passes its (num_embeddings, dim) table transposed, since PEFT treats it as a fan_in_fan_out layer.
The LoRA layers use them through dora_layer.py (`LoraConfig(use_dora=True)`).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

Tensor = torch.Tensor


# --- the norm and the magnitude ------------------------------------------------------------------------------------
def weight_norm(weight: Tensor, delta: Tensor) -> Tensor:
    """‖W + ΔW‖ for each output feature: shape (out,), in the dtype W + ΔW promotes to.

    `weight` and `delta` are (out, in) or a conv's (out, in, kh, kw). The L2 norm runs over every dim but the
    first: the inputs feeding one output feature (PEFT: linalg.norm(dim=1) for Linear, norm(dim=(1, 2, 3)) for
    Conv2d; both are this vector norm). It is not detached here, so a test can build the undetached variant.
    """
    if weight.shape != delta.shape:
        raise ValueError(f"delta has shape {tuple(delta.shape)}: it must match weight's {tuple(weight.shape)}")
    combined = weight + delta  # (out, in): materialised, as PEFT does
    return torch.linalg.vector_norm(combined, dim=tuple(range(1, combined.dim())))


def initial_magnitude(weight: Tensor, lora_B: Tensor, lora_A: Tensor, scaling: float) -> Tensor:
    """m at creation: ‖W + ΔW‖, so that W' = W + ΔW at step 0 (the rows' ‖W‖ when B = 0). Shape (out,).

    `lora_B` (out, r) and `lora_A` (r, in) may be conv weights (flattened here). Computed as PEFT's
    DoraLinearLayer.update_layer computes it, in the *base weight's* dtype: when PEFT builds the magnitude it has
    just moved the factors to the base layer's dtype (they go to fp32 only afterwards, autocast_adapter_dtype), so
    a bf16 base gets a bf16 ΔW and a bf16 norm. fp16 factors are multiplied in fp32 and rounded back (PEFT's guard
    against fp16 matmuls on CPU). The caller stores the result as a trainable parameter in the adapter dtype;
    PEFT keeps a Conv2d's as (1, out, 1, 1), so view it so for state-dict compatibility.
    """
    w = weight.detach()
    B, A = lora_B.detach().flatten(1).to(w.dtype), lora_A.detach().flatten(1).to(w.dtype)
    if w.dtype == torch.float16:
        lora_weight = (B.float() @ A.float()).half()  # (out, r) @ (r, in) -> (out, in)
    else:
        lora_weight = B @ A  # (out, r) @ (r, in) -> (out, in)
    return weight_norm(w, scaling * lora_weight.view(w.shape))


def magnitude_scale(magnitude: Tensor, norm: Tensor) -> Tensor:
    """s = m / ‖W + ΔW‖, shape (out,), with the norm detached (paper §4.3): gradients reach m, not the norm.

    `magnitude` may be PEFT's (out,) or a conv's (1, out, 1, 1); gradients flow back into its own shape.
    """
    return magnitude.flatten() / norm.detach().flatten()


def dora_extra(base_result: Tensor, lora_result: Tensor, scale: Tensor, scaling: float,
               channel_dim: int = -1) -> Tensor:
    """(s - 1) * base_result + s * lora_result * scaling: what DoRA adds on top of the base layer's output.

    base_result: the base layer's product *without* bias (see the forward functions for which input it saw);
    lora_result: lora_B(lora_A(x̃)) *unscaled* (PEFT multiplies s * lora_result first, then scaling, and the order
    changes the last bit); scale: magnitude_scale(...), (out,). `channel_dim` is where the output features sit:
    -1 for Linear (..., out), 1 for Conv2d (N, out, H, W). Unlike PEFT's `.view(1, -1)`, an unbatched (out,)
    input keeps its shape.
    """
    if scale.numel() != base_result.shape[channel_dim]:
        raise ValueError(f"scale has {scale.numel()} entries: it must have one per output feature "
                         f"({base_result.shape[channel_dim]}, dim {channel_dim} of base_result)")
    shape = [1] * base_result.dim()
    shape[channel_dim] = -1
    s = scale.view(shape)  # broadcasts over every dim but the output features
    return (s - 1) * base_result + s * lora_result * scaling


def dropout_is_active(dropout: nn.Module | None) -> bool:
    """PEFT's test: dropout changes x only when it is a real module (not nn.Identity) in training mode.

    PEFT reads the LoRA layer's `training`; the dropout module's own flag is the same after model.train()/eval().
    """
    return dropout is not None and not isinstance(dropout, nn.Identity) and dropout.training


# --- forward, one function per layer type ---------------------------------------------------------------------------
def dora_linear_forward(x: Tensor, result: Tensor, weight: Tensor, bias: Tensor | None, lora_A: Tensor,
                        lora_B: Tensor, magnitude: Tensor, scaling: float,
                        dropout: nn.Module | None = None) -> Tensor:
    """PEFT's Linear.forward with DoraLinearVariant, one adapter: base_layer(x) plus the DoRA term.

    x (..., in); result = base_layer(x), bias included, (..., out); weight (out, in) (Conv1D: pass W.T; a quantized
    base: its dequantized W); lora_A (r, in), lora_B (out, r); magnitude (out,). `dropout` is the adapter's module.

    Dropout inactive: the base part is `result - bias`; no second product with W. Dropout active: x̃ = dropout(x)
    feeds the LoRA branch *and* a recomputed base part x̃ @ W.T (no bias), while `result` keeps W x + b, so
    h = W x + b + (s - 1) W x̃ + s * scaling * B A x̃, whose mean over masks is the merged layer's W' x + b.
    """
    x = x.to(lora_A.dtype)  # PEFT's _cast_input_dtype: the adapter computes in its own dtype
    active = dropout_is_active(dropout)
    if active:
        x = dropout(x)
    with torch.no_grad():  # PEFT detaches ΔW and then the norm: no graph is needed
        delta = scaling * (lora_B @ lora_A).to(x.dtype)  # (out, r) @ (r, in) -> (out, in)
        norm = weight_norm(weight.to(x.dtype), delta)    # (out,)
    lora_result = F.linear(F.linear(x, lora_A), lora_B)  # (..., in) @ A.T -> (..., r) @ B.T -> (..., out)
    if active:
        base = F.linear(x, weight.to(x.dtype))  # (..., in) @ W.T -> (..., out), without the bias
    else:
        base = result if bias is None else result - bias
    extra = dora_extra(base, lora_result, magnitude_scale(magnitude, norm), scaling)
    return (result + extra).to(result.dtype)


def dora_conv2d_forward(x: Tensor, result: Tensor, base_layer: nn.Conv2d, lora_A: nn.Module, lora_B: nn.Module,
                        magnitude: Tensor, scaling: float, dropout: nn.Module | None = None) -> Tensor:
    """PEFT's Conv2d forward with DoraConv2dVariant: the Linear rule, with the conv's own geometry.

    Modules, not tensors, because a conv's stride, padding, dilation and groups live in them. magnitude is PEFT's
    (1, out, 1, 1) or (out,). The norm runs over (in, kh, kw) for each output channel; the bias is taken off as
    (1, out, 1, 1). Under dropout the base part is F.conv2d(x̃, W) with the base's geometry; like PEFT it
    ignores a non-zeros padding_mode. W is cast to x̃'s dtype there (PEFT does not, and fails on a bf16 base).
    """
    weight = base_layer.weight  # (out, in, kh, kw)
    x = x.to(lora_A.weight.dtype)
    active = dropout_is_active(dropout)
    if active:
        x = dropout(x)
    with torch.no_grad():
        r = lora_A.weight.shape[0]
        lora_weight = lora_B.weight.view(-1, r) @ lora_A.weight.view(r, -1)  # (out, r) @ (r, in*kh*kw)
        norm = weight_norm(weight, scaling * lora_weight.view(weight.shape))  # (out,)
    if active:
        b = base_layer
        base = F.conv2d(x, weight.to(x.dtype), None, b.stride, b.padding, b.dilation, b.groups)  # (N, out, H, W)
    else:
        bias = base_layer.bias
        base = result if bias is None else result - bias.view(1, -1, 1, 1)
    extra = dora_extra(base, lora_B(lora_A(x)), magnitude_scale(magnitude, norm), scaling, channel_dim=1)
    return (result + extra).to(result.dtype)


def dora_embedding_forward(x: Tensor, result: Tensor, weight: Tensor, lora_A: Tensor, lora_B: Tensor,
                           magnitude: Tensor, scaling: float, embed: Callable[[Tensor, Tensor], Tensor] = F.embedding,
                           embed_scale: Tensor | None = None) -> Tensor:
    """PEFT's Embedding forward with DoraEmbeddingVariant: h = s * result + s * (a @ B.T) * scaling.

    x: token ids; result = base_layer(x) (..., dim); weight: the stored (num_embeddings, dim) table; lora_A
    (r, num_embeddings), lora_B (dim, r) as PEFT's lora_embedding_A/B; magnitude (dim,): one per embedding
    dimension, the norm running over the vocabulary (the table is a Linear from one-hot ids, stored (in, out)).
    `embed(ids, table)` looks rows up (pass the base's padding_idx etc.); `embed_scale` (Gemma-style embeddings)
    multiplies the DoRA part only, after the norm, because `result` already carries it. PEFT applies no dropout.
    """
    with torch.no_grad():
        delta = scaling * (lora_B @ lora_A)    # (dim, r) @ (r, num) -> (dim, num)
        norm = weight_norm(weight.T, delta)    # (dim,)
    scale = magnitude_scale(magnitude, norm)   # (dim,)
    lora_result = embed(x, lora_A.T) @ lora_B.T  # ids -> (..., r) @ (r, dim) -> (..., dim)
    extra = scale * lora_result * scaling
    if embed_scale is not None:
        extra = extra * embed_scale.to(extra.dtype)
    return (scale * result + extra).to(result.dtype)


# --- merge / unmerge ------------------------------------------------------------------------------------------------
def _factor(magnitude: Tensor, norm: Tensor, ndim: int) -> Tensor:
    """m / ‖W + ΔW‖ as a column (out, 1[, 1, 1]) that scales each output feature's row of W + ΔW."""
    return (magnitude.flatten() / norm.flatten()).view(-1, *([1] * (ndim - 1)))


def merged_weight(weight: Tensor, delta: Tensor, magnitude: Tensor, norm: Tensor | None = None) -> Tensor:
    """W' = m / ‖W + ΔW‖ * (W + ΔW) in weight's layout (out, in[, kh, kw]) and dtype: PEFT's DoRA merge.

    The norm is of the *unmerged* W, as the forward sees it; pass it in to reuse the one kept for unmerging.
    PEFT's Conv1D/Embedding merge works in the stored (in, out) layout: elementwise the same numbers, transposed.
    The bias is untouched: W' x + b is the unmerged forward exactly (without dropout).
    """
    with torch.no_grad():
        norm = weight_norm(weight, delta) if norm is None else norm
        return (_factor(magnitude, norm, weight.dim()) * (weight + delta)).to(weight.dtype)


def unmerged_weight(merged: Tensor, delta: Tensor, magnitude: Tensor, norm: Tensor) -> Tensor:
    """W = W' / (m / ‖W + ΔW‖) - ΔW: PEFT's DoRA unmerge. `norm` must be the one from merge time.

    The norm cannot be read back from W' (its rows have norm |m| whatever W was), which is why PEFT caches it at
    merge. Not bit-exact: W' was rounded to the weight dtype, and a divide and a subtract round again, so W comes
    back only to a few ulps of |W + ΔW| (bf16: ~1e-2 relative). Keeping the original W, as LoraLayer.merge does,
    is exact and cheaper.
    """
    with torch.no_grad():
        return (merged / _factor(magnitude, norm, merged.dim()) - delta).to(merged.dtype)
