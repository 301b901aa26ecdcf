"""Bad input gets a ValueError that names the field, the value and what is allowed; nothing changes."""

import pytest
import torch
import torch.nn as nn
from conftest import tiny_gpt2, tiny_llama

import lora_core as lc


@pytest.mark.parametrize("kw,field,allowed", [
    (dict(r=0), "r=0", "positive integer"),
    (dict(r=-3), "r=-3", "positive integer"),
    (dict(r=2.5), "r=2.5", "positive integer"),
    (dict(lora_alpha=0), "lora_alpha=0", "positive"),
    (dict(lora_alpha=-1.0), "lora_alpha=-1.0", "positive"),
    (dict(lora_dropout=1.0), "lora_dropout=1.0", "[0, 1)"),
    (dict(lora_dropout=-0.1), "lora_dropout=-0.1", "[0, 1)"),
    (dict(bias="some"), "bias='some'", "'none', 'all', 'lora_only'"),
    (dict(init_lora_weights="xavier"), "init_lora_weights='xavier'", "gaussian"),
    (dict(target_modules=[]), "target_modules=[]", "at least one"),
    (dict(target_modules="(unclosed"), "target_modules='(unclosed'", "regular expression"),
    (dict(layers_to_transform=[-1]), "layers_to_transform=[-1]", "indices"),
])
def test_config_rejects_bad_values(kw, field, allowed):
    with pytest.raises(ValueError) as e:
        lc.LoraConfig(**kw)
    assert field in str(e.value) and allowed in str(e.value)


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


def test_bad_adapter_files_are_refused_and_change_nothing(tmp_path):
    src = tiny_gpt2()
    lc.inject_lora(src, lc.LoraConfig(r=4, target_modules=["c_attn"], init_lora_weights=False))
    lc.save_adapter(src, tmp_path)
    wrong_rank = tiny_gpt2()
    lc.inject_lora(wrong_rank, lc.LoraConfig(r=2, target_modules=["c_attn"]))
    with pytest.raises(ValueError, match=r"lora_A.weight' has shape \(4, 32\), but this model needs \(2, 32\)"):
        lc.load_adapter(wrong_rank, tmp_path)
    other_targets = tiny_gpt2()
    lc.inject_lora(other_targets, lc.LoraConfig(r=4, target_modules=["c_fc"]))
    with pytest.raises(ValueError, match=r"does not fit this model: missing .*c_fc"):
        lc.load_adapter(other_targets, tmp_path)
    llama = tiny_llama()
    with pytest.raises(ValueError, match=r"matches no module"):
        lc.load_adapter(llama, tmp_path)
    assert not lc.lora_layers(llama)
    (tmp_path / "adapter_config.json").write_bytes(b"\xff\xfe not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        lc.load_adapter(tiny_gpt2(), tmp_path)
    with pytest.raises(ValueError, match=r"no adapter_config\.json"):
        lc.load_adapter(tiny_gpt2(), tmp_path / "missing")


def test_adapter_round_trip_is_bit_exact(tmp_path):
    src = tiny_llama()
    lc.inject_lora(src, lc.LoraConfig(r=4, target_modules="all-linear", init_lora_weights=False))
    lc.save_adapter(src, tmp_path)
    dst = lc.load_adapter(tiny_llama(), tmp_path)
    a, b = lc.adapter_state_dict(src), lc.adapter_state_dict(dst)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert not list(tmp_path.glob("*.tmp"))                        # atomic writes leave no temp files
