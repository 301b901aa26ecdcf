"""Optimizers made for LoRA's two factors: LoRA+ and LoRA-FA, with PEFT 0.21's semantics.

    opt = create_loraplus_optimizer(model, torch.optim.AdamW, lr=2e-4, loraplus_lr_ratio=16)
    opt = create_lorafa_optimizer(model, r=8, lora_alpha=16, lr=1e-3)   # freezes every A

LoRA+ (Hayou et al. 2024, arXiv 2402.12354): A and B play different roles, so one learning rate is not
right for both; B should learn faster, lr_B = loraplus_lr_ratio * lr_A. It is only a choice of parameter
groups handed to any torch optimizer (peft/optimizers/loraplus.py).

LoRA-FA (Zhang et al. 2023, arXiv 2308.03303): A stays frozen at its random init and only B trains. A
frozen A needs no copy of the layer input x for its gradient, which is the activation memory saved
(`lorafa_activation_savings`). PEFT's LoraFAOptimizer (peft/optimizers/lorafa.py) also changes B's
gradient: with A fixed, the B update that best approximates full fine-tuning's gradient g_W in the
least-squares sense, min ‖s·g̃_B A − g_W‖_F, is

    g̃_B = (1/s²) · g_B (A Aᵀ)⁻¹          (g_B = s · g_W Aᵀ is what autograd gives, s = scaling)

and that g̃_B is fed to transformers' AdamW ("adamw-hf": eps outside the bias correction, weight decay
applied after the step). Every other trainable parameter (a bias, a saved head) gets plain adamw-hf.
PEFT computes g_B (A Aᵀ)⁻¹ under bf16 autocast wherever accelerate reports bf16 (every CPU, most GPUs), so
by default we round it through bf16 too (`projection_dtype`): bit-equal to PEFT in tests/test_optimizers.py.

Where we depart from PEFT, on purpose (each is said again where it happens): groups and frozen factors are
found by module type, not by "lora_A"/"lora_B" in a name (PEFT leaves an Embedding's A trainable under LoRA-FA,
though it never updates it); bad values raise a ValueError; a B without a gradient is skipped, as torch's
optimizers skip it, where PEFT fails; a closure runs with autograd on; a conv layer's factors are read
as matrices (PEFT's `A @ A.T` fails on them).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import torch
import torch.nn as nn
from torch.optim import Optimizer
from transformers.pytorch_utils import ALL_LAYERNORM_LAYERS

from .config import reject
from .layers import LoraEmbedding, LoraLayer

LORAPLUS_GROUPS = ("groupA", "embedding", "groupB", "groupB_no_decay")  # PEFT's names, in its order
PROJECTION_DELTA = 1e-8  # PEFT's ridge on A Aᵀ before the (pseudo-)inverse


def _check_positive(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        reject(name, value, "it must be a finite number > 0")


def _check_non_negative(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
        reject(name, value, "it must be a finite number >= 0")


def _lora_layers_of(model: nn.Module) -> list[LoraLayer]:
    layers = [m for m in model.modules() if isinstance(m, LoraLayer)]
    if not layers:
        raise ValueError("model has no LoRA layers: call inject_lora(model, cfg) before building a LoRA optimizer")
    return layers


# --- LoRA+ ------------------------------------------------------------------------------------------------------------
def decay_parameter_names(model: nn.Module) -> set[str]:
    """The parameters transformers' Trainer (and so PEFT's LoRA+) applies weight decay to.

    transformers' get_parameter_names(model, ALL_LAYERNORM_LAYERS), then every name containing "bias": so
    nothing inside a LayerNorm decays, while an RMSNorm weight (Llama's) does, since ALL_LAYERNORM_LAYERS
    is [nn.LayerNorm] alone. "bias" is tested on the whole dotted name, as PEFT does.
    """
    norms = tuple(ALL_LAYERNORM_LAYERS)
    in_norm = {f"{owner}.{leaf}" for owner, m in model.named_modules() if owner and isinstance(m, norms)
               for leaf, _ in m.named_parameters()}
    return {n for n, _ in model.named_parameters() if n not in in_norm and "bias" not in n}


def loraplus_parameter_groups(model: nn.Module) -> dict[str, list[tuple[str, nn.Parameter]]]:
    """The trainable parameters of `model` in PEFT's four LoRA+ groups, each in named_parameters order.

    embedding:        what a LoraEmbedding's children hold (its A and B; its table, should it train)
    groupB:           every LoRA B, and any trainable 1-D tensor (biases, norm weights) that decays
    groupB_no_decay:  the same, where transformers' rule says no decay (biases, LayerNorm weights)
    groupA:           the rest: every LoRA A and any saved matrix (a head in modules_to_save)

    PEFT puts biases with B (the LoRA+ reference code's `ndim == 1` rule), so they get B's learning rate.
    """
    _lora_layers_of(model)
    embedding: set[int] = set()
    factors_b: set[int] = set()
    for m in model.modules():
        if isinstance(m, LoraEmbedding):
            # PEFT's test: the module two names above the parameter is its lora Embedding layer
            embedding.update(id(p) for child in m.children() for p in child.parameters(recurse=False))
        elif isinstance(m, LoraLayer):
            factors_b.add(id(m.lora_B.weight))
    decays = decay_parameter_names(model)
    groups: dict[str, list[tuple[str, nn.Parameter]]] = {g: [] for g in LORAPLUS_GROUPS}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        if id(p) in embedding:
            group = "embedding"
        elif id(p) in factors_b or p.ndim == 1:
            group = "groupB" if name in decays else "groupB_no_decay"
        else:
            group = "groupA"
        groups[group].append((name, p))
    return groups


def create_loraplus_optimizer(model: nn.Module, optimizer_cls: type[Optimizer], *, lr: float, loraplus_lr_ratio: float,
                              loraplus_lr_embedding: float = 1e-6, loraplus_weight_decay: float = 0.0,
                              **kwargs: Any) -> Optimizer:
    """`optimizer_cls` over PEFT's four LoRA+ groups: A at `lr`, B at `lr * loraplus_lr_ratio`.

    Groups, in PEFT's order (all four are always there, some maybe empty):
      groupA          lr                        weight_decay = loraplus_weight_decay
      embedding       loraplus_lr_embedding     loraplus_weight_decay   (a LoRA'd embedding's A and B)
      groupB          lr * loraplus_lr_ratio    loraplus_weight_decay
      groupB_no_decay lr * loraplus_lr_ratio    0.0
    `kwargs` go to `optimizer_cls` (betas, eps, ...). Decay is set per group, so a `weight_decay` kwarg would
    be overridden in every group: PEFT ignores it silently, we refuse it. PEFT's extra step for
    bitsandbytes' 8-bit optimizers (32-bit state for embeddings) is not done here.
    """
    if not (isinstance(optimizer_cls, type) and issubclass(optimizer_cls, Optimizer)):
        reject("optimizer_cls", optimizer_cls, "give a torch.optim.Optimizer subclass, e.g. torch.optim.AdamW")
    _check_positive("lr", lr)
    _check_positive("loraplus_lr_ratio", loraplus_lr_ratio)
    _check_positive("loraplus_lr_embedding", loraplus_lr_embedding)
    _check_non_negative("loraplus_weight_decay", loraplus_weight_decay)
    if "weight_decay" in kwargs:
        reject("weight_decay", kwargs["weight_decay"], "LoRA+ sets decay per group and would ignore it "
               "(as PEFT does): pass loraplus_weight_decay, which groupA, embedding and groupB get")
    groups = loraplus_parameter_groups(model)
    settings = {  # group -> (lr, weight_decay)
        "groupA": (lr, loraplus_weight_decay),
        "embedding": (loraplus_lr_embedding, loraplus_weight_decay),
        "groupB": (lr * loraplus_lr_ratio, loraplus_weight_decay),
        "groupB_no_decay": (lr * loraplus_lr_ratio, 0.0),
    }
    param_groups = [{"params": [p for _, p in groups[g]], "lr": settings[g][0], "weight_decay": settings[g][1]}
                    for g in LORAPLUS_GROUPS]
    return optimizer_cls(param_groups, lr=lr, **kwargs)


# --- LoRA-FA ----------------------------------------------------------------------------------------------------------
def lorafa_gradient(grad_B: torch.Tensor, A: torch.Tensor, scaling: float,
                    projection_dtype: torch.dtype | None = torch.bfloat16) -> torch.Tensor:
    """g̃_B = (1/s²) · g_B (A Aᵀ + δI)⁻¹, B's gradient as LoRA-FA uses it, in g_B's shape and dtype.

    A and B are read as matrices (r, in) and (out, r), so a conv layer's factors work too (PEFT's
    `A @ A.T` does not handle a 4-D conv weight). PEFT 0.21 runs the last product under bf16 autocast
    wherever accelerate reports bf16 support (every CPU, most GPUs): `projection_dtype` rounds its two
    inputs and its result to bf16 the same way. None keeps g_B's own precision.
    """
    B_shape = grad_B.shape
    g = grad_B.flatten(1)                                              # (out, r)
    A = A.flatten(1)                                                   # (r, in)
    gram = A @ A.T                                                     # (r, in) @ (in, r) -> (r, r)
    ridge = PROJECTION_DELTA * torch.eye(A.shape[0], device=A.device, dtype=A.dtype)
    inverse = torch.linalg.pinv(gram + ridge)                          # (r, r); pinv, as PEFT, for its exact numbers
    if projection_dtype is not None:  # what autocast does to a matmul: cast both inputs, product in that dtype
        g, inverse = g.to(projection_dtype), inverse.to(projection_dtype)
    projected = (1 / scaling**2) * (g @ inverse)                       # (out, r) @ (r, r) -> (out, r)
    return projected.to(grad_B.dtype).view(B_shape)


class LoraFAOptimizer(Optimizer):
    """transformers' AdamW ("adamw-hf"), where each LoRA B's gradient is first projected through its frozen A.

    `frozen_A` maps each B in `params` to (its layer's A, its layer's scaling); any other parameter gets
    plain adamw-hf. A itself must not be in `params`: LoRA-FA never updates it. The map is not part of
    state_dict(): the A tensors belong to the model, so rebuild the optimizer from the model, then load.
    Defaults are PEFT's (lr 1e-3, betas (0.9, 0.999), eps 1e-6, no decay, bias correction on).
    """

    def __init__(self, params: Iterable[torch.Tensor] | Iterable[dict[str, Any]], lr: float = 1e-3,
                 betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-6, weight_decay: float = 0.0,
                 correct_bias: bool = True, *,
                 frozen_A: Mapping[torch.Tensor, tuple[torch.Tensor, float]] | None = None,
                 projection_dtype: torch.dtype | None = torch.bfloat16):
        _check_positive("lr", lr)
        for i, beta in enumerate(betas):
            if not 0.0 <= beta < 1.0:
                reject(f"betas[{i}]", beta, "each beta must be in [0, 1)")
        _check_non_negative("eps", eps)
        _check_non_negative("weight_decay", weight_decay)
        defaults = dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, correct_bias=correct_bias)
        super().__init__(params, defaults)
        self.frozen_A = dict(frozen_A or {})
        self.projection_dtype = projection_dtype
        trained = {id(p) for group in self.param_groups for p in group["params"]}
        for B, (A, scaling) in self.frozen_A.items():
            if id(B) not in trained:
                raise ValueError(f"frozen_A has a B of shape {tuple(B.shape)} that is not in params: "
                                 "every key of frozen_A must be a parameter this optimizer updates")
            if id(A) in trained:
                raise ValueError(f"frozen_A's A of shape {tuple(A.shape)} is also in params: LoRA-FA keeps A "
                                 "frozen, so leave it out of params (create_lorafa_optimizer does)")
            if B.flatten(1).shape[1] != A.shape[0]:
                raise ValueError(f"frozen_A pairs B of shape {tuple(B.shape)} with A of shape {tuple(A.shape)}: "
                                 "B's second dimension must be A's first (the rank r)")
            _check_positive("scaling", scaling)

    @torch.no_grad()
    def step(self, closure: Callable[[], torch.Tensor] | None = None) -> torch.Tensor | None:
        loss = None
        if closure is not None:
            with torch.enable_grad():  # PEFT calls it under no_grad, where its backward() cannot run
                loss = closure()
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                grad = p.grad
                if p in self.frozen_A:
                    A, scaling = self.frozen_A[p]
                    grad = lorafa_gradient(grad, A, scaling, self.projection_dtype)
                self._adamw_hf_update(p, grad, self.state[p], group)
        return loss

    @staticmethod
    def _adamw_hf_update(p: torch.Tensor, grad: torch.Tensor, state: dict[str, Any], group: dict[str, Any]) -> None:
        """One adamw-hf step, in PEFT's order of operations (so its rounding too)."""
        if not state:
            state["step"] = 0
            state["exp_avg"] = torch.zeros_like(p)      # m, the running mean of g
            state["exp_avg_sq"] = torch.zeros_like(p)   # v, the running mean of g²
        beta1, beta2 = group["betas"]
        state["step"] += 1
        exp_avg, exp_avg_sq = state["exp_avg"], state["exp_avg_sq"]
        exp_avg.mul_(beta1).add_(grad, alpha=1.0 - beta1)
        exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1.0 - beta2)
        denom = exp_avg_sq.sqrt().add_(group["eps"])  # eps added before the bias correction, unlike torch's AdamW
        step_size = group["lr"]
        if group["correct_bias"]:
            step_size = step_size * math.sqrt(1.0 - beta2 ** state["step"]) / (1.0 - beta1 ** state["step"])
        p.addcdiv_(exp_avg, denom, value=-step_size)
        if group["weight_decay"] > 0.0:  # decoupled decay, applied to the already updated p
            p.add_(p, alpha=-group["lr"] * group["weight_decay"])


def create_lorafa_optimizer(model: nn.Module, r: int, lora_alpha: float, lr: float, weight_decay: float = 0.0,
                            use_rslora: bool | None = None, *,
                            projection_dtype: torch.dtype | None = torch.bfloat16) -> LoraFAOptimizer:
    """Freeze every LoRA A in `model` and return a LoraFAOptimizer over what still trains.

    As in PEFT 0.21, each B's gradient is scaled by its own layer's `scaling`: `r`, `lora_alpha` and
    `use_rslora` (None: the model's) must say what the model's layers already hold. PEFT 0.21 ignores r and
    lora_alpha and checks only use_rslora; we check all three, so a mismatch is a ValueError, not unnoticed.
    One group: lr, betas (0.9, 0.999), eps 1e-6, `weight_decay` for every parameter.
    """
    layers = _lora_layers_of(model)
    if isinstance(r, bool) or not isinstance(r, int) or r <= 0:
        reject("r", r, "it must be an int > 0")
    _check_positive("lora_alpha", lora_alpha)
    _check_positive("lr", lr)
    _check_non_negative("weight_decay", weight_decay)
    if use_rslora not in (None, True, False):
        reject("use_rslora", use_rslora, "use True, False or None (None: the model's own setting)")
    for name, value in (("r", r), ("lora_alpha", lora_alpha), ("use_rslora", use_rslora)):
        held = sorted({getattr(layer, name) for layer in layers})
        if value is not None and held != [value]:
            reject(name, value, f"the model's LoRA layers have {name} in {held}: pass the model's own value")
    for layer in layers:
        layer.lora_A.weight.requires_grad_(False)
    params = [p for p in model.parameters() if p.requires_grad]
    frozen_A = {layer.lora_B.weight: (layer.lora_A.weight, layer.scaling) for layer in layers
                if layer.lora_B.weight.requires_grad}
    return LoraFAOptimizer(params, lr=lr, weight_decay=weight_decay, frozen_A=frozen_A,
                           projection_dtype=projection_dtype)


def lorafa_activation_savings(batch_size: int, seq_len: int, in_features: int,
                              dtype: torch.dtype = torch.float32) -> int:
    """Bytes of one adapted Linear's input that LoRA keeps for backward and LoRA-FA does not.

    A's gradient is s·(Bᵀg)ᵀx, so autograd keeps x, (batch, seq, in_features) in the factors' dtype (a bf16
    base's input is upcast to fp32 for fp32 factors); B's gradient needs only the r-wide A x, kept by both.
    With A frozen, x goes. Layers reading one x (q, k and v) share the copy: count it once. `dtype` is the
    dtype x is kept in: the factors' on the plain and addmm paths, the base's on fused.py's one-node path
    (it recasts x in the backward). Measured on all three paths in tests/test_optimizers.py.
    """
    for name, value in (("batch_size", batch_size), ("seq_len", seq_len), ("in_features", in_features)):
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            reject(name, value, "it must be an int > 0")
    if not dtype.is_floating_point:
        reject("dtype", dtype, "give the LoRA factors' floating-point dtype, e.g. torch.float32")
    return batch_size * seq_len * in_features * dtype.itemsize
