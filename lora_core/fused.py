"""The one-node LoRA forward on CPU: base layer and LoRA branch as a single autograd node.

`LoraLinear.forward` calls `FusedLoraLinear.apply` where that is exact and measured to pay (a plain
nn.Linear / Conv1D base on CPU, from ONE_NODE_MIN_TOKENS tokens, no hooks, no autocast, no tracing);
docs/performance.md has the measurements. Tests pin it to the plain formula, gradients included.
"""

from __future__ import annotations

import torch
import torch.nn as nn
from transformers.pytorch_utils import Conv1D


class FusedLoraLinear(torch.autograd.Function):
    """base(x) + scaling · (x' Aᵀ) Bᵀ as one autograd node, x' = dropout(x) or x itself.

    Forward: the base GEMM writes the output, then one addmm_ adds s · h Bᵀ into it in place (h = x' Aᵀ
    is (N, r)). Backward: dx = g Wᵀ, then dx += dh A in place, instead of two (N, in) tensors summed by
    autograd. Saved: the base input x (autograd saves it for the base GEMM anyway), the r-wide h, and
    x' only when dropout made it a different tensor. With a bf16 base and fp32 factors the LoRA half
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
        ctx.save_for_backward(x2, None if xa is None else xa2, h, weight, A, B)
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


ONE_NODE_MIN_TOKENS = 64  # measured crossover on CPU: slower at 16 tokens, about break-even at 64, ahead from 256
FUSABLE_BASES = (nn.Linear, Conv1D)  # exact types: a subclass (or NF4Linear) may compute something else
fx_tracing = getattr(torch.fx._symbolic_trace, "is_fx_symbolic_tracing", lambda: False)  # symbolic_trace only

# torch keeps global module hooks in module-level dicts that it mutates in place; bind them once.
GLOBAL_HOOKS = tuple(h for h in (getattr(nn.modules.module, name, None) for name in (
    "_global_forward_hooks", "_global_forward_pre_hooks", "_global_backward_hooks", "_global_backward_pre_hooks"))
    if h is not None)


def has_hooks(module: nn.Module) -> bool:
    """Whether a forward/backward hook would see `module` being called (its own or a global one)."""
    return bool(module._forward_hooks or module._forward_pre_hooks or module._backward_hooks
                or module._backward_pre_hooks) or any(GLOBAL_HOOKS)
