"""inject_lora and matched_modules: PEFT's matching rules (default targets, suffixes, all-linear without the
output layer, layer indices), and a refused injection names the layer and leaves the model as it was."""

import pytest
import torch.nn as nn
from conftest import tiny_gpt2, tiny_llama

import lora_core as lc


def _unchanged(model, before):
    return [n for n, _ in model.named_modules()] == before and not lc.lora_layers(model)


def test_rank_larger_than_a_layer_names_the_layer():
    model = tiny_gpt2()
    before = [n for n, _ in model.named_modules()]
    with pytest.raises(ValueError, match=r"r=64 is too large for 'transformer.h.0.attn.c_attn' \(32→96\).*32"):
        lc.inject_lora(model, lc.LoraConfig(r=64, target_modules=["c_attn"]))
    assert _unchanged(model, before)


def test_targets_matching_nothing_list_the_candidates():
    model = tiny_gpt2()
    with pytest.raises(ValueError, match=r"matches no module.*'c_attn', 'c_fc', 'c_proj', 'lm_head'"):
        lc.inject_lora(model, lc.LoraConfig(target_modules=["q_proj"]))
    with pytest.raises(ValueError, match=r"matches no module"):
        lc.inject_lora(model, lc.LoraConfig(target_modules=r"nothing\..*"))


def test_unsupported_layer_type_is_named():
    model = tiny_gpt2()
    before = [n for n, _ in model.named_modules()]
    with pytest.raises(ValueError, match=r"'transformer.h.0.ln_1' is a LayerNorm.*Linear, Conv1D, Embedding"):
        lc.inject_lora(model, lc.LoraConfig(r=2, target_modules=["c_attn", "ln_1"]))
    assert _unchanged(model, before)                               # c_attn was not half-injected


def test_injecting_twice_is_refused():
    model = tiny_llama()
    lc.inject_lora(model, lc.LoraConfig(r=2, target_modules=["q_proj"]))
    with pytest.raises(ValueError, match="already has LoRA"):
        lc.inject_lora(model, lc.LoraConfig(r=2, target_modules=["v_proj"]))


def test_pissa_on_an_embedding_is_refused():
    with pytest.raises(ValueError, match=r"pissa.*Linear and Conv1D"):
        lc.inject_lora(tiny_gpt2(), lc.LoraConfig(r=2, target_modules=["wte"], init_lora_weights="pissa"))


def test_default_targets_follow_peft():
    assert lc.matched_modules(tiny_gpt2(), lc.LoraConfig()) == ["transformer.h.0.attn.c_attn",
                                                                  "transformer.h.1.attn.c_attn"]
    names = lc.matched_modules(tiny_llama(), lc.LoraConfig())
    assert [n.rsplit(".", 1)[1] for n in names] == ["q_proj", "v_proj"] * 2
    with pytest.raises(ValueError, match="no default"):
        lc.matched_modules(nn.Sequential(nn.Linear(2, 2)), lc.LoraConfig())


def test_list_targets_match_suffixes_like_peft():
    names = lc.matched_modules(tiny_gpt2(), lc.LoraConfig(target_modules=["c_proj"]))
    assert names == ["transformer.h.0.attn.c_proj", "transformer.h.0.mlp.c_proj",
                     "transformer.h.1.attn.c_proj", "transformer.h.1.mlp.c_proj"]


def test_all_linear_excludes_the_output_layer():
    names = lc.matched_modules(tiny_gpt2(), lc.LoraConfig(target_modules="all-linear"))
    assert "lm_head" not in names and len(names) == 8             # c_attn, attn.c_proj, c_fc, mlp.c_proj × 2


def test_layers_to_transform_selects_layer_indices():
    names = lc.matched_modules(tiny_llama(), lc.LoraConfig(target_modules=["q_proj"], layers_to_transform=1))
    assert names == ["model.layers.1.self_attn.q_proj"]
