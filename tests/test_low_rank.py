"""lora_core.teach.low_rank, what the Rank/SVD page shows: adapters on a real weight (a local generator, the
weight shared, not copied) and two session adapters compared layer by layer."""

import pytest
import torch

import lora_core as lc
from lora_core.teach import low_rank


def test_adapters_on_a_real_weight_leave_the_global_rng_alone():
    W = torch.randn(48, 32, generator=torch.Generator().manual_seed(3))
    before = torch.get_rng_state()
    first = low_rank.adapter_spectra(W, r=4, lora_alpha=8)
    assert torch.equal(torch.get_rng_state(), before)                  # a local Generator, never torch.manual_seed
    second = low_rank.adapter_spectra(W, r=4, lora_alpha=8)
    fresh, rand = (first["reports"][label] for label in low_rank.ADAPTER_INITS)
    assert fresh["numerical_rank"] == 0 and rand["numerical_rank"] == 4 and rand["max_abs_diff"] < 1e-4
    assert torch.equal(rand["singular_values"], second["reports"]["random adapter (init=False)"]["singular_values"])
    assert list(first["nonzero"]) == ["random adapter (init=False)"]    # a zero ΔW has no spectrum to draw
    layer = low_rank.adapter_on(W, lc.LoraConfig(r=4, init_lora_weights=False), torch.Generator().manual_seed(0))
    assert layer.base_layer.weight.data_ptr() == W.data_ptr()           # W shared, not copied
    assert layer.adapter().A.abs().max() <= 1 / 32 ** 0.5             # Kaiming-uniform(a=√5): bound 1/√in
    with pytest.raises(ValueError, match="init_lora_weights='pissa' is not allowed here"):
        low_rank.adapter_on(W, lc.LoraConfig(r=4, init_lora_weights="pissa"), torch.Generator())


def test_comparing_two_session_adapters_needs_a_shared_layer():
    A = torch.randn(4, 16, generator=torch.Generator().manual_seed(0))
    one = {"h.0.c_attn": {"A": A, "sv": torch.ones(4)}, "h.1.c_attn": {"A": A, "sv": torch.ones(4)}}
    two = {"h.1.c_attn": {"A": A, "sv": torch.ones(4)}}
    assert low_rank.shared_layers(one, two) == ["h.1.c_attn"]
    same = low_rank.compare_adapters(one, two, "h.1.c_attn")
    assert same["phi_top1"] == pytest.approx(1.0)                       # an adapter against itself
    with pytest.raises(ValueError, match=r"layer='h.0.c_attn' is not allowed: both adapters must adapt it"):
        low_rank.compare_adapters(one, two, "h.0.c_attn")


def test_what_the_toy_shows_names_the_planted_rank_and_what_it_does_not_prove():
    text = low_rank.what_the_toy_shows(4)
    assert "planted** with rank 4" in text and "not evidence" in text
    assert "*intrinsic rank* hypothesis" in text and "intrinsic *dimension*" in text
