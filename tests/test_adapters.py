"""Named adapters, ours alone: the Adapter view of a layer, and a model's adapter configs.

The comparisons with PEFT's named adapters are in test_peft_oracle_adapters.py.
"""

import re

import pytest
import torch
import torch.nn as nn
from conftest import tiny_gpt2

import lora_core as lc

LAYERS = {  # id: a base layer of each supported type
    "linear": lambda: nn.Linear(16, 12),
    "embedding": lambda: nn.Embedding(20, 12),
    "conv2d": lambda: nn.Conv2d(6, 8, 3),
}


@pytest.mark.parametrize("make", LAYERS.values(), ids=LAYERS.keys())
def test_adapter_view_is_the_layers_own_parameters_and_config(make):
    cfg = lc.LoraConfig(r=4, lora_alpha=6, use_rslora=True, lora_dropout=0.1, init_lora_weights=False)
    layer = lc.layers.make_lora_layer(make(), cfg, "layer", generator=torch.Generator().manual_seed(0))
    a = layer.adapter()
    assert a == layer.adapter("default") and a.name == "default"
    params = dict(layer.named_parameters())
    assert any(p is a.A for p in params.values()) and any(p is a.B for p in params.values())
    assert (a.r, a.lora_alpha, a.use_rslora, a.scaling) == (4, 6, True, cfg.scaling) == (4, 6, True, 3.0)
    assert a.A.shape[0] == 4 and a.B.shape[1] == 4
    with torch.no_grad():
        a.B.mul_(2)                                              # writing the view writes the adapter
    B, A = layer.factors()
    torch.testing.assert_close(layer.delta_weight().flatten(1), (B @ A) * 3.0, rtol=0, atol=0)
    assert torch.equal(B, a.B.flatten(1)) and torch.equal(layer.factors("default")[1], A)


def test_an_adapter_the_layer_lacks_is_a_value_error_naming_what_it_holds():
    layer = lc.LoraLinear(nn.Linear(8, 8), lc.LoraConfig(r=2))
    for method in (layer.adapter, layer.factors, layer.delta_weight):
        with pytest.raises(ValueError, match=r"adapter_name='other'.*holds \['default'\]"):
            method("other")


def test_adapter_config_is_the_config_injection_left():
    model = tiny_gpt2()
    with pytest.raises(ValueError, match="no LoRA adapter"):
        lc.adapter_config(model)
    lc.inject_lora(model, lc.LoraConfig(r=4, lora_alpha=8, target_modules=["c_attn"]))
    cfg = lc.adapter_config(model)
    assert cfg is lc.adapter_config(model, "default")
    assert (cfg.r, cfg.lora_alpha, cfg.fan_in_fan_out) == (4, 8, True)   # settled by GPT-2's Conv1D
    with pytest.raises(ValueError, match=r"adapter_name='b'"):
        lc.adapter_config(model, "b")


BAD_NAMES = {  # name: what the error says
    "": "non-empty string",
    "a.b": "may not contain '.'",
    "a/b": "names a folder",
    "..\\x": "names a folder",
    "__base__": "mixed batches",
    "training": "attribute of nn.ModuleDict",
    "keys": "attribute of nn.ModuleDict",
    3: "non-empty string",
}


@pytest.mark.parametrize("name,why", BAD_NAMES.items(), ids=[repr(n) for n in BAD_NAMES])
def test_an_adapter_name_that_cannot_key_a_module_dict_or_a_folder_is_refused_before_anything_changes(name, why):
    model = tiny_gpt2()
    before = {n: p.detach().clone() for n, p in model.state_dict().items()}
    modules = [n for n, _ in model.named_modules()]
    with pytest.raises(ValueError, match=rf"^adapter_name={re.escape(repr(name))} is not allowed: .*{re.escape(why)}"):
        lc.inject_lora(model, lc.LoraConfig(r=4, target_modules=["c_attn"]), adapter_name=name)
    assert [n for n, _ in model.named_modules()] == modules and not hasattr(model, "lora_configs")
    assert all(torch.equal(t, before[n]) for n, t in model.state_dict().items())


def test_a_named_adapter_is_active_trainable_and_read_by_every_verb(tokens):
    model = tiny_gpt2()
    cfg = lc.LoraConfig(r=4, lora_alpha=8, target_modules=["c_attn", "wte"], init_lora_weights=False)
    lc.inject_lora(model, cfg, generator=torch.Generator().manual_seed(0), adapter_name="mine")
    assert model.lora_active == ["mine"] and list(model.lora_configs) == ["mine"]
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == {f"transformer.h.{i}.attn.c_attn.lora_{f}.mine.weight" for i in (0, 1) for f in "AB"} | {
        "transformer.wte.lora_embedding_A.mine", "transformer.wte.lora_embedding_B.mine"}
    layer = model.transformer.wte
    assert layer.adapter().A is layer.lora_embedding_A["mine"] and layer.adapter().name == "mine"
    with torch.no_grad():
        before = model(tokens).logits
        lc.merge_lora(model)
        assert all(layer.merged_adapters == ["mine"] for _, layer in lc.lora_layers(model))
        torch.testing.assert_close(model(tokens).logits, before, rtol=1e-5, atol=1e-5)
        lc.unmerge_lora(model)
        assert torch.equal(model(tokens).logits, before)
    keys = lc.adapter_state_dict(model)
    assert "base_model.model.transformer.wte.lora_embedding_A" in keys
    assert "base_model.model.transformer.h.0.attn.c_attn.lora_B.weight" in keys
    with pytest.raises(ValueError, match=r"adapter_name='default' is not an adapter of this model: it has \['mine'\]"):
        lc.adapter_state_dict(model, "default")


def test_merge_takes_a_list_of_names_and_refuses_names_the_model_lacks():
    model = tiny_gpt2()
    lc.inject_lora(model, lc.LoraConfig(r=4, target_modules=["c_attn"]))
    with pytest.raises(ValueError, match=r"adapter_names='default' must be a list"):
        lc.merge_lora(model, "default")
    with pytest.raises(ValueError, match=r"'b' is not an adapter of this model, which has \['default'\]"):
        lc.merge_lora(model, ["default", "b"])
    assert not any(layer.merged for _, layer in lc.lora_layers(model))
    lc.merge_lora(model, ["default"])
    assert all(layer.merged_adapters == ["default"] for _, layer in lc.lora_layers(model))
