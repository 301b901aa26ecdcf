"""LoraConfig refuses a bad value with a ValueError that names the field, the value and what is allowed."""

import pytest

import lora_core as lc

BAD_VALUES = [  # (LoraConfig kwargs, the field=value the message names, what it says is allowed)
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
    (dict(task_type="TOKEN_CLASSIFICATION"), "task_type='TOKEN_CLASSIFICATION'", "TOKEN_CLS"),  # seed 000's
    (dict(task_type="causal_lm"), "task_type='causal_lm'", "CAUSAL_LM, TOKEN_CLS"),
    (dict(fan_in_fan_out="yes"), "fan_in_fan_out='yes'", "true, false or None"),
]


@pytest.mark.parametrize("kw,field,allowed", BAD_VALUES, ids=[field for _, field, _ in BAD_VALUES])
def test_config_rejects_bad_values(kw, field, allowed):
    with pytest.raises(ValueError) as e:
        lc.LoraConfig(**kw)
    assert field in str(e.value) and allowed in str(e.value)
