"""The measured fast paths of LoraLinear's forward: the same numbers as the plain formula, sooner.

    plain:    base_layer(x) + lora_B(lora_A(lora_dropout(x))) * scaling        (layers.py, as written)
    addmm:    base_layer(x), then B's GEMM, the scale and the add in one addmm
    one-node: base GEMM and LoRA branch as a single autograd node (FusedLoraLinear), on CPU

`forward(layer, x)` picks the fastest one that is exact for this input, or returns None to let the
plain formula run. `layer.forward_path = "plain"` is the one switch that turns all of this off.
docs/performance.md has each path's measurements; tests pin every path to the plain formula,
gradients included.
"""

from __future__ import annotations

import torch
import torch.nn as nn
from transformers.pytorch_utils import Conv1D


class FusedLoraLinear(torch.autograd.Function):
    """base(x) + scaling · (x' Aᵀ) Bᵀ as one autograd node, x' = dropout(x) or x itself.

    Forward: the base GEMM writes the output, then one addmm_ adds s · h Bᵀ into it in place (h = x' Aᵀ
    is (N, r)). Backward: dx = g Wᵀ, then dx += dh A in place, instead of two (N, in) tensors summed by
    autograd. Saved: only what the backward reads. The base input x when W or A needs a gradient (a frozen
    W and a frozen A, as in LoRA-FA, keep no x), the r-wide h when B does, and x' only when dropout made
    it a different tensor. With a bf16 base and fp32 factors the LoRA half
    runs in fp32 and x is recast in the backward instead of keeping an fp32 copy alive.
    """

    @staticmethod
    def forward(ctx, x, xa, weight, bias, A, B, scaling: float, fan_in_fan_out: bool):
        x2 = x.reshape(-1, x.shape[-1])                                      # (N, in)
        xa2 = x2.to(A.dtype) if xa is None else xa.reshape(-1, xa.shape[-1])  # the LoRA input, (N, in)
        w = weight if fan_in_fan_out else weight.T                           # (in, out) either way
        out = x2 @ w if bias is None else torch.addmm(bias, x2, w)           # (N, out): the base layer
        h = xa2 @ A.T                                                        # (N, in) @ (in, r) -> (N, r)
        if out.dtype == h.dtype:
            out.addmm_(h, B.T, alpha=scaling)                                # += s · (N, r) @ (r, out)
        else:  # add in the wider dtype and round once, as `result + branch` then `.to(result.dtype)`
            out = out.to(h.dtype).addmm_(h, B.T, alpha=scaling).to(out.dtype)
        ctx.scaling, ctx.fan_in_fan_out = scaling, fan_in_fan_out
        ctx.x_shape, ctx.xa_shape = x.shape, None if xa is None else xa.shape
        # Keep only what the backward will read: x for W's or A's gradient (a frozen W and a frozen A, as
        # in LoRA-FA, need no copy of x), x' for A's when dropout made it, h for B's.
        need_w, need_A, need_B = ctx.needs_input_grad[2], ctx.needs_input_grad[4], ctx.needs_input_grad[5]
        keep_x = need_w or (need_A and xa is None)
        keep_xa = need_A and xa is not None
        ctx.save_for_backward(x2 if keep_x else None, xa2 if keep_xa else None, h if need_B else None, weight, A, B)
        return out.view(*x.shape[:-1], out.shape[-1])

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad):
        x2, xa2, h, weight, A, B = ctx.saved_tensors
        need_x, need_xa, need_w, need_bias, need_A, need_B = ctx.needs_input_grad[:6]
        s = ctx.scaling
        g = grad.reshape(-1, grad.shape[-1])                                 # (N, out)
        ga = g.to(B.dtype)                                                   # the LoRA half's dtype (a no-op if equal)
        dx = dxa = dw = dbias = dA = dB = None
        dh = (ga @ B).mul_(s) if (need_x or need_xa or need_A) else None     # (N, out) @ (out, r) -> (N, r)
        if need_B:
            dB = (ga.T @ h).mul_(s)                                          # (out, N) @ (N, r) -> (out, r)
        if need_A:
            dA = dh.T @ (x2.to(A.dtype) if xa2 is None else xa2)             # (r, N) @ (N, in) -> (r, in)
        if need_x:
            dx = g @ (weight.T if ctx.fan_in_fan_out else weight)            # (N, out) @ (out, in) -> (N, in)
            if ctx.xa_shape is None:  # the branch read x itself: add its share in place
                if dx.dtype == dh.dtype:
                    dx.addmm_(dh, A)                                         # += (N, r) @ (r, in)
                else:
                    dx += (dh @ A).to(dx.dtype)
            dx = dx.view(ctx.x_shape)
        if need_xa:
            dxa = (dh @ A).view(ctx.xa_shape)
        if need_w:
            dw = x2.T @ g if ctx.fan_in_fan_out else g.T @ x2
        if need_bias:
            dbias = g.sum(0)
        return dx, dxa, dw, dbias, dA, dB, None, None


FORWARD_PATHS = ("one-node", "addmm", "plain")
ONE_NODE_MIN_TOKENS = 64  # measured crossover on CPU: slower at 16 tokens, about break-even at 64, ahead from 256
FUSABLE_BASES = (nn.Linear, Conv1D)  # exact types: a subclass (or NF4Linear) may compute something else
# torch has no public reader for registered hooks: the module's own dicts, and the global ones that
# torch.nn.modules.module.register_module_forward_hook & co. fill (module-level, mutated in place).
GLOBAL_HOOKS = tuple(h for h in (getattr(nn.modules.module, name, None) for name in (
    "_global_forward_hooks", "_global_forward_pre_hooks", "_global_backward_hooks", "_global_backward_pre_hooks"))
    if h is not None)


def tracing(x: torch.Tensor) -> bool:
    """Under torch.compile or FX symbolic tracing, where the compiler fuses the plain ops itself."""
    return torch.compiler.is_compiling() or isinstance(x, torch.fx.Proxy)


def has_hooks(module: nn.Module) -> bool:
    """Whether a forward/backward hook would see `module` being called (its own or a global one)."""
    return bool(module._forward_hooks or module._forward_pre_hooks or module._backward_hooks
                or module._backward_pre_hooks) or any(GLOBAL_HOOKS)


def one_node_applies(layer, x: torch.Tensor, name: str) -> bool:
    """Whether the one-node path computes exactly what the plain formula would, and pays.

    Exact: only for a plain nn.Linear / Conv1D base (not a subclass, not NF4) that no hook watches (nor
    adapter `name`'s modules),
    outside torch.compile / FX tracing and autocast. Pays: measured on CPU only, and only from
    ONE_NODE_MIN_TOKENS tokens up; below that its Python backward costs more than it saves.
    """
    base = layer.base_layer
    if (type(base) not in FUSABLE_BASES or x.device.type != "cpu" or x.dtype != base.weight.dtype
            or x.numel() < ONE_NODE_MIN_TOKENS * x.shape[-1]):
        return False
    if any(has_hooks(m) for m in (base, layer.lora_A[name], layer.lora_B[name], layer.lora_dropout[name])):
        return False
    return not (torch.is_autocast_enabled(x.device.type) or tracing(x))


def forward(layer, x: torch.Tensor) -> torch.Tensor | None:
    """LoraLinear's output by its fastest exact path, or None where the plain formula must run.

    Only for exactly one active plain-LoRA adapter on an unmerged layer: None when the layer is disabled or
    merged, when several adapters (or none) are active, when the adapter is DoRA (dora_layer.py has its own
    cheap form), under torch.compile or FX tracing (the compiler fuses the plain ops itself, measured ~1%
    faster there), or when a hook on lora_B must see it called.
    """
    if layer.disabled or layer.merged or layer.forward_path == "plain" or tracing(x):
        return None
    active = [n for n in layer.active_adapters if n in layer.r]
    if len(active) != 1 or active[0] in layer.lora_magnitude_vector or has_hooks(layer.lora_B[active[0]]):
        return None
    a = layer.adapter(active[0])
    if layer.forward_path == "one-node" and one_node_applies(layer, x, a.name):
        base = layer.base_layer
        # Dropout hits only the LoRA input; without it (p = 0, or eval mode) the branch reads x itself.
        dropout = layer.training and not isinstance(a.dropout, nn.Identity)
        xa = a.dropout(x.to(a.A.dtype)) if dropout else None
        return FusedLoraLinear.apply(x, xa, base.weight, base.bias, a.A, a.B, a.scaling, layer.fan_in_fan_out)
    return addmm_forward(layer, x, a.name)


def addmm_forward(layer, x: torch.Tensor, name: str) -> torch.Tensor:
    """base(x) + scaling · B(A(dropout(x))) with B's GEMM, the scale and the add fused into one addmm.

    The plain formula makes two (..., out) temporaries, B's output and its scaled copy, then a third for
    the sum, and its backward multiplies the (..., out) gradient by the scale once more. One
    addmm(result, h, Bᵀ, alpha=scaling) writes the sum directly; its backward hands `result` the gradient
    as is and puts the scale on r-wide tensors. Same values (to rounding), same gradients, the same
    tensors saved (x, shared with the base layer, and the r-wide h).
    """
    a = layer.adapter(name)
    result = layer.base_layer(x)
    h = layer.lora_A[name](a.dropout(x.to(a.A.dtype)))  # (..., r); lora_A's hooks still run
    acc, h = result.reshape(-1, layer.out_features), h.reshape(-1, a.r)  # (N, out), (N, r)
    if acc.dtype != h.dtype:  # a bf16 base with fp32 factors: add in the wider dtype, as `result + branch`
        acc = acc.to(torch.promote_types(acc.dtype, h.dtype))
    out = torch.addmm(acc, h, a.B.T, alpha=a.scaling)  # (N, out) + s · (N, r) @ (r, out)
    return out.view(result.shape).to(result.dtype)
