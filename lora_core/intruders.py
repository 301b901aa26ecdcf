"""Intruder dimensions: singular vectors of a fine-tuned W + ΔW that match no singular vector of W.

    report = lc.intruder_dimensions(W, W + dW)              # which of the top 10 directions are new
    lc.reduce_intruder_dimension(model, mitigation_lambda=0.75)   # shrink them in every LoRA layer, in place

Shuttleworth et al. 2024, "LoRA vs Full Fine-tuning: An Illusion of Equivalence" (arXiv 2410.21228), found that
LoRA's updates bring in new high-ranking singular vectors, nearly orthogonal to every singular vector of the
pre-trained W ("intruder dimensions"), which full fine-tuning mostly does not, and that scaling them down recovers
some of what was forgotten. PEFT 0.21 implements the detection and the mitigation as
`peft.tuners.lora.intruders.reduce_intruder_dimension`; this module follows it step for step, with its defaults:

1. SVD of W and of W' = W + ΔW (in fp32); for each of W''s top `top_k` left singular vectors, its largest
   |cosine| with any left singular vector of W. Below `threshold_epsilon`, it is an intruder.
2. W'' = W' + (λ - 1) · Σ_intruders σ_i u_i v_iᵀ: each intruder's singular value is multiplied by λ
   (`mitigation_lambda`), so λ = 1 changes nothing and λ = 0 removes it. (PEFT's docstring calls λ "the portion
   subtracted"; its code, which we match, keeps λ of it.)
3. The new ΔW'' = W'' - W, divided by `scaling`, is cut back to rank r by its SVD and split evenly,
   B = U_r √S_r and A = √S_r V_rᵀ, so the layer's scaling still applies.

Two differences, both where PEFT would be wrong: W is the original weight even when the layer is merged (PEFT reads
the base layer's weight, which a merge has already changed), and the SVD is taken of W as (out, in) for every
layer type, so GPT-2's Conv1D gets factors of the right shapes (PEFT works in the stored (in, out) layout there and
writes a B of the wrong shape). On nn.Linear the two agree exactly; tests/test_intruders.py pins that against PEFT.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn

from .inject import adapter_layers, lora_layers
from .layers import LoraLayer

TOP_K, THRESHOLD_EPSILON, MITIGATION_LAMBDA = 10, 0.5, 0.75  # PEFT 0.21's defaults


@dataclass(frozen=True)
class IntruderReport:
    """What the detection found in one weight: the top-k directions' best match in W, and which are intruders."""

    best_cosine: list[float]   # for each of W''s top_k left singular vectors, max_j |<u'_i, u_j>|
    intruders: list[int]       # indices i (0-based, by singular value) whose best_cosine < threshold_epsilon
    singular_values: list[float]  # σ'_i of the top_k directions of W'


def _check(name: str, value, low: float, high: float | None = None, integer: bool = False) -> None:
    ok = not isinstance(value, bool) and isinstance(value, int if integer else (int, float))
    if not ok or value < low or (high is not None and value > high):
        allowed = f"an integer >= {low}" if integer else f"a number in [{low}, {high}]"
        raise ValueError(f"{name}={value!r} is not allowed: use {allowed}")


def _svd(W: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    return torch.linalg.svd(W.detach().float(), full_matrices=False)


def intruder_dimensions(W: torch.Tensor, W_tuned: torch.Tensor, top_k: int = TOP_K,
                        threshold_epsilon: float = THRESHOLD_EPSILON) -> IntruderReport:
    """Compare the top `top_k` left singular vectors of `W_tuned` with all of `W`'s (both (out, in))."""
    _check("top_k", top_k, 1, integer=True)
    _check("threshold_epsilon", threshold_epsilon, 0.0, 1.0)
    if W.shape != W_tuned.shape or W.ndim != 2:
        raise ValueError(f"W {tuple(W.shape)} and W_tuned {tuple(W_tuned.shape)} must be matrices of one shape")
    U, _, _ = _svd(W)                       # (out, k)
    U_t, S_t, _ = _svd(W_tuned)             # (out, k), (k,)
    best = (U_t.T @ U).abs().amax(dim=1)    # (k, out) @ (out, k) -> (k, k) -> best match of each u'_i
    best = best[:top_k]
    return IntruderReport(best.tolist(), torch.where(best < threshold_epsilon)[0].tolist(), S_t[:top_k].tolist())


def weight_out_in(layer: LoraLayer) -> torch.Tensor:
    """The layer's original W as (out, in), whatever its storage layout, merged or not."""
    W = layer.original_weight().detach().float()
    return W.T if layer.fan_in_fan_out else W


def reduced_factors(layer: LoraLayer, top_k: int = TOP_K, threshold_epsilon: float = THRESHOLD_EPSILON,
                    mitigation_lambda: float = MITIGATION_LAMBDA) -> tuple[torch.Tensor, torch.Tensor, IntruderReport]:
    """(B, A, report): the layer's factors with its intruders scaled by λ (steps 1-3 above); B (out, r), A (r, in).

    With no intruder the factors come back unchanged (copies), as PEFT copies them to its new adapter.
    """
    _check("mitigation_lambda", mitigation_lambda, 0.0, 1.0)
    B, A = (f.detach() for f in layer.factors())
    W = weight_out_in(layer)
    W_tuned = W + layer.delta_weight().detach()               # (out, in)
    report = intruder_dimensions(W, W_tuned, top_k, threshold_epsilon)
    if not report.intruders:
        return B.clone(), A.clone(), report
    U, S, Vh = _svd(W_tuned)
    idx = report.intruders
    intruder = (U[:, idx] * S[idx]) @ Vh[idx]                 # (out, n) @ (n, in): Σ σ_i u_i v_iᵀ
    r, scaling = layer.adapter().r, layer.adapter().scaling
    delta = (W_tuned + (mitigation_lambda - 1.0) * intruder - W) / scaling
    U_d, S_d, Vh_d = _svd(delta)
    root = S_d[:r].sqrt()
    B_new = U_d[:, :r] * root                                 # (out, r)
    A_new = root[:, None] * Vh_d[:r]                          # (r, in)
    return B_new.to(B.dtype), A_new.to(A.dtype), report


@torch.no_grad()
def reduce_intruder_dimension(model: nn.Module, top_k: int = TOP_K, threshold_epsilon: float = THRESHOLD_EPSILON,
                              mitigation_lambda: float = MITIGATION_LAMBDA) -> dict[str, IntruderReport]:
    """Shrink the intruder dimensions of the active adapter in every LoRA layer of `model`, in place; returns
    each layer's report.

    PEFT writes the result to a new adapter and activates it; here the active adapter's factors are replaced
    (save the adapter first to keep the original). Merged layers are refused.
    """
    if not lora_layers(model):
        raise ValueError("model has no LoRA layer: call lc.inject_lora(model, cfg) and train it first")
    layers = adapter_layers(model)
    if merged := [n for n, layer in layers if layer.merged]:
        raise ValueError(f"layer {merged[0]!r} is merged: unmerge_lora(model) first, then reduce")
    if other := [(n, layer) for n, layer in layers if layer.adapter().B.ndim != 2]:
        name, layer = other[0]
        raise ValueError(f"layer {name!r} is a {type(layer).__name__}: only Linear and Conv1D layers are supported")
    reports = {}
    for name, layer in layers:
        B, A, reports[name] = reduced_factors(layer, top_k, threshold_epsilon, mitigation_lambda)
        adapter = layer.adapter()
        adapter.B.copy_(B.view_as(adapter.B))
        adapter.A.copy_(A.view_as(adapter.A))
    return reports
