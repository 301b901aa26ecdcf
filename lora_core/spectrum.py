"""The singular-value spectrum of ΔW = B @ A * scaling, computed from the factors.

ΔW has rank at most r, so its spectrum never needs the full (out, in) matrix:
    B = Q_B R_B  (QR, Q_B is out×r),   Aᵀ = Q_A R_A  (QR, Q_A is in×r)
    ΔW = s · Q_B (R_B R_Aᵀ) Q_Aᵀ  ⇒  σ(ΔW) = σ(s · R_B R_Aᵀ), an r×r SVD.
On a 2304×768 c_attn this is hundreds of times faster than `torch.linalg.svdvals(ΔW)`, with the
same top-r values.

Also here: energy captured by the top k values, effective rank, best rank-k approximation, and
the subspace similarity φ between two adapters (LoRA, arXiv 2106.09685, Section 7.2).
"""

from __future__ import annotations

import math

import torch

from .layers import LoraLayer


def singular_values(layer: LoraLayer, adapter_name: str | None = None) -> torch.Tensor:
    """The r singular values of ΔW of the layer's adapter `adapter_name` (None: the active one), largest first,
    without forming ΔW (fp32, CPU)."""
    B, A = layer.factors(adapter_name)  # (out, r), (r, in)
    return factor_singular_values(B, A, layer.adapter(adapter_name).scaling)


def factor_singular_values(B: torch.Tensor, A: torch.Tensor, scaling: float = 1.0) -> torch.Tensor:
    """σ(scaling · B @ A) for B (out, r) and A (r, in), from two thin QRs and an r×r SVD.

    Any finite factors work: each is first scaled by a power of two to max |value| in [0.5, 1), since
    σ(c·M) = |c|·σ(M) and a power of two scales exactly. Without it, A = 1e30·A₀ overflows float32 inside
    the QR (its column norms square to 1e60) and LAPACK refuses the inf. A ValueError, never a LinAlgError,
    for NaN/inf factors or a spectrum beyond float32.
    """
    B, b_exp = _unit_scaled(B.detach().float(), "lora_B")
    A, a_exp = _unit_scaled(A.detach().float(), "lora_A")
    # mode="r": R only. Q is never used, and forming it costs as much as the factorization itself.
    _, r_b = torch.linalg.qr(B, mode="r")    # (out, r) -> R_B (r, r)
    _, r_a = torch.linalg.qr(A.T, mode="r")  # (in, r)  -> R_A (r, r)
    core = r_b @ r_a.T                       # (r, r) @ (r, r) -> (r, r)
    sv = torch.linalg.svdvals(core) * abs(scaling)
    if b_exp + a_exp == 0:
        return sv.cpu()
    sv = sv.double() * 2.0 ** (b_exp + a_exp)  # undo the two scales exactly, in float64's range
    if sv.numel() and float(sv.max()) > torch.finfo(torch.float32).max:
        raise ValueError(f"σ(ΔW) reaches {float(sv.max()):.3g}, beyond float32's largest number "
                         f"({torch.finfo(torch.float32).max:.3g}): the adapter's factors are far too large")
    return sv.float().cpu()


def _unit_scaled(M: torch.Tensor, name: str) -> tuple[torch.Tensor, int]:
    """(M / 2**e, e) with max |M / 2**e| in [0.5, 1); e = 0 where M is already there or all zero."""
    if M.numel() == 0:
        return M, 0
    largest = float(M.abs().max())
    if not math.isfinite(largest):
        raise ValueError(f"{name} holds NaN or inf values: its singular values are undefined")
    exponent = math.frexp(largest)[1]  # largest = m · 2**exponent, 0.5 <= m < 1
    # Multiplying by a power of two is exact; float64 holds 2**-exponent for any float32 exponent.
    return (M if exponent == 0 else (M.double() * 2.0 ** -exponent).float()), exponent


def all_singular_values(model: torch.nn.Module, adapter_name: str | None = None) -> dict[str, torch.Tensor]:
    """{layer name: σ(ΔW)} for every LoRA layer of `model` holding adapter `adapter_name` (None: the active one),
    in model order (fp32, CPU).

    A plain loop over `singular_values`: stacking the layers that share a shape into one batched
    QR/SVD was measured *slower* on CPU (torch loops over LAPACK per matrix anyway, after copying
    the stack), while the R-only QR below already does distilgpt2's 24 all-linear adapters in
    about a millisecond at r = 8 (docs/performance.md has the numbers).
    """
    from .inject import adapter_layers

    return {name: singular_values(layer, adapter_name) for name, layer in adapter_layers(model, adapter_name)}


def energy_captured(sv: torch.Tensor, k: int) -> float:
    """Share of ‖M‖_F² kept by the top k singular values: Σ_{i<k} σᵢ² / Σ σᵢ²."""
    sq = sv.double() ** 2
    total = float(sq.sum())
    return float(sq[:k].sum()) / total if total > 0 else 0.0


def energy_profile(sv: torch.Tensor) -> list[float]:
    """energy_captured(sv, k) for k = 1..len(sv), as a list."""
    sq = sv.detach().double() ** 2
    total = float(sq.sum())
    return (sq.cumsum(0) / total).tolist() if total > 0 else [0.0] * len(sq)


def numerical_rank(sv: torch.Tensor, rtol: float = 1e-5) -> int:
    """How many singular values exceed rtol × the largest (0 for an all-zero matrix)."""
    if sv.numel() == 0 or float(sv.max()) == 0.0:
        return 0
    return int((sv > rtol * sv.max()).sum())


def effective_rank(sv: torch.Tensor) -> float:
    """Roy & Vetterli's effective rank exp(H(p)), p = σ / Σσ: 1 for rank one, r for a flat spectrum."""
    s = sv.double()
    total = float(s.sum())
    if total == 0.0:
        return 0.0
    p = s[s > 0] / total
    return math.exp(float(-(p * p.log()).sum()))


def low_rank_approximation(W: torch.Tensor, k: int) -> torch.Tensor:
    """The best rank-k approximation of W in Frobenius norm (Eckart–Young), via the SVD."""
    if not 1 <= k <= min(W.shape):
        raise ValueError(f"k={k} is not allowed: it must be between 1 and min{tuple(W.shape)} = {min(W.shape)}")
    U, S, Vh = torch.linalg.svd(W.float(), full_matrices=False)
    return (U[:, :k] * S[:k]) @ Vh[:k]  # (m, k) @ (k, n) -> (m, n)


def _right_singular_vectors(A: torch.Tensor) -> torch.Tensor:
    """Right singular vectors of A (r, in) as columns: (in, r). A's scale does not change them."""
    _, _, Vh = torch.linalg.svd(_unit_scaled(A.detach().float(), "A")[0], full_matrices=False)
    return Vh.T


def subspace_similarity(A1: torch.Tensor, A2: torch.Tensor) -> torch.Tensor:
    """φ(A1, A2, i, j) = ‖U_iᵀ U_j‖_F² / min(i, j) for all i ≤ r1, j ≤ r2 (LoRA paper, eq. 4).

    U_i are the top-i right singular vectors of A1 (r1, in), U_j those of A2 (r2, in).
    Returns an (r1, r2) tensor in [0, 1]: 1 where the subspaces nest, ~i·j/in/min(i,j) for random ones.
    """
    if A1.shape[1] != A2.shape[1]:
        raise ValueError(f"A shapes {tuple(A1.shape)} and {tuple(A2.shape)} do not fit: "
                         "both adapters must act on the same input size")
    overlap = (_right_singular_vectors(A1).T @ _right_singular_vectors(A2)) ** 2  # (r1, in) @ (in, r2)
    cum = overlap.cumsum(0).cumsum(1)                                            # Σ over the top i, j
    i = torch.arange(1, cum.shape[0] + 1)[:, None]
    j = torch.arange(1, cum.shape[1] + 1)[None, :]
    return cum / torch.minimum(i, j)


def rank_k_report(W: torch.Tensor, k: int) -> dict[str, float]:
    """What keeping the top k singular values of W buys: energy, error, and storage.

    Storing U_k diag(S_k) and V_k takes k·(m + n) numbers instead of m·n, the same count as a
    rank-k LoRA pair B (m × k) and A (k × n).
    """
    m, n = W.shape
    sv = torch.linalg.svdvals(W.float())
    if not 1 <= k <= min(m, n):
        raise ValueError(f"k={k} is not allowed: it must be between 1 and min{(m, n)} = {min(m, n)}")
    return {
        "k": k,
        "energy": energy_captured(sv, k),
        "relative_error": float(sv[k:].square().sum().sqrt() / sv.square().sum().sqrt()),
        "stored": k * (m + n),
        "full": m * n,
    }


def demo_image(height: int = 96, width: int = 160) -> torch.Tensor:
    """A grey-scale test picture (text, shapes, a gradient) in [0, 1], drawn offline with Pillow."""
    from PIL import Image, ImageDraw, ImageFont

    img = Image.new("L", (width, height), color=235)
    draw = ImageDraw.Draw(img)
    for x in range(width):  # a soft horizontal gradient: rank one on its own
        draw.line([(x, 0), (x, height)], fill=int(235 - 90 * x / width))
    draw.ellipse([8, 10, 58, 60], fill=40)
    draw.rectangle([70, 14, 150, 34], fill=200)
    draw.polygon([(100, 90), (150, 90), (125, 45)], fill=90)
    font = ImageFont.load_default(size=26)
    draw.text((12, 58), "LoRA", fill=10, font=font)
    return torch.frombuffer(bytearray(img.tobytes()), dtype=torch.uint8).view(height, width).float() / 255.0


def spectrum_report(layer: LoraLayer) -> dict:
    """ΔW's spectrum from the factors, checked against the full SVD, with both timed once.

    Returns the singular values, numerical and effective rank, the largest disagreement with
    `svdvals(ΔW)`, and the milliseconds each route took on this machine (one run, for show only).
    """
    import time

    t0 = time.perf_counter()
    sv = singular_values(layer)
    t_factors = time.perf_counter() - t0
    t0 = time.perf_counter()
    full = torch.linalg.svdvals(layer.delta_weight().detach())
    t_full = time.perf_counter() - t0
    return {"singular_values": sv, "largest": float(sv[0]), "numerical_rank": numerical_rank(sv),
            "effective_rank": effective_rank(sv), "max_abs_diff": float((sv - full[: len(sv)]).abs().max()),
            "factors_ms": t_factors * 1e3, "full_ms": t_full * 1e3}


def adapter_report(model: torch.nn.Module, adapter_name: str | None = None) -> list[dict]:
    """Per LoRA layer holding adapter `adapter_name` (None: the active one): ‖ΔW‖_F, ‖W‖_F, their ratio, and ΔW's
    singular values (from the factors).

    ‖ΔW‖_F = sqrt(Σ σᵢ²), so nothing (out × in) is formed for ΔW; ‖W‖_F reads the frozen weight.
    """
    from .inject import adapter_layers

    rows = []
    for name, layer in adapter_layers(model, adapter_name):
        try:
            sv = singular_values(layer, adapter_name)
        except ValueError as e:
            raise ValueError(f"LoRA layer {name!r}: {e}") from None
        delta = float(sv.double().square().sum().sqrt())
        w = layer.original_weight()
        weight = float(w.detach().float().norm())
        rows.append({"layer": name, "delta_norm": delta, "weight_norm": weight,
                     "relative": delta / weight if weight else float("nan"), "singular_values": sv,
                     "A": layer.adapter(adapter_name).A.detach().float().flatten(1).cpu()})
    return rows
