"""TIES and DARE one step at a time, on small matrices a learner can read cell by cell.

What the Merging studio page and lesson 13 show: every number comes from `lora_core.combining` (PEFT-exact),
this module only draws the task tensors, runs the steps and counts what each step did.

    walk = ties_walkthrough(n_adapters=3, shape=(6, 8), density=0.5)   # trim -> elect sign -> disjoint merge
    drop = dare_walkthrough(shape=(6, 8), density=0.5, draws=200)      # drop and rescale, and its mean

TIES (Yadav et al., arXiv 2306.01708, §3): trim each task tensor to its top-k |values|, elect one sign per
entry, average only the values that agree with it. DARE (Yu et al., arXiv 2311.03099, §3): drop each entry
with probability 1 − p and divide the survivors by p, so every entry keeps its expected value: E[drop/p] = τ.

Both return plain Python lists and numbers (JSON-able), one list per picture. Everything random is drawn
from a local torch.Generator (`seeded.generator`): the global RNG is never drawn from or reseeded.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from .. import combining
from ..config import reject
from .seeded import generator

MAX_ADAPTERS = 8   # one row of heatmaps per adapter: more stops being readable
MAX_SIDE = 32      # rows or columns of a matrix shown cell by cell
MAX_DRAWS = 100_000


def _check_int(name: str, value: object, low: int, high: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        reject(name, value, f"an integer from {low} to {high}")


def _check_shape(shape: object) -> tuple[int, int]:
    ok = isinstance(shape, (tuple, list)) and len(shape) == 2 and all(
        isinstance(s, int) and not isinstance(s, bool) and 1 <= s <= MAX_SIDE for s in shape)
    if not ok:
        reject("shape", shape, f"(rows, columns), each an integer from 1 to {MAX_SIDE}")
    return int(shape[0]), int(shape[1])


def _check_density(density: object) -> float:
    if isinstance(density, bool) or not isinstance(density, (int, float)) or not 0 < density <= 1:
        reject("density", density, "a fraction of values to keep, 0 < density <= 1")  # NaN fails 0 < NaN
    return float(density)


def _check_seed(seed: object) -> None:
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        reject("seed", seed, "a non-negative integer")


def _check_weights(weights: Sequence[float] | None, n: int) -> list[float]:
    if weights is None:
        return [1.0] * n
    values = list(weights) if isinstance(weights, (list, tuple)) else None
    if values is None or len(values) != n or not all(
            isinstance(w, (int, float)) and not isinstance(w, bool) and math.isfinite(w) for w in values):
        reject("weights", weights, f"None (all 1.0) or {n} finite numbers, one per adapter")
    return [float(w) for w in values]


def _described(value: object) -> str:
    """A short description for an error message (a tensor's repr would print every value)."""
    if isinstance(value, torch.Tensor):
        return f"a tensor of shape {tuple(value.shape)}"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_described(v) if isinstance(v, torch.Tensor) else type(v).__name__ for v in value) + "]"
    return type(value).__name__


# ---------------------------------------------------------------------------------------------------------------
# TIES


def task_tensors(n_adapters: int, shape: tuple[int, int], seed: int) -> list[torch.Tensor]:
    """n standard-normal (rows, cols) task tensors from `generator(seed)`: stand-ins for n adapters' ΔW."""
    gen = generator(seed)
    return [torch.randn(shape, generator=gen) for _ in range(n_adapters)]


def ties_walkthrough(
    n_adapters: int = 3,
    shape: tuple[int, int] = (6, 8),
    density: float = 0.5,
    weights: Sequence[float] | None = None,
    majority_sign_method: str = "total",
    seed: int = 0,
) -> dict:
    """TIES (arXiv 2306.01708) on `n_adapters` seeded task tensors: each step's matrices and counts.

    weights=None weighs every adapter 1.0 (TIES then averages the agreeing values, the plain sum adds them).
    """
    _check_int("n_adapters", n_adapters, 2, MAX_ADAPTERS)
    shape = _check_shape(shape)
    _check_seed(seed)
    walk = ties_walkthrough_of(task_tensors(n_adapters, shape, seed), weights, density, majority_sign_method)
    return {**walk, "seed": seed}


def ties_walkthrough_of(
    tensors: Sequence[torch.Tensor],
    weights: Sequence[float] | None = None,
    density: float = 0.5,
    majority_sign_method: str = "total",
) -> dict:
    """TIES on given task tensors (n of one 2-D shape): what `ties_walkthrough` returns, for hand-made examples.

    The steps are `combining.ties_steps` (PEFT-exact); the counts read them:
      trim    kept / zeroed per adapter: k = int(density · numel) largest |values| survive
      elect   conflicts: entries where the trimmed adapters hold both a positive and a negative value
              (unweighted, as the vote is); positive / negative: how many entries elect +1 / −1
      merge   dropped per adapter: its non-zero trimmed values the election overruled; empty: entries
              every adapter trimmed away (TIES gives 0 there)
    and the comparison with the plain weighted sum Σᵢ wᵢ·τᵢ (`combining.task_arithmetic`).
    """
    if isinstance(tensors, torch.Tensor) or not isinstance(tensors, Sequence) or not all(
            isinstance(t, torch.Tensor) and t.dim() == 2 for t in tensors):
        reject("tensors", _described(tensors), "a list of 2-D torch tensors, one per adapter")
    n = len(tensors)
    if not 1 <= n <= MAX_ADAPTERS:
        reject("tensors", f"{n} tensors", f"from 1 to {MAX_ADAPTERS} tensors")
    if len({tuple(t.shape) for t in tensors}) > 1:
        reject("tensors", f"shapes {[tuple(t.shape) for t in tensors]}", "tensors of one shape")
    density = _check_density(density)
    weights = _check_weights(weights, n)
    if majority_sign_method not in combining.MAJORITY_SIGN_METHODS:
        reject("majority_sign_method", majority_sign_method, f"one of {list(combining.MAJORITY_SIGN_METHODS)}")

    tensors = [t.detach().float() for t in tensors]
    steps = combining.ties_steps(tensors, weights, density, majority_sign_method)
    plain_sum = combining.task_arithmetic(tensors, weights)                  # (rows, cols)
    stacked, trimmed = torch.stack(tensors), steps.trimmed                   # (n, rows, cols)
    agreeing = steps.weighted * steps.majority_sign_mask                     # what the disjoint merge averages
    dropped = (trimmed != 0) & ~steps.majority_sign_mask                     # (n, rows, cols) bool
    difference = (steps.merged - plain_sum).abs()

    def conflicts(t: torch.Tensor) -> int:  # entries where the adapters disagree in sign, zeros abstaining
        return int(((t > 0).any(dim=0) & (t < 0).any(dim=0)).sum())

    kept = [int(c) for c in (trimmed != 0).sum(dim=(1, 2))]
    numel = stacked[0].numel()
    return {
        "method": "ties", "reference": "TIES-merging, arXiv 2306.01708",
        "n_adapters": n, "shape": list(stacked.shape[1:]), "density": density, "k": int(density * numel),
        "weights": weights, "majority_sign_method": majority_sign_method,
        "task_tensors": stacked.tolist(), "trimmed": trimmed.tolist(), "weighted": steps.weighted.tolist(),
        "sign": steps.sign.tolist(), "agrees": steps.majority_sign_mask.tolist(), "agreeing": agreeing.tolist(),
        "merged": steps.merged.tolist(), "plain_sum": plain_sum.tolist(), "abs_difference": difference.tolist(),
        "steps": {
            "trim": {"kept": kept, "zeroed": [numel - k for k in kept]},
            "elect": {"conflicts_before_trim": conflicts(stacked), "conflicts": conflicts(trimmed),
                      "positive": int((steps.sign > 0).sum()), "negative": int((steps.sign < 0).sum())},
            "merge": {"dropped": [int(c) for c in dropped.sum(dim=(1, 2))], "dropped_total": int(dropped.sum()),
                      "agreeing_total": int(steps.majority_sign_mask.sum()),
                      "empty": int((trimmed == 0).all(dim=0).sum())},
        },
        "summary": {"entries": numel, "max_abs_difference": float(difference.max()),
                    "mean_abs_difference": float(difference.mean()),
                    "sign_flips_vs_sum": int((steps.merged * plain_sum < 0).sum())},
    }


# ---------------------------------------------------------------------------------------------------------------
# DARE


def dare_walkthrough(shape: tuple[int, int] = (6, 8), density: float = 0.5, seed: int = 0, draws: int = 200) -> dict:
    """DARE's drop and rescale (arXiv 2311.03099) on one seeded task tensor τ, and why it is unbiased.

    One draw shows the step: each entry kept with probability p = density, survivors divided by p. Then
    `draws` independent masks (`combining.random_pruning(rescale=True)`, one local generator) are averaged:
    an entry's rescaled value is τ·b/p with b ~ Bernoulli(p), so its mean is τ and its std |τ|·√((1 − p)/p).
    `max_abs_error` = max |mean − τ| should be a few times `expected_error_scale` = max std / √draws.
    Without the rescale the mean would be p·τ: `max_abs_error_without_rescale` shows that bias.
    """
    shape = _check_shape(shape)
    density = _check_density(density)
    _check_seed(seed)
    _check_int("draws", draws, 1, MAX_DRAWS)

    gen = generator(seed)
    tau = torch.randn(shape, generator=gen)                                          # (rows, cols)
    one = combining.random_pruning(tau, density, rescale=True, generator=gen)      # the draw shown
    total = torch.zeros_like(tau)
    for _ in range(draws):  # independent masks, drawn in turn from the same local generator
        total += combining.random_pruning(tau, density, rescale=True, generator=gen)
    mean = total / draws
    std = float(tau.abs().max()) * math.sqrt((1 - density) / density)              # the largest entry's std
    kept = int((one != 0).sum())
    return {
        "method": "dare", "reference": "DARE, arXiv 2311.03099",
        "shape": list(shape), "density": density, "rescale": 1 / density, "seed": seed, "draws": draws,
        "original": tau.tolist(), "dropped": one.tolist(), "mean": mean.tolist(),
        "kept": kept, "zeroed": tau.numel() - kept,
        "max_abs_error": float((mean - tau).abs().max()), "std": std,
        "expected_error_scale": std / math.sqrt(draws),
        "max_abs_error_without_rescale": float((mean * density - tau).abs().max()),
    }
