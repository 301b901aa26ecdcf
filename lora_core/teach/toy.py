"""A tiny, real LoRA training problem that runs in milliseconds, for experiments on scaling and rank.

A frozen linear layer W0 (d × d) must learn to behave like W0 + ΔW*, where ΔW* has low rank
(`true_rank`) and decaying singular values. Inputs are x ~ N(0, I) and targets y = (W0 + ΔW*) x,
so the expected loss is exactly ‖ΔW − ΔW*‖_F² / d: LoRA must find ΔW* from noisy mini-batches, and
the curves we plot are that exact expectation (no batch noise).

It is small enough to train a dozen adapters per page rerun, and real enough to show:
  * α/r (LoRA, arXiv 2106.09685) slows learning as r grows; α/√r (rsLoRA, arXiv 2312.03732) does not;
  * under Adam, (α, lr) and (2α, lr/2) follow nearly the same path early on;
  * adapters of rank 8 and 64 find the same top directions (subspace similarity φ, LoRA §7).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn as nn

from ..config import LoraConfig
from ..layers import LoraLinear


@dataclass(frozen=True)
class ToyConfig:
    """One run of the toy problem."""

    r: int = 8
    lora_alpha: float = 16
    use_rslora: bool = False
    lr: float = 1e-3          # Adam learning rate
    steps: int = 150
    batch_size: int = 64
    d: int = 128              # W0 is d × d
    true_rank: int = 4        # rank of the update to learn
    seed: int = 0             # the problem (W0, ΔW*, data) is fixed by `seed`; init by `seed + 1`
    init_lora_weights: bool | str = True
    init_scale: float = 1.0   # multiplies A's initial values (see `equivalent_under_adam`)

    def __post_init__(self) -> None:
        for name in ("steps", "batch_size", "d", "true_rank"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ValueError(f"{name}={value!r} is not allowed: it must be a positive integer")
        if not (isinstance(self.lr, (int, float)) and 0 < self.lr < 10):
            raise ValueError(f"lr={self.lr!r} is not allowed: the learning rate must be in (0, 10)")
        if self.true_rank > self.d:
            raise ValueError(f"true_rank={self.true_rank} is not allowed: at most d = {self.d}")


@dataclass
class ToyRun:
    """Expected loss and ‖ΔW‖_F after every step, plus the trained layer (A, B) and the target ΔW*."""

    config: ToyConfig
    losses: list[float] = field(default_factory=list)
    delta_norms: list[float] = field(default_factory=list)
    layer: LoraLinear | None = None
    target_delta: torch.Tensor | None = None


def toy_problem(d: int, true_rank: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(W0, ΔW*): a random frozen weight and a rank-`true_rank` update with σ_i = 2^-i·‖·‖ scale."""
    g = torch.Generator().manual_seed(seed)
    W0 = torch.randn(d, d, generator=g) / d ** 0.5
    U, _ = torch.linalg.qr(torch.randn(d, true_rank, generator=g))   # (d, k) orthonormal
    V, _ = torch.linalg.qr(torch.randn(d, true_rank, generator=g))
    sigma = 2.0 ** -torch.arange(true_rank, dtype=torch.float32)      # 1, 1/2, 1/4, ...
    return W0, (U * sigma) @ V.T                                      # (d, k) @ (k, d) -> (d, d)


def train_toy(cfg: ToyConfig) -> ToyRun:
    """Train one LoRA adapter on the toy problem with Adam; deterministic for a given config."""
    W0, target = toy_problem(cfg.d, cfg.true_rank, cfg.seed)
    # Built on the meta device and given W0: nn.Linear's own init would draw from the global RNG.
    base = nn.Linear(cfg.d, cfg.d, bias=False, device="meta").to_empty(device="cpu")
    with torch.no_grad():
        base.weight.copy_(W0)
    base.requires_grad_(False)
    init = torch.Generator().manual_seed(cfg.seed + 1)  # the adapter's init; the same for every α and lr
    layer = LoraLinear(base, LoraConfig(r=cfg.r, lora_alpha=cfg.lora_alpha, use_rslora=cfg.use_rslora,
                                        init_lora_weights=cfg.init_lora_weights), generator=init)
    with torch.no_grad():
        layer.adapter().A.mul_(cfg.init_scale)
    opt = torch.optim.Adam([layer.adapter().A, layer.adapter().B], lr=cfg.lr)
    g = torch.Generator().manual_seed(cfg.seed + 2)  # the data stream, shared by every run
    run = ToyRun(cfg, layer=layer, target_delta=target)
    for _ in range(cfg.steps):
        x = torch.randn(cfg.batch_size, cfg.d, generator=g)  # (b, d)
        y = x @ (W0 + target).T                              # (b, d) @ (d, d) -> (b, d)
        loss = (layer(x) - y).square().mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        with torch.no_grad():
            delta = layer.delta_weight()
            run.losses.append(float((delta - target).square().sum()) / cfg.d)  # E over x ~ N(0, I)
            run.delta_norms.append(float(torch.linalg.matrix_norm(delta)))
    return run


def initial_loss(cfg: ToyConfig) -> float:
    """The loss with ΔW = 0: E‖ΔW* x‖² / d = ‖ΔW*‖_F² / d."""
    _, target = toy_problem(cfg.d, cfg.true_rank, cfg.seed)
    return float(target.square().sum()) / cfg.d


def adam_equivalent(cfg: ToyConfig, alpha_factor: float) -> ToyConfig:
    """The config that retraces `cfg` exactly after multiplying α by `alpha_factor`.

    With ΔW = s·B·A, rescaling A and B by c and s by 1/c² leaves ΔW unchanged, and Adam's steps do
    not depend on the gradient's scale, so the pair moves identically if lr is rescaled by c too.
    With c = 1/√k: (k·α, lr/√k, A₀/√k) ≡ (α, lr, A₀). B₀ = 0 needs no rescaling.
    """
    c = alpha_factor ** -0.5
    return ToyConfig(**{**cfg.__dict__, "lora_alpha": cfg.lora_alpha * alpha_factor, "lr": cfg.lr * c,
                        "init_scale": cfg.init_scale * c})
