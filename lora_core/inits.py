"""How a LoRA layer's factors start: PEFT's `init_lora_weights` values, drawn from a local generator when given.

    True        A Kaiming-uniform (a = √5, nn.Linear's own init, as loralib and PEFT), B = 0: ΔW = 0
    "gaussian"  A normal with std 1/r, B = 0
    False       A and B both random: ΔW ≠ 0 from step 0 (tests, demos)
    "pissa"     A, B from the top-r SVD of W; W becomes the residual (PiSSA, arXiv 2404.02948)
    "olora"     B, A from the thin QR of W; W becomes the residual (OLoRA, arXiv 2406.01775)

An Embedding follows loralib instead: A = 0, B normal. PiSSA and OLoRA write the residual into a *new* tensor,
so a base weight shared by several sessions is never written. Layer types are told apart by their base layer,
so this module needs nothing from layers.py.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn


def _draw(t: torch.Tensor, generator: torch.Generator | None, fill) -> None:
    """fill(tensor, generator=...) into `t`, drawn on the generator's own device when one is given."""
    if generator is None or t.is_meta:
        fill(t, generator=None)
        return
    drawn = torch.empty(t.shape, dtype=t.dtype, device=generator.device)
    fill(drawn, generator=generator)
    t.copy_(drawn)


def _kaiming(t: torch.Tensor, generator: torch.Generator | None = None) -> None:
    nn.init.kaiming_uniform_(t, a=math.sqrt(5), generator=generator)  # nn.Linear's own default init


def init_factors(layer: nn.Module, init: bool | str, generator: torch.Generator | None = None) -> None:
    """PEFT's reset_lora_parameters, plus PiSSA; random draws come from `generator` when given."""
    A, B = layer.lora_A.weight, layer.lora_B.weight
    with torch.no_grad():
        if init is False:  # both random: a non-zero ΔW from step 0 (tests, demos)
            if isinstance(layer.base_layer, nn.Embedding):
                _draw(A, generator, lambda t, generator: t.normal_(generator=generator))
                _draw(B, generator, lambda t, generator: t.normal_(generator=generator))
            elif generator is not None:  # built on meta: give A and B what nn.Linear / nn.Conv2d would
                _draw(A, generator, _kaiming)
                _draw(B, generator, _kaiming)
            return  # without a generator, nn.Linear / nn.Conv2d already gave A and B their Kaiming init
        if isinstance(layer.base_layer, nn.Embedding):
            # PEFT follows loralib here: A zero, B normal (ΔW = 0 all the same)
            A.zero_()
            _draw(B, generator, lambda t, generator: t.normal_(generator=generator))
            return
        if init in ("pissa", "olora"):
            (pissa_init if init == "pissa" else olora_init)(layer)
            return
        if init == "gaussian":
            _draw(A, generator, lambda t, generator: t.normal_(std=1 / layer.r, generator=generator))
        else:
            _draw(A, generator, _kaiming)
        B.zero_()


def pissa_init(layer: nn.Module) -> None:
    """PiSSA (arXiv 2404.02948): A, B from the top-r SVD of W; W becomes the residual.

    The residual is a *new* tensor: the original base weight (maybe shared) is not written.
    """
    if layer.base_layer.weight.is_meta:
        return
    w = layer.base_layer.weight
    W = w.detach().float()
    W = W.T if layer.fan_in_fan_out else W  # (out, in)
    U, S, Vh = torch.linalg.svd(W, full_matrices=False)  # W = U diag(S) Vh
    r = layer.r
    sqrt_s = torch.sqrt(S[:r] / layer.scaling)
    B = U[:, :r] * sqrt_s           # (out, r)
    A = sqrt_s[:, None] * Vh[:r]    # (r, in)
    layer.lora_A.weight.copy_(A)
    layer.lora_B.weight.copy_(B)
    residual = W - layer.scaling * (B @ A)  # (out, r) @ (r, in) -> (out, in)
    residual = residual.T if layer.fan_in_fan_out else residual
    layer.base_layer.weight = nn.Parameter(residual.to(w.dtype).contiguous(), requires_grad=False)


def olora_init(layer: nn.Module) -> None:
    """OLoRA (arXiv 2406.01775): B, A from the thin QR of W (orthonormal B); W becomes the residual.

    B = Q[:, :r], A = R[:r], and W_res = W - scaling * B @ A, so the layer starts exactly at W. Unlike
    PiSSA the factors are not divided by the scaling. The QR is taken of W as (out, in): PEFT 0.21 takes it
    of the stored weight, which for GPT-2's Conv1D is (in, out), so its factors come out transposed
    (tests/test_variants_init.py pins that). The residual is a new tensor; the original W is not written.
    """
    if layer.base_layer.weight.is_meta:
        return
    w = layer.base_layer.weight
    W = w.detach().float()
    W = W.T if layer.fan_in_fan_out else W  # (out, in)
    Q, R = torch.linalg.qr(W)  # (out, k) @ (k, in), k = min(out, in); Q's columns orthonormal
    r = layer.r
    B, A = Q[:, :r], R[:r]     # (out, r), (r, in)
    layer.lora_A.weight.copy_(A)
    layer.lora_B.weight.copy_(B)
    residual = W - layer.scaling * (B @ A)  # (out, r) @ (r, in) -> (out, in)
    residual = residual.T if layer.fan_in_fan_out else residual
    layer.base_layer.weight = nn.Parameter(residual.to(w.dtype).contiguous(), requires_grad=False)
