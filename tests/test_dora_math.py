"""lora_core.dora against PEFT 0.21's own DoRA code (arXiv 2402.09353), on the same tensors.

Two levels: PEFT's DoraLinearLayer / DoraEmbeddingLayer / DoraConv2dLayer built directly around small base layers,
and a whole get_peft_model(..., use_dora=True) on a tiny model (Linear, GPT-2's Conv1D, a scaled Embedding and a
strided Conv2d) for the variant glue: dtype casts, bias, dropout, merge and unmerge. B is never zero and the
magnitude is perturbed away from ‖W + ΔW‖ (at init s = 1, and DoRA's extra term would reduce to plain LoRA's).
"""

import copy
import functools

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from peft import LoraConfig, get_peft_model
from peft.tuners.lora.dora import DoraConv2dLayer, DoraEmbeddingLayer, DoraLinearLayer
from transformers.pytorch_utils import Conv1D

from lora_core import dora

R, SCALING, P = 4, 1.5, 0.25


def randn(shape, g: torch.Generator, std: float = 1.0) -> torch.Tensor:
    return torch.randn(shape, generator=g) * std


def refill(module: nn.Module, g: torch.Generator, std: float = 0.3) -> nn.Module:
    """Every parameter from the local generator (the constructors drew from the global RNG)."""
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(randn(p.shape, g, std))
    return module


class FixedMask(nn.Dropout):
    """Dropout with a mask drawn in advance, so PEFT and lora_core see the same x̃ = dropout(x)."""

    def __init__(self, shape: tuple[int, ...], g: torch.Generator, p: float = P):
        super().__init__(p)
        self.mask = (torch.rand(shape, generator=g) >= p).float()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.mask.to(x.dtype) / (1 - self.p)


class ScaledEmbedding(nn.Embedding):
    """Gemma-style: the embedding multiplies its output by `embed_scale`, which PEFT must apply to the DoRA part."""

    embed_scale = 3.0

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return super().forward(ids) * self.embed_scale


def perturb(m: torch.Tensor, g: torch.Generator) -> None:
    with torch.no_grad():
        m.mul_(1 + 0.5 * torch.rand(m.shape, generator=g))


# --- PEFT's DoRA layers, built directly ------------------------------------------------------------------------------
def linear_case(fan_in_fan_out: bool, seed: int = 0):
    """A Linear (or GPT-2 Conv1D) base 12 -> 10 with bias, factors with B != 0, and PEFT's DoraLinearLayer."""
    g = torch.Generator().manual_seed(seed)
    base = refill(Conv1D(10, 12) if fan_in_fan_out else nn.Linear(12, 10), g).requires_grad_(False)  # frozen
    lora_A, lora_B = refill(nn.Linear(12, R, bias=False), g), refill(nn.Linear(R, 10, bias=False), g)
    layer = DoraLinearLayer(fan_in_fan_out=fan_in_fan_out)
    layer.update_layer(base_layer=base, lora_A=lora_A.weight, lora_B=lora_B.weight, scaling=SCALING)
    W = base.weight.T if fan_in_fan_out else base.weight  # (out, in), as lora_core.dora takes it
    return g, base, W, lora_A, lora_B, layer


def conv2d_case(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    base = refill(nn.Conv2d(3, 6, 3, stride=2, padding=1), g).requires_grad_(False)
    lora_A = refill(nn.Conv2d(3, R, 3, stride=2, padding=1, bias=False), g)
    lora_B = refill(nn.Conv2d(R, 6, 1, bias=False), g)
    layer = DoraConv2dLayer(fan_in_fan_out=False)
    layer.update_layer(base_layer=base, lora_A=lora_A.weight, lora_B=lora_B.weight, scaling=SCALING)
    return g, base, lora_A, lora_B, layer


def embedding_case(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    base = refill(nn.Embedding(30, 8), g).requires_grad_(False)
    A, B = randn((R, 30), g), randn((8, R), g)  # PEFT's lora_embedding_A (r, num), lora_embedding_B (dim, r)
    layer = DoraEmbeddingLayer(fan_in_fan_out=True)
    layer.update_layer(base_layer=base, lora_A=A, lora_B=B, scaling=SCALING)
    return g, base, A, B, layer


@pytest.mark.parametrize("fan_in_fan_out", [False, True], ids=["linear", "conv1d"])
def test_initial_magnitude_is_peft_update_layer_bit_for_bit_linear(fan_in_fan_out):
    _, _, W, lora_A, lora_B, layer = linear_case(fan_in_fan_out)
    m = dora.initial_magnitude(W, lora_B.weight, lora_A.weight, SCALING)
    assert torch.equal(m, layer.weight)
    assert m.shape == (10,)


def test_initial_magnitude_is_peft_update_layer_bit_for_bit_conv2d_and_embedding():
    _, base, lora_A, lora_B, layer = conv2d_case()
    assert layer.weight.shape == (1, 6, 1, 1)  # PEFT's conv magnitude shape
    m = dora.initial_magnitude(base.weight, lora_B.weight, lora_A.weight, SCALING)
    assert torch.equal(m.view(1, -1, 1, 1), layer.weight)
    _, emb, A, B, layer = embedding_case()
    m = dora.initial_magnitude(emb.weight.T, B, A, SCALING)  # one entry per embedding dim: norm over the vocab
    assert m.shape == (8,) and torch.equal(m, layer.weight)


def test_initial_magnitude_with_zero_B_is_the_row_norm_of_W():
    _, _, W, lora_A, lora_B, _ = linear_case(False)
    m = dora.initial_magnitude(W, torch.zeros_like(lora_B.weight), lora_A.weight, SCALING)
    torch.testing.assert_close(m, W.detach().norm(dim=1), rtol=0, atol=0)


def test_norm_is_over_inputs_for_each_output_feature():
    W, delta = torch.arange(6.0).view(2, 3), torch.ones(2, 3)  # (out=2, in=3)
    torch.testing.assert_close(dora.weight_norm(W, delta), torch.tensor([14.0, 77.0]).sqrt())
    with pytest.raises(ValueError, match="must match weight"):
        dora.weight_norm(W, delta.T)


# --- forward ---------------------------------------------------------------------------------------------------------
def peft_linear(layer, base, lora_A, lora_B, x, dropout=None):
    """What PEFT's Linear.forward + DoraLinearVariant.forward do with one adapter."""
    result = base(x)
    if dropout is None:
        return result + layer(x, lora_A=lora_A, lora_B=lora_B, scaling=SCALING, base_layer=base, base_result=result)
    return result + layer(dropout(x), lora_A=lora_A, lora_B=lora_B, scaling=SCALING, base_layer=base, base_result=None)


@pytest.mark.parametrize("use_dropout", [False, True], ids=["no_dropout", "dropout"])
@pytest.mark.parametrize("fan_in_fan_out", [False, True], ids=["linear", "conv1d"])
def test_linear_forward_and_gradients_match_peft(fan_in_fan_out, use_dropout):
    g, base, W, lora_A, lora_B, layer = linear_case(fan_in_fan_out)
    perturb(layer.weight, g)
    x = randn((2, 5, 12), g)
    drop = FixedMask(x.shape, g) if use_dropout else None
    upstream = randn((2, 5, 10), g)
    theirs = peft_linear(layer, base, lora_A, lora_B, x, drop)
    (theirs * upstream).sum().backward()

    A, B, m = (t.detach().clone().requires_grad_() for t in (lora_A.weight, lora_B.weight, layer.weight))
    ours = dora.dora_linear_forward(x, base(x), W, base.bias, A, B, m, SCALING, dropout=drop)
    (ours * upstream).sum().backward()
    torch.testing.assert_close(ours, theirs, rtol=1e-6, atol=1e-6)
    for mine, peft_param in ((A, lora_A.weight), (B, lora_B.weight), (m, layer.weight)):
        torch.testing.assert_close(mine.grad, peft_param.grad, rtol=1e-5, atol=1e-6)


def test_dropout_recomputes_the_base_part_from_the_dropped_input():
    """PEFT: h = W x + b + (s - 1) W x̃ + s scaling B A x̃, not (s - 1)(W x) with x̃ in the LoRA branch only."""
    g, base, W, lora_A, lora_B, layer = linear_case(False)
    perturb(layer.weight, g)
    x = randn((3, 12), g)
    drop = FixedMask(x.shape, g)
    xd = drop(x)
    s = layer.weight.detach() / dora.weight_norm(W, SCALING * lora_B.weight @ lora_A.weight).detach()
    by_hand = base(x) + (s - 1) * F.linear(xd, W) + s * lora_B(lora_A(xd)) * SCALING
    ours = dora.dora_linear_forward(x, base(x), W, base.bias, lora_A.weight, lora_B.weight, layer.weight, SCALING, drop)
    torch.testing.assert_close(ours, by_hand, rtol=1e-6, atol=1e-6)
    lora_only = base(x) + (s - 1) * (base(x) - base.bias) + s * lora_B(lora_A(xd)) * SCALING
    assert (ours - lora_only).abs().max() > 1e-2
    drop.eval()  # an inactive dropout (eval mode) is ignored, as in PEFT
    no_drop = dora.dora_linear_forward(x, base(x), W, base.bias, lora_A.weight, lora_B.weight, layer.weight, SCALING)
    assert torch.equal(dora.dora_linear_forward(x, base(x), W, base.bias, lora_A.weight, lora_B.weight,
                                                layer.weight, SCALING, drop), no_drop)


def test_norm_is_detached_gradients_differ_from_the_undetached_formula():
    g, base, W, lora_A, lora_B, layer = linear_case(False)
    perturb(layer.weight, g)
    x, upstream = randn((4, 12), g), randn((4, 10), g)

    def grads(detached: bool):
        A, B, m = (t.detach().clone().requires_grad_() for t in (lora_A.weight, lora_B.weight, layer.weight))
        if detached:
            h = dora.dora_linear_forward(x, base(x), W, base.bias, A, B, m, SCALING)
        else:  # the paper's eq. 5 without §4.3: the norm stays in the graph
            s = m / dora.weight_norm(W.detach(), SCALING * B @ A)
            h = base(x) + (s - 1) * (base(x) - base.bias) + s * F.linear(F.linear(x, A), B) * SCALING
        (h * upstream).sum().backward()
        return A.grad, B.grad, m.grad

    (dA, dB, dm), (uA, uB, um) = grads(True), grads(False)
    torch.testing.assert_close(dm, um)  # m's gradient does not see the norm either way
    assert (dA - uA).norm() > 1e-2 * uA.norm() and (dB - uB).norm() > 1e-2 * uB.norm()


def test_magnitude_scale_detaches_a_norm_that_carries_a_graph():
    _, _, W, lora_A, lora_B, layer = linear_case(False)
    B = lora_B.weight.detach().clone().requires_grad_()
    norm = dora.weight_norm(W, SCALING * B @ lora_A.weight.detach())  # in the graph of B
    dora.magnitude_scale(layer.weight, norm).sum().backward()
    assert B.grad is None and layer.weight.grad is not None


@pytest.mark.parametrize("use_dropout", [False, True], ids=["no_dropout", "dropout"])
def test_conv2d_forward_and_gradients_match_peft(use_dropout):
    g, base, lora_A, lora_B, layer = conv2d_case()
    perturb(layer.weight, g)
    x = randn((2, 3, 9, 9), g)
    drop = FixedMask(x.shape, g) if use_dropout else None
    result = base(x)
    upstream = randn(result.shape, g)
    xd = drop(x) if drop else x
    theirs = result + layer(xd, lora_A=lora_A, lora_B=lora_B, scaling=SCALING, base_layer=base,
                            base_result=None if drop else result)
    (theirs * upstream).sum().backward()
    peft_grads = [p.grad.clone() for p in (lora_A.weight, lora_B.weight, layer.weight)]
    for p in (lora_A.weight, lora_B.weight, layer.weight):
        p.grad = None
    ours = dora.dora_conv2d_forward(x, result, base, lora_A, lora_B, layer.weight, SCALING, dropout=drop)
    (ours * upstream).sum().backward()
    torch.testing.assert_close(ours, theirs, rtol=1e-6, atol=1e-6)
    for p, expected in zip((lora_A.weight, lora_B.weight, layer.weight), peft_grads, strict=True):
        torch.testing.assert_close(p.grad, expected, rtol=1e-5, atol=1e-6)


def test_embedding_forward_and_gradients_match_peft():
    g, emb, A, B, layer = embedding_case()
    perturb(layer.weight, g)
    ids = torch.randint(0, 30, (2, 7), generator=g)
    A, B = A.requires_grad_(), B.requires_grad_()
    upstream = randn((2, 7, 8), g)
    # DoraEmbeddingVariant.forward: PEFT passes the factors transposed and combines (scale, dora part) itself
    scale, part = layer(ids, lora_A=A.T, lora_B=B.T, scaling=SCALING, base_layer=emb, embed_fn=F.embedding)
    theirs = scale * emb(ids) + part
    (theirs * upstream).sum().backward()
    peft_grads = [t.grad.clone() for t in (A, B, layer.weight)]
    for t in (A, B, layer.weight):
        t.grad = None
    ours = dora.dora_embedding_forward(ids, emb(ids), emb.weight, A, B, layer.weight, SCALING)
    (ours * upstream).sum().backward()
    torch.testing.assert_close(ours, theirs, rtol=1e-6, atol=1e-6)
    for t, expected in zip((A, B, layer.weight), peft_grads, strict=True):
        torch.testing.assert_close(t.grad, expected, rtol=1e-5, atol=1e-6)


def test_dora_extra_checks_the_scale_against_the_output_features():
    with pytest.raises(ValueError, match="one per output feature"):
        dora.dora_extra(torch.zeros(2, 6, 3, 3), torch.zeros(2, 6, 3, 3), torch.ones(6), 1.0)  # dim -1 is W


# --- a whole PEFT model: the variant glue, merge and unmerge ---------------------------------------------------------
class Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(12, 10)
        self.c1 = Conv1D(10, 12)  # GPT-2 layout: weight stored (in=12, out=10)
        self.emb = ScaledEmbedding(30, 12, padding_idx=0)
        self.conv = nn.Conv2d(3, 6, 3, stride=2, padding=1)


INPUTS = {"lin": (2, 5, 12), "c1": (2, 5, 12), "emb": (2, 7), "conv": (2, 3, 9, 9)}


def peft_tiny(seed: int = 0, dtype: torch.dtype = torch.float32):
    g = torch.Generator().manual_seed(seed)
    model = refill(Tiny(), g).to(dtype)
    cfg = LoraConfig(r=R, lora_alpha=6, target_modules=list(INPUTS), use_dora=True, init_lora_weights=False,
                     lora_dropout=P)
    return g, get_peft_model(model, cfg)


def factors(layer) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, A) of a PEFT LoRA layer as matrices (out, r), (r, in)."""
    if hasattr(layer, "lora_embedding_A") and "default" in layer.lora_embedding_A:
        return layer.lora_embedding_B["default"], layer.lora_embedding_A["default"]
    return layer.lora_B["default"].weight.flatten(1), layer.lora_A["default"].weight.flatten(1)


def weight_out_in(name: str, weight: torch.Tensor) -> torch.Tensor:
    return weight.T if name in ("c1", "emb") else weight  # Conv1D and Embedding store (in, out)


def ours_forward(name: str, layer, x: torch.Tensor) -> torch.Tensor:
    base, m, scaling = layer.base_layer, layer.lora_magnitude_vector["default"].weight, layer.scaling["default"]
    B, A = factors(layer)
    if name == "emb":
        embed = functools.partial(F.embedding, padding_idx=base.padding_idx)
        scale = torch.tensor(base.embed_scale, dtype=base.weight.dtype)
        return dora.dora_embedding_forward(x, base(x), base.weight, A, B, m, scaling, embed, scale)
    drop = layer.lora_dropout["default"]
    if name == "conv":
        return dora.dora_conv2d_forward(x, base(x), base, layer.lora_A["default"], layer.lora_B["default"], m,
                                        scaling, drop)
    return dora.dora_linear_forward(x, base(x), weight_out_in(name, base.weight), base.bias, A, B, m, scaling, drop)


def model_input(name: str, g: torch.Generator, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    if name == "emb":
        return torch.randint(0, 30, INPUTS[name], generator=g)
    return randn(INPUTS[name], g).to(dtype)


@pytest.mark.parametrize("name", list(INPUTS))
def test_peft_model_magnitude_and_forward_match(name):
    g, model = peft_tiny()
    layer = getattr(model.base_model.model, name)
    B, A = factors(layer)
    W = weight_out_in(name, layer.base_layer.weight)
    m = layer.lora_magnitude_vector["default"].weight
    assert B.abs().min() > 0  # init_lora_weights=False: ΔW != 0 at creation
    assert torch.equal(dora.initial_magnitude(W, B, A, layer.scaling["default"]), m.flatten())
    perturb(m, g)
    x = model_input(name, g)
    model.eval()
    torch.testing.assert_close(ours_forward(name, layer, x), layer(x), rtol=1e-6, atol=1e-6)
    model.train()
    if name != "emb":  # PEFT's Embedding applies no dropout
        layer.lora_dropout["default"] = FixedMask(x.shape, g)
    torch.testing.assert_close(ours_forward(name, layer, x), layer(x), rtol=1e-6, atol=1e-6)


def test_unbatched_input_keeps_its_shape_where_peft_adds_a_dim():
    """PEFT's mag_norm_scale.view(1, -1) turns an (in,) input's output into (1, out); ours stays (out,)."""
    g, model = peft_tiny()
    model.eval()
    layer, x = model.base_model.model.lin, randn((12,), g)
    theirs, ours = layer(x), ours_forward("lin", layer, x)
    assert theirs.shape == (1, 10) and ours.shape == (10,)
    torch.testing.assert_close(ours, theirs[0], rtol=1e-6, atol=1e-6)


def test_bf16_base_magnitude_is_computed_in_bf16_and_forward_matches():
    """PEFT builds m while the factors are in the base dtype (then upcasts them): a bf16 norm, stored in fp32."""
    g, model = peft_tiny(dtype=torch.bfloat16)
    for name in INPUTS:
        layer = getattr(model.base_model.model, name)
        B, A = factors(layer)
        m = layer.lora_magnitude_vector["default"].weight
        assert B.dtype == m.dtype == torch.float32
        W = weight_out_in(name, layer.base_layer.weight)
        assert torch.equal(dora.initial_magnitude(W, B, A, layer.scaling["default"]).float(), m.flatten())
        perturb(m, g)
        model.eval()
        x = model_input(name, g, torch.bfloat16)
        ours, theirs = ours_forward(name, layer, x), layer(x)
        assert ours.dtype == theirs.dtype == torch.bfloat16
        torch.testing.assert_close(ours, theirs, rtol=0, atol=0)


def delta_of(name: str, layer) -> torch.Tensor:
    B, A = factors(layer)
    delta = layer.scaling["default"] * (B @ A)  # (out, r) @ (r, in) -> (out, in)
    return delta.view(layer.base_layer.weight.shape) if name == "conv" else delta


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
def test_merged_weight_matches_peft_merge_and_unload(dtype):
    g, model = peft_tiny(dtype=dtype)
    expected = {}
    for name in INPUTS:
        layer = getattr(model.base_model.model, name)
        perturb(layer.lora_magnitude_vector["default"].weight, g)
        W = weight_out_in(name, layer.base_layer.weight)
        merged = dora.merged_weight(W, delta_of(name, layer), layer.lora_magnitude_vector["default"].weight)
        expected[name] = weight_out_in(name, merged)
    x = randn(INPUTS["lin"], g).to(dtype)
    model.eval()
    with torch.no_grad():
        unmerged_out = model.base_model.model.lin(x)
    merged_model = copy.deepcopy(model).merge_and_unload()
    for name, weight in expected.items():
        got = getattr(merged_model, name).weight
        assert got.dtype == dtype
        tol = dict(rtol=1e-6, atol=1e-6) if dtype == torch.float32 else dict(rtol=0, atol=0)
        torch.testing.assert_close(weight, got, **tol)
    # the merged layer is the unmerged forward: W' x + b = W x + b + (s - 1) W x + s ΔW x
    tol = dict(rtol=1e-5, atol=1e-5) if dtype == torch.float32 else dict(rtol=2e-2, atol=2e-2)
    torch.testing.assert_close(merged_model.lin(x), unmerged_out, **tol)


def test_unmerged_weight_matches_peft_unmerge_and_is_not_bit_exact():
    g, model = peft_tiny()
    layer = model.base_model.model.lin
    perturb(layer.lora_magnitude_vector["default"].weight, g)
    W0 = layer.base_layer.weight.detach().clone()
    m, delta = layer.lora_magnitude_vector["default"].weight, delta_of("lin", layer)
    norm = dora.weight_norm(W0, delta)
    layer.merge()
    merged = layer.base_layer.weight.detach().clone()
    torch.testing.assert_close(merged, dora.merged_weight(W0, delta, m, norm), rtol=1e-6, atol=1e-6)
    layer.unmerge()
    ours = dora.unmerged_weight(merged, delta, m, norm)
    torch.testing.assert_close(ours, layer.base_layer.weight, rtol=1e-6, atol=1e-6)
    assert not torch.equal(ours, W0)  # multiply, round, divide, subtract: W comes back to rounding only
    torch.testing.assert_close(ours, W0, rtol=1e-5, atol=1e-6)
