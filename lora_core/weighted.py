"""Weighted adapters: one new adapter made of a weighted mix of a model's adapters (PEFT's add_weighted_adapter).

    lc.add_weighted_adapter(model, ["x", "y"], [1.0, -0.5], "mix", combination_type="svd")
    lc.set_adapter(model, "mix")                      # added inactive and frozen, like any added adapter

Per layer, over the sources that layer holds (peft/tuners/lora/model.py 682-951, PEFT 0.21), with sᵢ the
scaling of source i and ΔWᵢ = sᵢ·Bᵢ@Aᵢ:
  cat       A' = cat(wᵢ·sᵢ·Aᵢ), B' = cat(Bᵢ): rank Σrᵢ and ΔW' = Σ wᵢ·ΔWᵢ exactly.
  ..._svd   ΔW' = combine(ΔWᵢ, wᵢ) by task arithmetic ("svd"), TIES, DARE or magnitude pruning (combining.py),
            then its top r' singular triplets: B' = U_r' diag(S_r'), A' = Vh_r' (r' = svd_rank or the largest rᵢ).
  linear    the combining step on the factors themselves: A' = combine(sign·√|wᵢsᵢ|·Aᵢ), B' = combine(√|wᵢsᵢ|·Bᵢ)
  family    (linear, ties, dare_linear, dare_ties, magnitude_prune). Every rᵢ must be equal; with two sources or
            more ΔW' holds cross terms Bᵢ@Aⱼ, an approximation by design (PEFT #3004). The sign sits on A only,
            so a negative weight is not squared away (PEFT #2918).
One source is always `linear` (PEFT's collapse, whatever was asked), which gives exactly w·ΔW.

Where lora_core differs from PEFT 0.21, on purpose:
  * the new adapter's scaling is exactly 1 (lora_alpha = r', use_rslora=False): PEFT keeps the first source's
    use_rslora (model.py 758-765), so its scaling is √r' and one rsLoRA source with weight 1.0 comes back √r
    times too large (PEFT #3761);
  * the new config is built, not inherited: bias="none" (PEFT's inherited bias makes its injection raise),
    init_lora_weights=False (an inherited "pissa" would rewrite the base), no layers_to_transform (it dropped the
    other sources' layers), target_modules = the full names of the layers holding a source (PEFT joins lists, or
    regexes, and refuses a mix);
  * exactly the new adapter is frozen (PEFT's _freeze_adapter freezes every parameter whose name *contains* the
    new name: "fault" freezes "default");
  * an existing adapter_name is a ValueError (PEFT returns silently); so are weights that do not pair with the
    adapters one to one (PEFT's zip truncates), density missing or given where it means nothing, non-finite
    weights, and a rank a layer cannot hold;
  * DARE draws its masks from `generator` (None: torch's global RNG, as PEFT);
  * a module a source saves in full (modules_to_save, a task head) comes with that source's trained copy (PEFT
    gives the new adapter a fresh copy of the *original* module, and only for the first source's modules);
  * DoRA: one DoRA source keeps its magnitude (weight 1.0 gives it back unchanged); several sources with a DoRA
    one are refused, as a merged direction has no magnitude (PEFT drops magnitudes silently, #3761).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

import torch
import torch.nn as nn

from . import combining
from .adapters import add_adapter
from .config import LoraConfig, check_adapter_name, reject
from .inject import ModulesToSaveWrapper, lora_layers
from .layers import Adapter, LoraLayer

LINEAR_FAMILY = ("linear", "ties", "dare_linear", "dare_ties", "magnitude_prune")
SVD_FAMILY = ("svd", "ties_svd", "dare_linear_svd", "dare_ties_svd", "magnitude_prune_svd")
COMBINATION_TYPES = ("svd", "linear", "cat", "ties", "ties_svd", "dare_ties", "dare_linear", "dare_ties_svd",
                     "dare_linear_svd", "magnitude_prune", "magnitude_prune_svd")  # PEFT's order
PRUNING = tuple(t for t in COMBINATION_TYPES if t.split("_")[0] in ("ties", "dare", "magnitude"))  # need density


def combining_method(combination_type: str) -> str:
    """The combining.py method behind a combination type: "dare_ties_svd" -> "dare_ties", "svd" -> task_arithmetic."""
    base = combination_type.removesuffix("_svd")
    return "task_arithmetic" if base in ("linear", "svd") else base


def add_weighted_adapter(
    model: nn.Module,
    adapters: Sequence[str],
    weights: Sequence[float],
    adapter_name: str,
    combination_type: str = "svd",
    svd_rank: int | None = None,
    svd_clamp: float | None = None,
    svd_full_matrices: bool = True,
    density: float | None = None,
    majority_sign_method: str = "total",
    generator: torch.Generator | None = None,
) -> list[str]:
    """Add adapter `adapter_name`, a weighted mix of `adapters`; returns the layers it lives in (those holding a
    source). It is added inactive and frozen: `set_adapter(model, adapter_name)` runs it.

    `density` (the fraction kept) is for the ties, dare and magnitude_prune types; `svd_rank`, `svd_clamp` (a
    quantile at which U and Vh are clamped) and `svd_full_matrices` for the ..._svd types. `generator` draws DARE's
    masks (on the model's device). Everything is checked first: a ValueError leaves the model as it was.
    """
    configs = getattr(model, "lora_configs", None)
    if not configs:
        raise ValueError("model has no LoRA adapter: the sources of a weighted adapter are adapters of the model")
    check_adapter_name(adapter_name)
    if adapter_name in configs:
        reject("adapter_name", adapter_name, f"it names an existing adapter of {list(configs)}: pick a new name "
                                             "(PEFT returns silently here, adding nothing)")
    adapters, weights = _checked_sources(configs, adapters, weights)
    _check_options(combination_type, svd_rank, svd_clamp, svd_full_matrices, density, majority_sign_method)
    kind = "linear" if len(adapters) == 1 else combination_type  # PEFT's one-source collapse (model.py 635)
    rank = _new_rank(configs, adapters, kind, svd_rank)
    held = [(name, layer) for name, layer in lora_layers(model) if any(a in layer.r for a in adapters)]
    dora = _check_layers(adapters, kind, rank, svd_rank, held)
    copies = _saved_copies(model, adapters)

    first = configs[adapters[0]]
    cfg = dataclasses.replace(first, r=rank, lora_alpha=rank, use_rslora=False, use_dora=dora, bias="none",
                              init_lora_weights=False, target_modules=[name for name, _ in held],
                              layers_to_transform=None, layers_pattern=None, modules_to_save=sorted(copies) or None)
    # The random init the config asks for is overwritten below: drawn from a private generator, it moves neither
    # the global RNG nor `generator`, whose first numbers are DARE's first mask, as in PEFT.
    names = add_adapter(model, adapter_name, cfg, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        for name in names:  # in model order: the order in which PEFT draws DARE's masks
            layer = model.get_submodule(name)
            sources = [(a, w) for a, w in zip(adapters, weights, strict=True) if a in layer.r]
            new = layer.adapter(adapter_name)
            A, B = _mixed_factors(layer, new, sources, kind, svd_clamp, svd_full_matrices, density,
                                  majority_sign_method, generator)
            new.A.copy_(A)
            new.B.copy_(B)
            if dora:
                _copy_magnitude(layer, adapters[0], adapter_name)
        for name, source in copies.items():  # add_adapter gave it a frozen copy of the original: make it the source's
            saved = model.get_submodule(name).modules_to_save
            saved[adapter_name].load_state_dict(saved[source].state_dict())
    return names


# --- checks -----------------------------------------------------------------------------------------------------
def _checked_sources(configs: dict[str, LoraConfig], adapters: Sequence[str],
                     weights: Sequence[float]) -> tuple[list[str], list[float]]:
    if isinstance(adapters, str) or not isinstance(adapters, Sequence) or not adapters:
        reject("adapters", adapters, f"a non-empty list of the model's adapter names, from {list(configs)}")
    if unknown := [a for a in adapters if a not in configs]:
        reject("adapters", list(adapters), f"{unknown[0]!r} is not an adapter of this model, which has {list(configs)}")
    if isinstance(weights, str) or not isinstance(weights, Sequence) or len(weights) != len(adapters):
        reject("weights", weights, f"one weight per adapter, {len(adapters)} in all (PEFT's zip drops the extras)")
    for w in weights:
        if isinstance(w, bool) or not isinstance(w, (int, float)) or not math.isfinite(w):
            reject("weights", list(weights), "finite numbers, one per adapter (negative ones subtract)")
    return list(adapters), [float(w) for w in weights]


def _check_options(combination_type: str, svd_rank: int | None, svd_clamp: float | None, svd_full_matrices: bool,
                   density: float | None, majority_sign_method: str) -> None:
    if combination_type not in COMBINATION_TYPES:
        reject("combination_type", combination_type, f"one of {list(COMBINATION_TYPES)}")
    if combination_type in PRUNING:
        if isinstance(density, bool) or not isinstance(density, (int, float)) or not 0 < density <= 1:
            reject("density", density, f"combination_type={combination_type!r} prunes: give the fraction of values "
                                       "to keep, 0 < density <= 1")
    elif density is not None:
        reject("density", density, f"combination_type={combination_type!r} prunes nothing: leave density=None")
    if combination_type not in SVD_FAMILY:
        for field, value in (("svd_rank", svd_rank), ("svd_clamp", svd_clamp)):
            if value is not None:
                reject(field, value, f"combination_type={combination_type!r} takes no SVD: leave {field}=None")
    if svd_rank is not None and (isinstance(svd_rank, bool) or not isinstance(svd_rank, int) or svd_rank < 1):
        reject("svd_rank", svd_rank, "a positive integer, or None for the largest source rank")
    if svd_clamp is not None and (isinstance(svd_clamp, bool) or not isinstance(svd_clamp, (int, float))
                                  or not 0 <= svd_clamp <= 1):
        reject("svd_clamp", svd_clamp, "a quantile, 0 <= svd_clamp <= 1, or None for no clamping")
    if not isinstance(svd_full_matrices, bool):
        reject("svd_full_matrices", svd_full_matrices, "True or False")
    if majority_sign_method not in combining.MAJORITY_SIGN_METHODS:
        reject("majority_sign_method", majority_sign_method, f"one of {list(combining.MAJORITY_SIGN_METHODS)}")


def _new_rank(configs: dict[str, LoraConfig], adapters: list[str], kind: str, svd_rank: int | None) -> int:
    """PEFT's rank rules (model.py 637-657): one shared r for the linear family, Σr for cat, svd_rank or max r."""
    ranks = [configs[a].r for a in adapters]
    if kind in LINEAR_FAMILY:
        if len(set(ranks)) != 1:
            reject("combination_type", kind, f"{kind!r} combines the factors themselves, so every source needs one "
                                             f"r, and {adapters} have r={ranks}: use 'cat' or an svd type")
        return ranks[0]
    if kind == "cat":
        return sum(ranks)
    return svd_rank or max(ranks)


def _check_layers(adapters: list[str], kind: str, rank: int, svd_rank: int | None,
                  held: list[tuple[str, LoraLayer]]) -> bool:
    """Refuse a rank some layer cannot hold, and DoRA among several sources; True when the one source is DoRA."""
    for name, layer in held:
        if rank > (most := min(layer.in_features, layer.out_features)):
            field, value = ("svd_rank", svd_rank) if svd_rank is not None else ("combination_type", kind)
            reject(field, value, f"the new adapter's rank r'={rank} is above min(in, out) = {most} of layer "
                                 f"{name!r} ({layer.in_features}→{layer.out_features}); use an svd type with "
                                 f"svd_rank <= {most}")
    dora = [a for a in dict.fromkeys(adapters) if any(a in layer.lora_magnitude_vector for _, layer in held)]
    if dora and len(adapters) > 1:
        reject("adapters", adapters, f"{dora[0]!r} is a DoRA adapter: a weighted mix of several sources has no "
                                     "defined magnitude (PEFT drops the magnitudes silently, #3761)")
    return bool(dora)


def _saved_copies(model: nn.Module, adapters: list[str]) -> dict[str, str]:
    """{module saved in full: the one source holding a trained copy of it}. Two sources with copies of one module
    are refused, as in PEFT (model.py 620-631): whole modules have no weighted mix here."""
    copies = {}
    for name, wrapper in model.named_modules():
        if isinstance(wrapper, ModulesToSaveWrapper):
            holders = [a for a in dict.fromkeys(adapters) if a in wrapper.modules_to_save]
            if len(holders) > 1:
                reject("adapters", adapters, f"{holders} each hold a copy of {name!r} (modules_to_save), and copies "
                                             "of one module are not mixed: keep at most one of them")
            if holders:
                copies[name] = holders[0]
    return copies


# --- the new factors of one layer --------------------------------------------------------------------------------
def _mixed_factors(layer: LoraLayer, new: Adapter, sources: list[tuple[str, float]], kind: str,
                   svd_clamp: float | None, svd_full_matrices: bool, density: float | None,
                   majority_sign_method: str, generator: torch.Generator | None) -> tuple[torch.Tensor, torch.Tensor]:
    """(A', B') shaped like the `new` adapter's factors, from the sources this layer holds (zeros if none)."""
    A, B = torch.zeros_like(new.A), torch.zeros_like(new.B)
    if not sources:
        return A, B
    if kind == "cat":
        A_cat = torch.cat([layer.adapter(a).A * w * layer.adapter(a).scaling for a, w in sources])  # (Σr, in, ...)
        B_cat = torch.cat([layer.adapter(a).B for a, _ in sources], dim=1)                        # (out, Σr, ...)
        A[:A_cat.shape[0]], B[:, :B_cat.shape[1]] = A_cat, B_cat  # a layer lacking a source keeps zero rows
        return A, B
    method = combining_method(kind)
    if kind in SVD_FAMILY:
        return _svd_factors(layer, sources, method, new.r, svd_clamp, svd_full_matrices, density,
                            majority_sign_method, generator, new.A.shape, new.B.shape)
    weights_A, weights_B = [], []
    for a, w in sources:  # √|w·s| on each factor, the sign on A only (PEFT #2918)
        ws = w * layer.adapter(a).scaling
        weights_A.append(math.sqrt(abs(ws)) * (1 if ws >= 0 else -1))
        weights_B.append(math.sqrt(abs(ws)))
    options = dict(density=density, majority_sign_method=majority_sign_method, generator=generator)
    A = combining.combine(method, [layer.adapter(a).A for a, _ in sources], weights_A, **options)  # A's masks first
    B = combining.combine(method, [layer.adapter(a).B for a, _ in sources], weights_B, **options)
    return A, B


def _svd_factors(layer: LoraLayer, sources: list[tuple[str, float]], method: str, rank: int,
                 svd_clamp: float | None, full_matrices: bool, density: float | None, majority_sign_method: str,
                 generator: torch.Generator | None, A_shape: torch.Size,
                 B_shape: torch.Size) -> tuple[torch.Tensor, torch.Tensor]:
    """Combine the ΔWᵢ, then keep the top `rank` singular triplets: B' = U diag(S), A' = Vh."""
    # Each ΔWᵢ (scaling applied once; the weights stay raw, PEFT #3111) is combined as PEFT lays it out: (in, out)
    # for Conv1D and Embedding. DARE draws its masks in that order, so the same seed gives PEFT's masks.
    deltas = [layer.delta_weight(a) for a, _ in sources]  # (out, in), or (out, in, kh, kw) for Conv2d
    deltas = [d.T for d in deltas] if layer.fan_in_fan_out else deltas
    merged = combining.combine(method, deltas, [w for _, w in sources], density, majority_sign_method, generator)
    # (out, in) or (out, in·kh·kw); PEFT squeezes a 1×1 kernel's instead, which breaks with one channel in or out
    merged = merged.T if layer.fan_in_fan_out else merged.flatten(1)
    U, S, Vh = torch.linalg.svd(merged, full_matrices=full_matrices)  # merged = U diag(S) Vh
    B = U[:, :rank] @ torch.diag(S[:rank])  # (out, r') @ (r', r') -> (out, r')
    A = Vh[:rank]                           # (r', in)
    if svd_clamp is not None:  # clamp both at one quantile of all their entries (kohya's svd_merge_lora)
        high = torch.quantile(torch.cat([B.flatten(), A.flatten()]), svd_clamp)
        B, A = B.clamp(-high, high), A.clamp(-high, high)
    return A.reshape(A_shape), B.reshape(B_shape)


def _copy_magnitude(layer: LoraLayer, source: str, adapter_name: str) -> None:
    """Give the new adapter the source's DoRA magnitude m (frozen), so weight 1.0 returns the source unchanged.
    (update_layer made one from the discarded init, as PEFT does and then keeps, #3761.)"""
    magnitudes = layer.lora_magnitude_vector
    if source in magnitudes:
        magnitudes[adapter_name].load_state_dict(magnitudes[source].state_dict())
        magnitudes[adapter_name].requires_grad_(False)
