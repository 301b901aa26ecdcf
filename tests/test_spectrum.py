"""The ΔW spectrum from the factors equals the full SVD; rank ≤ r; φ behaves as in the LoRA paper."""

import pytest
import torch
import torch.nn as nn
from conftest import tiny_gpt2
from transformers.pytorch_utils import Conv1D

import lora_core as lc


def _layer(base, r=8, alpha=16, **kw):
    torch.manual_seed(0)
    return lc.LoraLinear(base, lc.LoraConfig(r=r, lora_alpha=alpha, init_lora_weights=False, **kw))


@pytest.mark.parametrize("base", [nn.Linear(768, 2304), Conv1D(2304, 768)], ids=["linear", "conv1d"])
def test_singular_values_equal_svdvals_of_the_full_delta(base):
    layer = _layer(base)
    full = torch.linalg.svdvals(layer.delta_weight().double())
    ours = lc.singular_values(layer)
    assert ours.shape == (8,)
    torch.testing.assert_close(ours.double(), full[:8], rtol=1e-4, atol=1e-6)
    assert float(full[8:].max()) < 1e-5 * float(full[0])          # rank(ΔW) ≤ r
    assert lc.spectrum.numerical_rank(ours) == 8


def test_fresh_adapter_has_an_all_zero_spectrum():
    layer = lc.LoraLinear(nn.Linear(64, 64), lc.LoraConfig(r=4))
    assert float(lc.singular_values(layer).abs().max()) == 0.0     # B = 0 ⇒ ΔW = 0
    assert lc.spectrum.numerical_rank(lc.singular_values(layer)) == 0


def test_rank_one_update_has_rank_one():
    layer = _layer(nn.Linear(32, 48), r=4)
    with torch.no_grad():
        layer.adapter().B.copy_(torch.randn(48, 1) @ torch.randn(1, 4))
    sv = lc.singular_values(layer)
    assert lc.spectrum.numerical_rank(sv) == 1
    assert lc.effective_rank(sv) == pytest.approx(1.0, abs=1e-3)
    assert lc.energy_captured(sv, 1) == pytest.approx(1.0)


def test_energy_and_effective_rank_of_a_flat_spectrum():
    sv = torch.ones(8)
    assert lc.energy_captured(sv, 2) == pytest.approx(0.25)
    assert lc.effective_rank(sv) == pytest.approx(8.0)


def test_low_rank_approximation_is_eckart_young():
    torch.manual_seed(0)
    W = torch.randn(40, 30)
    s = torch.linalg.svdvals(W)
    for k in (1, 5, 30):
        err = torch.linalg.matrix_norm(W - lc.spectrum.low_rank_approximation(W, k))
        assert float(err) == pytest.approx(float(s[k:].square().sum().sqrt()), abs=1e-4)
    with pytest.raises(ValueError, match="k=31"):
        lc.spectrum.low_rank_approximation(W, 31)


def test_subspace_similarity():
    torch.manual_seed(0)
    A8 = torch.randn(8, 512)
    A64 = torch.cat([A8, torch.randn(56, 512)])                    # contains A8's row space
    phi = lc.subspace_similarity(A8, A64)
    assert phi.shape == (8, 64)
    assert float(phi[-1, -1]) == pytest.approx(1.0, abs=1e-4)     # 8-dim subspace inside the 64-dim one
    assert float(phi.min()) >= -1e-6 and float(phi.max()) <= 1 + 1e-5
    rand = lc.subspace_similarity(torch.randn(8, 512), torch.randn(8, 512))
    assert float(rand[-1, -1]) < 0.1                               # random subspaces barely overlap
    with pytest.raises(ValueError, match="same input size"):
        lc.subspace_similarity(torch.randn(2, 5), torch.randn(2, 6))


def test_rank_k_report_counts_storage_like_a_lora_pair():
    img = lc.spectrum.demo_image()
    assert img.shape == (96, 160) and 0 <= float(img.min()) and float(img.max()) <= 1
    rep = lc.spectrum.rank_k_report(img, 8)
    assert (rep["stored"], rep["full"]) == (8 * (96 + 160), 96 * 160)
    assert 0.9 < rep["energy"] < 1 and 0 < rep["relative_error"] < 0.3
    assert lc.spectrum.energy_profile(torch.linalg.svdvals(img))[7] == pytest.approx(rep["energy"])


def test_spectrum_report_agrees_with_the_full_svd():
    rep = lc.spectrum.spectrum_report(_layer(nn.Linear(96, 64), r=4))
    assert rep["numerical_rank"] == 4 and rep["max_abs_diff"] < 1e-4


# --- the spectrum of every layer at once -------------------------------------------------------------------
def test_all_singular_values_equal_the_per_layer_ones():
    model = tiny_gpt2()
    lc.inject_lora(model, lc.LoraConfig(r=4, lora_alpha=8, target_modules="all-linear", init_lora_weights=False))
    every = lc.spectrum.all_singular_values(model)
    layers = lc.lora_layers(model)
    assert list(every) == [n for n, _ in layers] and len(every) == 8
    for name, layer in layers:
        torch.testing.assert_close(every[name], lc.singular_values(layer))
        full = torch.linalg.svdvals(layer.delta_weight().detach().double())[:4]
        torch.testing.assert_close(every[name].double(), full, rtol=1e-4, atol=1e-6)
