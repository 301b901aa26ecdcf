"""Combining task tensors: the tensor-level steps of merging several adapters into one.

Each function takes n task tensors of one shape (a ΔW, or a lora_A / lora_B factor, per adapter) and
a weight per tensor, and returns one tensor of that shape. They match `peft.utils.merge_utils`
(PEFT 0.21) value for value, and with the same seed draw the same random masks.

    task_arithmetic   Σᵢ wᵢ·τᵢ                                       (the plain weighted sum)
    magnitude_prune   Σᵢ wᵢ·trim(τᵢ)                                 (keep the top-k |values| of each)
    ties              trim -> elect sign -> disjoint merge           (TIES, arXiv 2306.01708)
    dare_linear       Σᵢ wᵢ·drop(τᵢ)/density                         (DARE, arXiv 2311.03099)
    dare_ties         DARE's drop, then TIES's sign election and disjoint merge

Where PEFT's behaviour surprises (each pinned in tests/test_combining.py):
- Weights are applied *after* pruning and *after* the sign election: a negative weight does not vote
  against its tensor's signs. With weights (1, -1) the elected sign is that of τ₁ + τ₂, not τ₁ - τ₂.
- TIES's disjoint merge is a *mean* over the tensors that agree with the elected sign, whereas
  task_arithmetic, magnitude_prune and dare_linear *sum*: ties([τ, τ], (1, 1)) is τ, not 2τ.
- k = int(density · numel) rounds down, so a small tensor can keep nothing (density 0.1 of 9 values
  keeps 0), and float rounding bites: int(0.29 · 100) = 28.
- density == 1 returns the tensor untouched and draws no random numbers (DARE does not rescale either).
- dtype: weights (float32 when built from Python floats) multiply the stacked tensors, so bf16 tensors
  come out float32. TIES comes out float32 even when the weights are bf16 too: the count it divides
  by, clamp(int64, min=1.0), is float32. PEFT's caller casts back with `.to(dtype)`.
- PEFT lets density 0 through (DARE then divides 0 by 0: all NaN), warns and skips pruning for
  density > 1, and ignores an unknown prune method when density >= 1. Here all three are ValueErrors.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import torch

from .config import reject

PRUNE_METHODS = ("magnitude", "random")
MAJORITY_SIGN_METHODS = ("total", "frequency")


def _check_density(density: float) -> None:
    if not (0 < density <= 1):  # also refuses NaN: every comparison with NaN is False
        reject("density", density, "a fraction of values to keep, 0 < density <= 1")


def _check_choice(name: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        reject(name, value, f"one of {list(allowed)}")


# ---------------------------------------------------------------------------------------------------------------
# Pruning one tensor


def magnitude_based_pruning(tensor: torch.Tensor, density: float) -> torch.Tensor:
    """Keep the k = int(density · numel) entries of largest |value|, zero the rest (TIES's "trim").

    Small values are mostly noise from fine-tuning; TIES (arXiv 2306.01708, §3) finds that keeping the
    top 20% loses little. Ties in |value| are broken by torch.topk, as in PEFT.
    """
    _check_density(density)
    flat = tensor.reshape(-1)                            # (numel,)
    k = int(density * tensor.numel())                    # rounds down: may be 0 for a small tensor
    keep = torch.zeros_like(flat)                        # (numel,) in the tensor's dtype
    keep[flat.abs().topk(k, largest=True).indices] = 1
    return tensor * keep.reshape(tensor.shape)


trim = magnitude_based_pruning  # TIES step 1 under the paper's name (step 2: elect_sign, step 3: disjoint_merge)


def random_pruning(
    tensor: torch.Tensor, density: float, rescale: bool, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Keep each entry with probability `density` (DARE's "drop"), optionally rescaling by 1/density.

    DARE (arXiv 2311.03099, §3) drops a fraction 1 - p of the delta and divides the survivors by p so
    the expected value of every entry is unchanged. The mask is one Bernoulli draw per entry, exactly
    as PEFT draws it: with generator=None from torch's global RNG; a torch.Generator seeded s draws the
    same mask as the global RNG after torch.manual_seed(s). Draws even at density 1 (use `prune` to skip).
    """
    _check_density(density)
    # p is stored in the tensor's dtype (bf16 rounds 0.1 to 0.10009765625), as in PEFT.
    keep = torch.bernoulli(torch.full_like(tensor, density), generator=generator)  # (*shape) of 0/1
    dropped = tensor * keep
    return dropped / density if rescale else dropped


def prune(
    tensor: torch.Tensor,
    density: float,
    method: Literal["magnitude", "random"],
    rescale: bool = False,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Prune by `method`; density 1 returns `tensor` itself, drawing nothing and not rescaling.

    `rescale` and `generator` apply to method="random" only.
    """
    _check_density(density)
    _check_choice("method", method, PRUNE_METHODS)
    if density == 1:
        return tensor
    if method == "magnitude":
        return magnitude_based_pruning(tensor, density)
    return random_pruning(tensor, density, rescale=rescale, generator=generator)


# ---------------------------------------------------------------------------------------------------------------
# Sign election and disjoint merge (TIES steps 2 and 3); tensors are stacked on dim 0


def elect_sign(tensor: torch.Tensor, method: Literal["total", "frequency"] = "total") -> torch.Tensor:
    """The elected sign, +1 or -1 per entry, of n stacked tensors (n, *shape) -> (*shape) int64.

    "total" (TIES, arXiv 2306.01708, §3 step 2) takes the sign of the summed values, so large values
    outvote small ones; "frequency" takes the sign most tensors have. A tie (sum exactly 0) elects +1.
    """
    _check_choice("majority_sign_method", method, MAJORITY_SIGN_METHODS)
    votes = tensor.sum(dim=0) if method == "total" else tensor.sign().sum(dim=0)  # (*shape)
    return torch.where(votes >= 0, 1, -1)


def calculate_majority_sign_mask(
    tensor: torch.Tensor, method: Literal["total", "frequency"] = "total"
) -> torch.Tensor:
    """Which entries of the stacked tensors (n, *shape) agree with the elected sign: (n, *shape) bool.

    A zero (pruned) entry has sign 0, so it never agrees and is never counted by `disjoint_merge`.
    """
    return tensor.sign() == elect_sign(tensor, method)  # (n, *shape) vs (*shape)


def disjoint_merge(task_tensors: torch.Tensor, majority_sign_mask: torch.Tensor) -> torch.Tensor:
    """Per entry, the mean of the stacked values (n, *shape) that agree with the elected sign -> (*shape).

    TIES (arXiv 2306.01708, §3 step 3): averaging only the agreeing values stops a large opposite-sign
    delta from cancelling the others. An entry where none agrees is 0 (the count is clamped to 1).
    """
    agreeing_sum = (task_tensors * majority_sign_mask).sum(dim=0)  # (*shape)
    # clamp(int64, min=1.0) is float32, so the quotient is at least float32 (bf16 inputs come out fp32)
    agreeing_count = torch.clamp(majority_sign_mask.sum(dim=0), min=1.0)  # (*shape)
    return agreeing_sum / agreeing_count


# ---------------------------------------------------------------------------------------------------------------
# Combining n task tensors


def _check_inputs(
    task_tensors: Sequence[torch.Tensor], weights: torch.Tensor | Sequence[float], density: float | None = None
) -> None:
    """Refuse bad input up front, before any random number is drawn."""
    if len(task_tensors) == 0:
        reject("task_tensors", [], "at least one tensor")
    shapes = [tuple(t.shape) for t in task_tensors]
    if len(set(shapes)) > 1:
        reject("task_tensors", f"tensors of shapes {shapes}", "tensors of one shape")
    w = torch.as_tensor(weights)
    if w.dim() != 1 or w.shape[0] != len(task_tensors):
        reject("weights", w.tolist(), f"one weight per task tensor, {len(task_tensors)} in all")
    if density is not None:
        _check_density(density)


def _weigh(stacked: torch.Tensor, weights: torch.Tensor | Sequence[float]) -> torch.Tensor:
    """stacked (n, *shape) · weights (n,): one weight per tensor, broadcast over its entries."""
    weights = torch.as_tensor(weights, device=stacked.device)  # Python floats -> float32, as PEFT's caller
    return stacked * weights.reshape(-1, *([1] * (stacked.dim() - 1)))  # (n, 1, ..., 1) broadcasts


def task_arithmetic(task_tensors: Sequence[torch.Tensor], weights: torch.Tensor | Sequence[float]) -> torch.Tensor:
    """Σᵢ wᵢ·τᵢ: the weighted sum of the task tensors, (n × *shape) -> (*shape)."""
    _check_inputs(task_tensors, weights)
    return _weigh(torch.stack(list(task_tensors)), weights).sum(dim=0)


def magnitude_prune(
    task_tensors: Sequence[torch.Tensor], weights: torch.Tensor | Sequence[float], density: float
) -> torch.Tensor:
    """Σᵢ wᵢ·trim(τᵢ): trim each tensor to its top-k |values|, then sum with the weights (no sign election)."""
    _check_inputs(task_tensors, weights, density)
    trimmed = torch.stack([prune(t, density, method="magnitude") for t in task_tensors])  # (n, *shape)
    return _weigh(trimmed, weights).sum(dim=0)


@dataclass
class TiesSteps:
    """The intermediate tensors of one TIES merge (arXiv 2306.01708, §3), for showing each step."""

    trimmed: torch.Tensor             # (n, *shape) step 1: each tensor pruned to its top-k |values|, unweighted
    weighted: torch.Tensor            # (n, *shape) trimmed · weights (weights come after trimming and the vote)
    sign: torch.Tensor                # (*shape)    step 2: the elected sign, +1 or -1 (int64), voted unweighted
    majority_sign_mask: torch.Tensor  # (n, *shape) which trimmed entries agree with the elected sign (bool)
    merged: torch.Tensor              # (*shape)    step 3: mean of the agreeing weighted entries


def _elect_and_merge(
    trimmed: torch.Tensor, weights: torch.Tensor | Sequence[float], majority_sign_method: str
) -> TiesSteps:
    """TIES steps 2 and 3 on already-pruned stacked tensors (n, *shape); shared by ties and dare_ties."""
    sign = elect_sign(trimmed, majority_sign_method)
    mask = trimmed.sign() == sign  # the vote is on the unweighted tensors, as in PEFT
    weighted = _weigh(trimmed, weights)
    return TiesSteps(trimmed, weighted, sign, mask, disjoint_merge(weighted, mask))


def ties_steps(
    task_tensors: Sequence[torch.Tensor],
    weights: torch.Tensor | Sequence[float],
    density: float,
    majority_sign_method: Literal["total", "frequency"] = "total",
) -> TiesSteps:
    """TIES one step at a time: trim, elect sign, disjoint merge. `ties(...)` is `ties_steps(...).merged`."""
    _check_inputs(task_tensors, weights, density)
    _check_choice("majority_sign_method", majority_sign_method, MAJORITY_SIGN_METHODS)
    trimmed = torch.stack([prune(t, density, "magnitude") for t in task_tensors])  # (n, *shape)
    return _elect_and_merge(trimmed, weights, majority_sign_method)


def ties(
    task_tensors: Sequence[torch.Tensor],
    weights: torch.Tensor | Sequence[float],
    density: float,
    majority_sign_method: Literal["total", "frequency"] = "total",
) -> torch.Tensor:
    """TIES-merging (arXiv 2306.01708): trim to top-k, elect a sign per entry, average the agreeing values."""
    return ties_steps(task_tensors, weights, density, majority_sign_method).merged


def dare_linear(
    task_tensors: Sequence[torch.Tensor],
    weights: torch.Tensor | Sequence[float],
    density: float,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """DARE (arXiv 2311.03099): drop each entry with probability 1 - density, rescale, weighted sum.

    One mask per tensor, drawn in order from `generator` (or the global RNG, as PEFT).
    """
    _check_inputs(task_tensors, weights, density)
    dropped = torch.stack([prune(t, density, "random", rescale=True, generator=generator) for t in task_tensors])
    return _weigh(dropped, weights).sum(dim=0)  # (*shape)


def dare_ties(
    task_tensors: Sequence[torch.Tensor],
    weights: torch.Tensor | Sequence[float],
    density: float,
    majority_sign_method: Literal["total", "frequency"] = "total",
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """DARE's random drop and rescale (arXiv 2311.03099), then TIES's sign election and disjoint merge."""
    _check_inputs(task_tensors, weights, density)
    _check_choice("majority_sign_method", majority_sign_method, MAJORITY_SIGN_METHODS)
    dropped = torch.stack([prune(t, density, "random", rescale=True, generator=generator) for t in task_tensors])
    return _elect_and_merge(dropped, weights, majority_sign_method).merged


# ---------------------------------------------------------------------------------------------------------------
# One entry point by name (what add_weighted_adapter calls for each pair of factors or each ΔW)

METHODS = ("task_arithmetic", "ties", "dare_linear", "dare_ties", "magnitude_prune")


def combine(
    method: str,
    task_tensors: Sequence[torch.Tensor],
    weights: torch.Tensor | Sequence[float],
    density: float | None = None,
    majority_sign_method: Literal["total", "frequency"] = "total",
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """The combining function `method` (one of METHODS) on n task tensors; `density` for all but task_arithmetic.

    Arguments a method does not use are ignored, as PEFT's add_weighted_adapter passes them.
    """
    _check_choice("method", method, METHODS)
    if method == "task_arithmetic":
        return task_arithmetic(task_tensors, weights)
    if density is None:
        reject("density", density, f"method {method!r} prunes: give a fraction of values to keep, 0 < density <= 1")
    if method == "ties":
        return ties(task_tensors, weights, density, majority_sign_method)
    if method == "dare_linear":
        return dare_linear(task_tensors, weights, density, generator)
    if method == "dare_ties":
        return dare_ties(task_tensors, weights, density, majority_sign_method, generator)
    return magnitude_prune(task_tensors, weights, density)
