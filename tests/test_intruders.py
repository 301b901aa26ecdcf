"""Intruder dimensions (lora_core/intruders.py): detection on matrices whose answer is known, and the mitigation
against PEFT 0.21's `reduce_intruder_dimension` on the same tiny Llama.

The planted adapters make intruders on purpose: each ΔW = B A · scaling is large next to W (singular values
40, 30, 20, 10 against W's ~0.2) and its left directions are spread evenly over all of W's left singular vectors
(Hadamard combinations), so each has |cosine| 1/√out < 0.5 with every one of them. SVD signs are arbitrary, so
factors are compared through the products B A · scaling (unique while the singular values are distinct).
"""

import copy

import pytest
import torch
from conftest import tiny_gpt2, tiny_llama
from peft import LoraConfig as PeftLoraConfig
from peft import get_peft_model, set_peft_model_state_dict
from peft.tuners.lora.intruders import reduce_intruder_dimension as peft_reduce_intruder_dimension

import lora_core as lc
from lora_core.intruders import weight_out_in

LLAMA = dict(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"])
GPT2 = dict(r=4, lora_alpha=8, target_modules=["c_attn"])
PLANTED = (40.0, 30.0, 20.0, 10.0)  # ΔW's singular values, scaling included


def hadamard(n: int) -> torch.Tensor:
    """Sylvester's orthonormal Hadamard matrix (n a power of two): every entry ±1/√n."""
    H = torch.ones(1, 1)
    while H.shape[0] < n:
        H = torch.cat([torch.cat([H, H], 1), torch.cat([H, -H], 1)])
    return H / n ** 0.5


def plant_llama_intruders(model) -> None:
    """B's columns spread evenly over W's left singular vectors; A's rows a random orthonormal set."""
    gen = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for _, layer in lc.lora_layers(model):
            a = layer.adapter()
            W = weight_out_in(layer)                                   # (out, in)
            U, _, _ = torch.linalg.svd(W, full_matrices=False)          # (out, out): W is wide or square here
            B_dirs = U @ hadamard(U.shape[1])[1:a.r + 1].T               # (out, r), |cos| = 1/√out with every u_j
            A_dirs, _ = torch.linalg.qr(torch.randn(W.shape[1], a.r, generator=gen))  # (in, r)
            root = (torch.tensor(PLANTED) / a.scaling).sqrt()
            a.B.copy_(B_dirs * root)
            a.A.copy_(root[:, None] * A_dirs.T)


def plant_gpt2_intruders(model) -> None:
    """c_attn's W is (96, 32) as (out, in): B's columns lie outside W's column space, and A's rows are spread
    over W's right singular vectors, so the planted directions are intruders in either layout."""
    with torch.no_grad():
        for _, layer in lc.lora_layers(model):
            a = layer.adapter()
            W = weight_out_in(layer)                                   # (96, 32)
            U, _, Vh = torch.linalg.svd(W, full_matrices=True)
            B_dirs = U[:, W.shape[1]:W.shape[1] + a.r]                 # (out, r), orthogonal to W's columns
            A_dirs = hadamard(W.shape[1])[1:a.r + 1] @ Vh               # (r, in)
            root = (torch.tensor(PLANTED) / a.scaling).sqrt()
            a.B.copy_(B_dirs * root)
            a.A.copy_(root[:, None] * A_dirs)


def ours_and_peft(make, kw, plant):
    """Our model with planted factors, and PEFT's on a copy of the same base with the same factors loaded."""
    base = make()
    ours = copy.deepcopy(base)
    lc.inject_lora(ours, lc.LoraConfig(**kw), generator=torch.Generator().manual_seed(0))
    plant(ours)
    with torch.random.fork_rng(devices=[]):  # PEFT draws its A init from the global RNG: keep ours where it was
        theirs = get_peft_model(copy.deepcopy(base), PeftLoraConfig(**kw))
    result = set_peft_model_state_dict(theirs, lc.adapter_state_dict(ours))
    assert not result.unexpected_keys
    return ours, theirs.eval()


def peft_reduce(theirs, **kw) -> None:
    with torch.random.fork_rng(devices=[]):  # add_adapter draws a throwaway init for the new adapter
        peft_reduce_intruder_dimension(theirs, logging_sink=None, **kw)


def tokens() -> torch.Tensor:
    return torch.randint(0, 64, (2, 12), generator=torch.Generator().manual_seed(1))


# --- detection on constructed matrices ---------------------------------------------------------------------------
def known_w() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """W (12, 6) = U diag(6..1) Vᵀ of full column rank, and a unit u (12,) orthogonal to all of W's columns."""
    Q, _ = torch.linalg.qr(torch.randn(12, 12, generator=torch.Generator().manual_seed(0)))
    P, _ = torch.linalg.qr(torch.randn(6, 6, generator=torch.Generator().manual_seed(1)))
    S = torch.arange(6, 0, -1).float()
    return (Q[:, :6] * S) @ P.T, Q[:, :6], P, Q[:, 6]


def test_a_weight_compared_with_itself_has_no_intruders():
    W = torch.randn(16, 24, generator=torch.Generator().manual_seed(0))
    report = lc.intruder_dimensions(W, W)
    assert report.intruders == []
    assert report.best_cosine == pytest.approx([1.0] * 10, abs=1e-5)
    assert report.singular_values == pytest.approx(torch.linalg.svdvals(W)[:10].tolist(), rel=1e-5)


def test_a_big_update_outside_ws_column_space_is_intruder_zero():
    W, _, P, u = known_w()
    # 100 u v_6ᵀ on W's weakest input direction: the new top direction is (σ_6 u_6 + 100 u)/‖·‖, cos ≈ 0.01 with u_6
    report = lc.intruder_dimensions(W, W + 100.0 * torch.outer(u, P[:, 5]))
    assert report.intruders == [0]
    assert report.best_cosine[0] == pytest.approx(1.0 / (1.0 + 100.0 ** 2) ** 0.5, abs=1e-4)
    assert report.best_cosine[1:] == pytest.approx([1.0] * 5, abs=1e-4)  # W's other directions are untouched
    assert report.singular_values[0] == pytest.approx((1.0 + 100.0 ** 2) ** 0.5, rel=1e-5)


def test_threshold_and_top_k_decide_what_counts():
    W, _, P, u = known_w()
    W_tuned = W + 100.0 * torch.outer(u, P[:, 5])
    assert lc.intruder_dimensions(W, W_tuned, threshold_epsilon=0.0).intruders == []  # nothing is below 0
    assert lc.intruder_dimensions(W, W_tuned, threshold_epsilon=0.99).intruders == [0]  # the rest match (to rounding)
    assert len(lc.intruder_dimensions(W, W_tuned, top_k=3).best_cosine) == 3


@pytest.mark.parametrize("field,value", [("top_k", 0), ("top_k", 2.5), ("top_k", True),
                                         ("threshold_epsilon", -0.1), ("threshold_epsilon", 1.5)])
def test_bad_detection_arguments_raise_naming_the_field(field, value):
    W = torch.eye(4)
    with pytest.raises(ValueError, match=field):
        lc.intruder_dimensions(W, W, **{field: value})


def test_weights_of_different_shapes_raise():
    with pytest.raises(ValueError, match="W_tuned"):
        lc.intruder_dimensions(torch.eye(4), torch.eye(5))


# --- the mitigation against PEFT -----------------------------------------------------------------------------------
@pytest.mark.parametrize("mitigation_lambda", [1.0, 0.75, 0.0])
def test_reduce_matches_peft_on_llama(mitigation_lambda):
    ours, theirs = ours_and_peft(tiny_llama, LLAMA, plant_llama_intruders)
    scale = {n: float((weight_out_in(layer) + layer.delta_weight()).detach().abs().max())
             for n, layer in lc.lora_layers(ours)}
    peft_reduce(theirs, mitigation_lambda=mitigation_lambda)
    reports = lc.reduce_intruder_dimension(ours, mitigation_lambda=mitigation_lambda)

    assert all(set(range(4)) <= set(r.intruders) for r in reports.values()), reports  # the planted four, everywhere
    assert theirs.active_adapter == "intruder_reduced"
    peft_layers = dict(theirs.named_modules())
    for name, layer in lc.lora_layers(ours):
        m = peft_layers[f"base_model.model.{name}"]
        theirs_delta = m.lora_B["intruder_reduced"].weight @ m.lora_A["intruder_reduced"].weight * m.scaling["default"]
        # W + ΔW - W in fp32 loses ~1e-7 of W + ΔW's size: the tolerance follows that scale
        torch.testing.assert_close(layer.delta_weight(), theirs_delta, rtol=0, atol=1e-5 * scale[name])
        assert layer.adapter().B.shape == m.lora_B["intruder_reduced"].weight.shape
    with torch.no_grad():
        ours_logits, theirs_logits = ours(tokens()).logits, theirs(tokens()).logits
    torch.testing.assert_close(ours_logits, theirs_logits, rtol=0,
                               atol=2e-5 * max(1.0, float(theirs_logits.abs().max())))


def test_lambda_one_leaves_the_update_unchanged():
    ours, _ = ours_and_peft(tiny_llama, LLAMA, plant_llama_intruders)
    before = {n: layer.delta_weight().clone() for n, layer in lc.lora_layers(ours)}
    reports = lc.reduce_intruder_dimension(ours, mitigation_lambda=1.0)
    assert all(r.intruders for r in reports.values())  # found, and kept whole
    for name, layer in lc.lora_layers(ours):
        torch.testing.assert_close(layer.delta_weight(), before[name], rtol=0, atol=1e-5 * 40)


def test_lambda_scales_the_intruders_singular_values():
    ours, _ = ours_and_peft(tiny_llama, LLAMA, plant_llama_intruders)
    before = {n: torch.linalg.svdvals(weight_out_in(layer) + layer.delta_weight())[:4]
              for n, layer in lc.lora_layers(ours)}
    lc.reduce_intruder_dimension(ours, mitigation_lambda=0.5)
    for name, layer in lc.lora_layers(ours):
        after = torch.linalg.svdvals(weight_out_in(layer) + layer.delta_weight())[:4]
        torch.testing.assert_close(after, 0.5 * before[name], rtol=1e-3, atol=0)


def test_no_intruders_leaves_the_factors_as_they_were():
    model = tiny_llama()
    lc.inject_lora(model, lc.LoraConfig(init_lora_weights=False, **LLAMA), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        for _, layer in lc.lora_layers(model):
            layer.adapter().B.mul_(1e-3)  # a tiny update: W's directions survive it
    before = {n: (layer.adapter().B.clone(), layer.adapter().A.clone()) for n, layer in lc.lora_layers(model)}
    reports = lc.reduce_intruder_dimension(model, mitigation_lambda=0.0)
    assert all(r.intruders == [] for r in reports.values()), reports
    for name, layer in lc.lora_layers(model):
        assert torch.equal(layer.adapter().B, before[name][0]) and torch.equal(layer.adapter().A, before[name][1])


# --- what is refused ------------------------------------------------------------------------------------------------
def test_a_merged_model_is_refused_naming_the_layer():
    ours, _ = ours_and_peft(tiny_llama, LLAMA, plant_llama_intruders)
    lc.merge_lora(ours)
    with pytest.raises(ValueError, match=r"model\.layers\.0\.self_attn\.q_proj.*merged"):
        lc.reduce_intruder_dimension(ours)


@pytest.mark.parametrize("field,value", [("top_k", 0), ("threshold_epsilon", 2.0), ("mitigation_lambda", 1.5),
                                         ("mitigation_lambda", -0.25), ("mitigation_lambda", "0.5")])
def test_bad_arguments_raise_naming_the_field_and_change_nothing(field, value):
    ours, _ = ours_and_peft(tiny_llama, LLAMA, plant_llama_intruders)
    before = [layer.delta_weight().clone() for _, layer in lc.lora_layers(ours)]
    with pytest.raises(ValueError, match=field):
        lc.reduce_intruder_dimension(ours, **{field: value})
    assert all(torch.equal(b, layer.delta_weight()) for b, (_, layer) in zip(before, lc.lora_layers(ours), strict=True))


def test_a_model_without_lora_is_refused():
    with pytest.raises(ValueError, match="no LoRA layer"):
        lc.reduce_intruder_dimension(tiny_llama())


# --- GPT-2's Conv1D: where we part from PEFT ----------------------------------------------------------------------
def test_conv1d_reduce_works_in_out_in_keeps_shapes_and_runs():
    ours, _ = ours_and_peft(tiny_gpt2, GPT2, plant_gpt2_intruders)
    shapes = {n: (layer.adapter().B.shape, layer.adapter().A.shape) for n, layer in lc.lora_layers(ours)}
    before = {n: torch.linalg.svdvals(weight_out_in(layer) + layer.delta_weight())[:4]
              for n, layer in lc.lora_layers(ours)}
    reports = lc.reduce_intruder_dimension(ours, mitigation_lambda=0.5)
    assert all(r.intruders[:4] == [0, 1, 2, 3] for r in reports.values()), reports
    for name, layer in lc.lora_layers(ours):
        assert (layer.adapter().B.shape, layer.adapter().A.shape) == shapes[name] == ((96, 4), (4, 32))
        after = torch.linalg.svdvals(weight_out_in(layer) + layer.delta_weight())[:4]
        torch.testing.assert_close(after, 0.5 * before[name], rtol=1e-3, atol=0)
    with torch.no_grad():
        logits = ours(tokens()).logits
    assert logits.shape == (2, 12, 64) and torch.isfinite(logits).all()


def test_peft_writes_transposed_factors_on_conv1d_and_its_forward_then_fails():
    """PEFT 0.21 takes the SVD of Conv1D's stored (in, out) weight, so its new B is (in, r) and A (r, out):
    the wrong way round for c_attn (96 outputs, 32 inputs), and the model can no longer run."""
    _, theirs = ours_and_peft(tiny_gpt2, GPT2, plant_gpt2_intruders)
    peft_reduce(theirs)
    c_attn = theirs.base_model.model.transformer.h[0].attn.c_attn
    assert tuple(c_attn.lora_B["intruder_reduced"].weight.shape) == (32, 4)   # should be (96, 4)
    assert tuple(c_attn.lora_A["intruder_reduced"].weight.shape) == (4, 96)   # should be (4, 32)
    with torch.no_grad(), pytest.raises(RuntimeError, match="cannot be multiplied"):
        theirs(tokens())
