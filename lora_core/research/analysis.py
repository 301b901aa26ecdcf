"""What the replays compute from trained updates: φ, the amplification factor, direction overlap, ranks.

    grid = phi_grid(A_r8, A_r64)                     # (8, 64) subspace similarity, LoRA paper eq. 4
    phi_random_baseline(8, 64, 576)                  # what two random subspaces give: max(i, j) / n
    amplification(W, dW, r=4)                        # ‖ΔW‖_F / ‖Uᵀ W Vᵀ‖_F, LoRA paper §7.2 and Table 7
    rank_for_energy(torch.linalg.svdvals(dW), 0.9)   # how many directions hold 90% of ‖ΔW‖_F²

Everything here is plain linear algebra on CPU fp32 tensors, checked in tests/test_replay_analysis.py on
constructed matrices whose answer is known.
"""

from __future__ import annotations

import math
import statistics

import torch

from ..spectrum import effective_rank, subspace_similarity


def phi_grid(A1: torch.Tensor, A2: torch.Tensor) -> list[list[float]]:
    """φ(A1, A2, i, j) for i ≤ r1, j ≤ r2, as nested lists (rows i, columns j)."""
    return subspace_similarity(A1, A2).tolist()


def phi_random_baseline(r1: int, r2: int, n: int) -> list[list[float]]:
    """E[φ(i, j)] for uniformly random subspaces of R^n: E‖U_iᵀU_j‖_F² = i·j/n, so φ = max(i, j)/n."""
    for name, value in (("r1", r1), ("r2", r2), ("n", n)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name}={value!r} is not allowed: use an integer >= 1")
    return [[max(i, j) / n for j in range(1, r2 + 1)] for i in range(1, r1 + 1)]


def random_factor(shape: tuple[int, int], seed: int) -> torch.Tensor:
    """A Gaussian (r, in) matrix from a local generator: a "random adapter" for φ's sampled baseline."""
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed))


def _top(M: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(U_k (out, k), V_k (in, k)): the top-k left and right singular vectors of M."""
    U, _, Vh = torch.linalg.svd(M.float(), full_matrices=False)
    return U[:, :k], Vh[:k].T


def projected_norm(W: torch.Tensor, U: torch.Tensor, V: torch.Tensor) -> float:
    """‖Uᵀ W V‖_F: how much of W lives in the subspaces spanned by U's and V's columns."""
    return float((U.T @ W.float() @ V).norm())  # (k, out) @ (out, in) @ (in, k) -> (k, k)


def amplification(W: torch.Tensor, dW: torch.Tensor, r: int, seed: int = 0) -> dict[str, float]:
    """The LoRA paper's Table 7 for one weight: ‖UᵀWVᵀ‖_F with U, V the top-r singular vectors of ΔW, of W
    itself, and of a random matrix; ‖W‖_F, ‖ΔW‖_F; and the amplification factor ‖ΔW‖_F / ‖UᵀWVᵀ‖_F (ΔW's U, V).

    A large factor means ΔW strengthens directions that W itself barely uses.
    """
    if W.shape != dW.shape:
        raise ValueError(f"W {tuple(W.shape)} and dW {tuple(dW.shape)} must have one shape")
    if isinstance(r, bool) or not isinstance(r, int) or not 1 <= r <= min(W.shape):
        raise ValueError(f"r={r!r} is not allowed: use an integer in [1, {min(W.shape)}]")
    U_d, V_d = _top(dW, r)
    U_w, V_w = _top(W, r)
    U_r, V_r = _top(torch.randn(W.shape, generator=torch.Generator().manual_seed(seed)), r)
    on_delta = projected_norm(W, U_d, V_d)
    delta_norm = float(dW.float().norm())
    return {"r": r, "W_norm": float(W.float().norm()), "delta_norm": delta_norm,
            "proj_delta_dirs": on_delta, "proj_W_dirs": projected_norm(W, U_w, V_w),
            "proj_random_dirs": projected_norm(W, U_r, V_r),
            "factor": delta_norm / on_delta if on_delta > 0 else float("inf")}


def direction_overlap(W: torch.Tensor, dW: torch.Tensor, k: int) -> list[float]:
    """For each of ΔW's top-k left singular vectors u_i: ‖U_Wᵀ u_i‖² with U_W W's top-k left singular vectors.

    1 means u_i lies in W's top-k subspace; a random direction gives about k/out.
    """
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= min(W.shape):
        raise ValueError(f"k={k!r} is not allowed: use an integer in [1, {min(W.shape)}]")
    U_d, _ = _top(dW, k)
    U_w, _ = _top(W, k)
    return ((U_w.T @ U_d) ** 2).sum(0).tolist()  # (k, out) @ (out, k) -> (k, k), summed over W's directions


def rank_for_energy(sv: torch.Tensor, fraction: float = 0.9) -> int:
    """The fewest singular values whose squares hold `fraction` of the total (of ‖M‖_F²)."""
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"fraction={fraction!r} is not allowed: use a number in (0, 1]")
    energy = sv.double().square()
    total = float(energy.sum())
    if total == 0.0:
        return 0
    cumulative = energy.cumsum(0) / total
    return int((cumulative < fraction - 1e-12).sum()) + 1


def rank_profile(dW: torch.Tensor) -> dict:
    """ΔW's spectrum summarised: ranks holding 50/90/99% of its energy, and its effective rank (Roy & Vetterli)."""
    sv = torch.linalg.svdvals(dW.float())
    return {"rank_50": rank_for_energy(sv, 0.5), "rank_90": rank_for_energy(sv, 0.9),
            "rank_99": rank_for_energy(sv, 0.99), "effective_rank": effective_rank(sv),
            "full_rank": min(dW.shape), "singular_values": sv[:128].tolist()}


def median_rank(full_delta_ranks: dict, key: str = "rank_90") -> float:
    """The median over every analysed layer of a full fine-tune's ΔW rank (`key`), from the forgetting replay."""
    return statistics.median(x for profile in full_delta_ranks.values() for x in profile[key])


def parabola_minimum(lrs: list[float], losses: list[float]) -> float | None:
    """The learning rate at the vertex of the parabola through the best grid point and its two neighbours, in
    log10(lr); None when the best point is at an edge of the grid (the optimum may lie beyond it).

    A grid in steps of 4× can only say "4× or 16×"; the vertex estimates the optimum between grid points, as
    learning-rate sweeps are usually read.
    """
    points = sorted(zip(lrs, losses, strict=True))
    if len(points) < 3:
        return None
    i = min(range(len(points)), key=lambda k: points[k][1])
    if i in (0, len(points) - 1):
        return None
    (x0, y0), (x1, y1), (x2, y2) = ((math.log10(lr), loss) for lr, loss in points[i - 1:i + 2])
    denominator = (x0 - x1) * (x0 - x2) * (x1 - x2)
    a = (x2 * (y1 - y0) + x1 * (y0 - y2) + x0 * (y2 - y1)) / denominator
    b = (x2 * x2 * (y0 - y1) + x1 * x1 * (y2 - y0) + x0 * x0 * (y1 - y2)) / denominator
    if a <= 0:
        return None
    return 10 ** (-b / (2 * a))
