"""What the Scaling page shows: α/r against rsLoRA's α/√r, real toy runs under both rules, and α acting
like a learning rate under Adam. LoRA (arXiv 2106.09685) scales B·A by α/r; rsLoRA (Kalajdzievski 2023,
arXiv 2312.03732) argues for α/√r so that learning does not stall as r grows.

    rules = scale_rules(alpha=16, ranks=[1, 2, 4, 8], r=4)     # every number from LoraConfig.scaling
    runs = rule_runs([4, 16, 64], alpha=16, lr=1e-3, steps=150)
"""

from __future__ import annotations

from collections.abc import Callable

from ..config import LoraConfig
from . import toy

RULES = {False: "α/r", True: "α/√r"}           # use_rslora -> the rule's short name
QLORA_RECIPE = {"r": 64, "lora_alpha": 16}     # a common QLoRA setting: a scale of 1/4
ADAM_BASE = toy.ToyConfig(r=8, lora_alpha=16, lr=1e-3, steps=80)
ADAM_TABLE_STEPS = (1, 5, 20, 80)


def scale_rules(alpha: float, ranks: list[int], r: int) -> dict:
    """The scale under both rules for every rank, and at the chosen `r` (LoraConfig checks α and r)."""
    def scale(rank: int, rslora: bool) -> float:
        return LoraConfig(r=rank, lora_alpha=alpha, use_rslora=rslora).scaling

    return {"curves": {"α/r (LoRA, PEFT default)": [scale(k, False) for k in ranks],
                       "α/√r (use_rslora=True)": [scale(k, True) for k in ranks]},
            "picked": scale(r, False), "picked_rs": scale(r, True), "alpha": alpha, "r": r}


def qlora_recipe() -> dict:
    """The QLoRA recipe's scale under both rules, and how much α/r shrinks B·A."""
    plain = LoraConfig(**QLORA_RECIPE).scaling
    return {**QLORA_RECIPE, "scale": plain, "shrink": 1 / plain,
            "scale_rs": LoraConfig(**QLORA_RECIPE, use_rslora=True).scaling}


def toy_curves(r: int, alpha: float, rslora: bool, lr: float, steps: int) -> dict:
    """One toy run: expected loss and ‖ΔW‖_F per step, its scale, and the loss it started from."""
    out = toy.train_toy(toy.ToyConfig(r=r, lora_alpha=alpha, use_rslora=rslora, lr=lr, steps=steps))
    return {"loss": out.losses, "norm": out.delta_norms, "scale": out.layer.adapter().scaling,
            "initial": toy.initial_loss(out.config)}


def rule_runs(ranks: list[int], alpha: float, lr: float, steps: int,
              train: Callable[[int, float, bool, float, int], dict] = toy_curves) -> dict[tuple[int, bool], dict]:
    """{(r, use_rslora): toy_curves} for every rank under both rules. `train` may be a cached toy_curves."""
    if not ranks:
        raise ValueError("ranks=[] is not allowed: pick at least one rank to train")
    return {(r, rs): train(r, alpha, rs, lr, steps) for rs in RULES for r in sorted(ranks)}


def loss_curves(runs: dict[tuple[int, bool], dict], rslora: bool) -> dict[str, list[float]]:
    """{"r=4": losses, ...} of the runs under one rule."""
    return {f"r={r}": v["loss"] for (r, flag), v in runs.items() if flag == rslora}


def norm_curves(runs: dict[tuple[int, bool], dict]) -> tuple[dict[str, list[float]], list[str]]:
    """{"r=4, α/r": ‖ΔW‖_F per step, ...} for every run, and the names of the rsLoRA ones (drawn dashed)."""
    curves = {f"r={r}, {RULES[rs]}": v["norm"] for (r, rs), v in runs.items()}
    return curves, [f"r={r}, {RULES[True]}" for (r, rs) in runs if rs]


def run_table(runs: dict[tuple[int, bool], dict]) -> list[dict]:
    """One row per run: its scale, final loss, the share of the starting loss left, and the final ‖ΔW‖_F."""
    return [{"r": r, "rule": RULES[rs], "scale": v["scale"], "final loss": v["loss"][-1],
             "loss left (%)": 100 * v["loss"][-1] / v["initial"], "final ‖ΔW‖_F": v["norm"][-1]}
            for (r, rs), v in runs.items()]


def adam_pair(base: toy.ToyConfig = ADAM_BASE) -> dict:
    """(α, lr) against (2α, lr/2) and against the exact equivalent (2α, lr/√2, A₀/√2): losses per step.

    Returns {"curves": {label: losses}, "dashed": [the exact equivalent's label], "table": rows at a few steps}.
    """
    half = toy.ToyConfig(**{**base.__dict__, "lora_alpha": 2 * base.lora_alpha, "lr": base.lr / 2})
    twin = toy.adam_equivalent(base, 2.0)
    labels = (f"(α={base.lora_alpha:g}, lr={_short(base.lr)})", f"(α={half.lora_alpha:g}, lr={_short(half.lr)})",
              f"(α={twin.lora_alpha:g}, lr={_short(twin.lr)}, A₀/√2)")
    curves = {label: toy.train_toy(cfg).losses for label, cfg in zip(labels, (base, half, twin), strict=True)}
    steps = [s for s in ADAM_TABLE_STEPS if s <= base.steps]
    table = [{"step": s, **{label: losses[s - 1] for label, losses in curves.items()}} for s in steps]
    return {"curves": curves, "dashed": [labels[2]], "table": table}


def _short(x: float) -> str:
    """A learning rate as people write it: 1e-3, 5e-4, 7.07e-4."""
    mantissa, exponent = f"{x:.2e}".split("e")
    return f"{mantissa.rstrip('0').rstrip('.')}e{int(exponent)}"
