"""Named adapters, ours alone: the Adapter view of a layer, and a model's adapter configs.

The comparisons with PEFT's named adapters are in test_peft_oracle_adapters.py.
"""

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
