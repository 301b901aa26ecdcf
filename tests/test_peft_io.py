"""PEFT adapter files (save_adapter / load_adapter): a file that does not fit is refused and changes nothing,
and the round trip is bit-exact with atomic writes."""

import pytest
import torch
from conftest import tiny_gpt2, tiny_llama

import lora_core as lc


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
