"""What the Rank and SVD page shows: a weight's spectrum, a fresh and a random adapter on it, and two
trained adapters compared direction by direction (LoRA, arXiv 2106.09685, sections 4 and 7).

    study = matrix_spectrum(weight_copy(model, layer=0, projection="self_attn.q_proj"))
    fresh_and_random = adapter_spectra(study.matrix, r=8, lora_alpha=16)   # seeded by a local Generator
    pair = trained_pair(r_small=8, r_large=64)                             # the toy task, both ranks

Nothing here touches the process-wide RNG: adapters on a real weight get their factors from a local
`torch.Generator`, so one learner's page never reseeds another's training run.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn as nn

from ..config import LoraConfig
from ..layers import LoraLinear
from ..spectrum import singular_values, spectrum_report, subspace_similarity
from . import toy

# SmolLM2-135M's seven projections in every decoder layer (nn.Linear, weight (out, in)).
PROJECTIONS = ["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
               "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj"]
ADAPTER_INITS = {"fresh adapter (init=True)": True, "random adapter (init=False)": False}


@dataclass(frozen=True)
class MatrixSpectrum:
    """A matrix W (m, n) and its singular values, largest first."""

    matrix: torch.Tensor
    singular_values: torch.Tensor

    @property
    def shape(self) -> tuple[int, int]:
        return tuple(self.matrix.shape)

    @property
    def max_k(self) -> int:
        """How many singular values there are: min(m, n)."""
        return min(self.shape)


def weight_copy(model: nn.Module, layer: int, projection: str) -> torch.Tensor:
    """An fp32 copy of `model.layers.<layer>.<projection>.weight`: a cached, shared model is never touched."""
    if projection not in PROJECTIONS:
        raise ValueError(f"projection={projection!r} is not allowed: use one of {PROJECTIONS}")
    return model.get_submodule(f"model.layers.{layer}.{projection}").weight.detach().float().clone()


def matrix_spectrum(W: torch.Tensor) -> MatrixSpectrum:
    """W with its full spectrum (a plain SVD: W is a frozen weight or a picture, not a LoRA product)."""
    W = W.detach().float()
    return MatrixSpectrum(W, torch.linalg.svdvals(W))


def stored_share(report: dict) -> float:
    """The numbers a rank-k copy stores, k·(m + n), as a share of the m·n it replaces."""
    return report["stored"] / report["full"]


def adapter_on(W: torch.Tensor, cfg: LoraConfig, generator: torch.Generator) -> LoraLinear:
    """A LoRA layer around a frozen Linear holding W (out, in), its factors drawn from `generator`.

    The layer is built around a weightless (meta) Linear, so building it draws nothing from the global
    RNG; then W goes in, shared not copied, and A and B get PEFT's init from the local generator:
    init_lora_weights=True is A Kaiming-uniform and B = 0, False leaves both Kaiming-uniform (what
    nn.Linear gives them). Other inits are not offered here.
    """
    if cfg.init_lora_weights not in (True, False):
        raise ValueError(f"init_lora_weights={cfg.init_lora_weights!r} is not allowed here: use True or False")
    out_features, in_features = W.shape
    base = nn.Linear(in_features, out_features, bias=False, device="meta")
    layer = LoraLinear(base, cfg)
    layer.lora_A.to_empty(device=W.device)   # A (r, in), B (out, r): real storage, values set below
    layer.lora_B.to_empty(device=W.device)
    base.weight = nn.Parameter(W, requires_grad=False)
    with torch.no_grad():
        A, B = layer.adapter().A, layer.adapter().B
        nn.init.kaiming_uniform_(A, a=math.sqrt(5), generator=generator)
        if cfg.init_lora_weights:
            B.zero_()
        else:
            nn.init.kaiming_uniform_(B, a=math.sqrt(5), generator=generator)
    return layer


def adapter_spectra(W: torch.Tensor, r: int, lora_alpha: float, seed: int = 0) -> dict:
    """A fresh and a random adapter on W: ΔW's spectrum from the factors, checked against the full SVD.

    Returns {"reports": {label: spectrum_report}, "rows": table rows, "nonzero": {label: σ} for the
    adapters whose ΔW is not zero (a fresh adapter's is: B starts at zero)}.
    """
    reports = {}
    for label, init in ADAPTER_INITS.items():
        cfg = LoraConfig(r=r, lora_alpha=lora_alpha, init_lora_weights=init)
        reports[label] = spectrum_report(adapter_on(W, cfg, torch.Generator().manual_seed(seed)))
    rows = [{"adapter": label, "largest σ": rep["largest"], "numerical rank": rep["numerical_rank"],
             "effective rank": round(rep["effective_rank"], 2), "max |σ_factors − σ_full|": rep["max_abs_diff"],
             "factors (ms)": round(rep["factors_ms"], 3), "full SVD (ms)": round(rep["full_ms"], 3)}
            for label, rep in reports.items()]
    nonzero = {label: rep["singular_values"] for label, rep in reports.items() if rep["largest"] > 0}
    return {"reports": reports, "rows": rows, "nonzero": nonzero}


def what_the_toy_shows(planted_rank: int) -> str:
    """What recovering a planted target proves, and what it does not (the Rank/SVD page and lesson 04 say this).

    The toy's answer is built into its question, so it cannot stand as evidence for intrinsic rank.
    """
    return (f"The toy's target was **planted** with rank {planted_rank}, so recovering it shows only that LoRA can "
            "find a low-rank update when one exists. It is not evidence that the updates real fine-tuning needs "
            "have low rank. That is the LoRA paper's *intrinsic rank* hypothesis (arXiv 2106.09685). Aghajanyan et "
            "al. 2020 (arXiv 2012.13255) measured something else, intrinsic *dimension*: the size of a random "
            "subspace of all the weights in which fine-tuning still reaches 90% of full fine-tuning's score. "
            "Evidence for intrinsic rank would be the spectrum of ΔW from a real full fine-tune, and a rank sweep "
            "on a pretrained model; LoRA Lab has not measured those yet.")


def trained_pair(r_small: int = 8, r_large: int = 64, steps: int = 300, top: int = 16) -> dict:
    """Two adapters trained on the same toy task (a planted rank-4 target), compared direction by direction.

    φ on A is the paper's definition (right singular vectors of A); φ on ΔW looks at the input
    directions the update really uses (A keeps part of its random init, which blurs φ on A).
    """
    runs = {r: toy.train_toy(toy.ToyConfig(r=r, lora_alpha=2 * r, lr=2e-3, steps=steps)) for r in (r_small, r_large)}
    small, large = runs[r_small], runs[r_large]
    phi = subspace_similarity(small.layer.adapter().A.detach(), large.layer.adapter().A.detach())
    phi_delta = subspace_similarity(small.layer.delta_weight().detach(), large.layer.delta_weight().detach())
    true_rank = small.config.true_rank
    return {
        "labels": (f"r={r_small}", f"r={r_large}"),
        "spectra": {"target ΔW*": torch.linalg.svdvals(small.target_delta)[:top],
                    f"trained r={r_small}": singular_values(small.layer)[:top],
                    f"trained r={r_large}": singular_values(large.layer)[:top]},
        "phi": phi, "phi_top1": float(phi[0, 0]), "phi_top_true_rank": float(phi[true_rank - 1, true_rank - 1]),
        "phi_delta_top_true_rank": float(phi_delta[true_rank - 1, true_rank - 1]),
        "true_rank": true_rank, "d": small.config.d, "random_phi": true_rank / small.config.d,
        "extra_directions": r_large - true_rank, "what_it_shows": what_the_toy_shows(true_rank),
    }


def adapter_directions(report: list[dict]) -> dict[str, dict[str, torch.Tensor]]:
    """{layer: {"A", "sv"}} from `spectrum.adapter_report`: what a later comparison of two adapters needs."""
    return {row["layer"]: {"A": row["A"], "sv": row["singular_values"]} for row in report}


def shared_layers(first: dict[str, dict], second: dict[str, dict]) -> list[str]:
    """The layers two adapters (as `adapter_directions` keeps them) both adapt, in the first one's order."""
    return [layer for layer in first if layer in second]


def compare_adapters(first: dict[str, dict], second: dict[str, dict], layer: str) -> dict:
    """ΔW spectra of one layer in two adapters, and φ between their A's."""
    if layer not in first or layer not in second:
        raise ValueError(f"layer={layer!r} is not allowed: both adapters must adapt it; shared layers are "
                         f"{shared_layers(first, second)}")
    one, two = first[layer], second[layer]
    phi = subspace_similarity(one["A"], two["A"])
    return {"spectra": (one["sv"], two["sv"]), "phi": phi, "phi_top1": float(phi[0, 0])}
