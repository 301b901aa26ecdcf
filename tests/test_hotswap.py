"""Hot-swapping an adapter (hotswap.py) against PEFT 0.21's peft.utils.hotswap, and where lora_core is right instead.

The model's adapter "default" is c_attn + c_fc, r 4, α 8; every file swapped in has other random non-zero factors,
so outputs show whether the new adapter (its tensors and its scaling) is what the model computes.
"""

import json
from pathlib import Path

import pytest
import torch
from conftest import tiny_gpt2
from peft import LoraConfig as PeftLoraConfig
from peft import PeftModel, get_peft_model
from peft.utils.hotswap import hotswap_adapter as peft_hotswap
from safetensors.torch import load_file, save_file

import lora_core as lc
from lora_core.hotswap import hotswap_adapter, hotswap_adapter_from_state_dict
from lora_core.peft_io import read_adapter_config

OLD = dict(r=4, lora_alpha=8, target_modules=["c_attn", "c_fc"], init_lora_weights=False)


def adapter_file(folder: Path, seed: int = 1, **kw) -> Path:
    """A PEFT adapter folder with random factors drawn from `seed`."""
    src = tiny_gpt2()
    lc.inject_lora(src, lc.LoraConfig(**(dict(init_lora_weights=False) | kw)), torch.Generator().manual_seed(seed))
    return lc.save_adapter(src, folder)


def pair(**old):
    """Ours and PEFT's tiny GPT-2 with the same adapter "default" (OLD unless overridden)."""
    kw = OLD | old
    ours = tiny_gpt2()
    lc.inject_lora(ours, lc.LoraConfig(**kw), torch.Generator().manual_seed(0))
    theirs = get_peft_model(tiny_gpt2(), PeftLoraConfig(**kw))
    theirs.base_model.model.load_state_dict(ours.state_dict(), strict=True)
    return ours.eval(), theirs.eval()


def logits(model, tokens):
    with torch.no_grad():
        return model(tokens).logits


def state(model) -> dict[str, torch.Tensor]:
    return {k: t.clone() for k, t in model.state_dict().items()}


def same_state(model, before) -> bool:
    now = model.state_dict()
    return now.keys() == before.keys() and all(torch.equal(now[k], before[k]) for k in now)


SWAPS = {  # id: the new adapter's config
    "alpha_8_to_16": dict(r=4, lora_alpha=16, target_modules=["c_attn", "c_fc"]),
    "rank_4_to_2": dict(r=2, lora_alpha=8, target_modules=["c_attn", "c_fc"]),
    "rank_4_to_8": dict(r=8, lora_alpha=16, target_modules=["c_attn", "c_fc"]),
    "fewer_targets": dict(r=4, lora_alpha=8, target_modules=["c_attn"]),
    "fewer_targets_rank_4_to_2": dict(r=2, lora_alpha=4, target_modules=["c_fc"]),
}


@pytest.mark.parametrize("kw", SWAPS.values(), ids=SWAPS.keys())
def test_a_swap_gives_peft_s_outputs_and_a_fresh_load_s_in_the_same_parameters(kw, tmp_path, tokens):
    folder = adapter_file(tmp_path / "new", **kw)
    ours, theirs = pair()
    ids = {n: id(p) for n, p in ours.named_parameters()}
    storage = {n: p.data_ptr() for n, p in ours.named_parameters()}
    trainable = {n for n, p in ours.named_parameters() if p.requires_grad}
    hotswap_adapter(ours, folder, "default")
    peft_hotswap(theirs, str(folder), "default", torch_device="cpu")
    if kw["r"] == OLD["r"]:                                                        # copy_: the same memory too
        assert {n: p.data_ptr() for n, p in ours.named_parameters()} == storage
    fresh = lc.load_adapter(tiny_gpt2(), folder).eval()
    assert torch.equal(logits(ours, tokens), logits(fresh, tokens))                # exactly the new adapter
    torch.testing.assert_close(logits(ours, tokens), logits(theirs, tokens), rtol=0, atol=1e-6)
    assert {n: id(p) for n, p in ours.named_parameters()} == ids                   # the same Parameter objects
    assert {n for n, p in ours.named_parameters() if p.requires_grad} == trainable
    new = lc.LoraConfig(**kw)
    for name, layer in lc.lora_layers(ours):                                       # every layer says the new adapter
        a = layer.adapter()
        assert a.r == new.r == a.A.shape[0] == a.B.shape[1] == layer.lora_A["default"].out_features, name
        assert (a.lora_alpha, a.scaling) == (new.lora_alpha, new.scaling), name
        if name.split(".")[-1] not in kw["target_modules"]:                        # not in the file: zero
            assert not a.A.any() and not a.B.any(), name
    cfg = ours.lora_configs["default"]
    assert (cfg.r, cfg.lora_alpha, cfg.target_modules) == (new.r, new.lora_alpha, OLD["target_modules"])
    # PEFT: layers and config keep the old r and alpha; a smaller rank is zero-padded to the old shape.
    peft_layer = theirs.base_model.model.transformer.h[0].attn.c_attn
    assert (peft_layer.r["default"], peft_layer.lora_alpha["default"], theirs.peft_config["default"].r) == (4, 8, 4)
    assert peft_layer.lora_A["default"].weight.shape[0] == max(4, new.r)


def test_saving_after_a_swap_writes_the_new_adapter_where_peft_writes_the_old_config(tmp_path, tokens):
    folder = adapter_file(tmp_path / "new", **SWAPS["alpha_8_to_16"])
    ours, theirs = pair()
    hotswap_adapter(ours, folder, "default")
    peft_hotswap(theirs, str(folder), "default", torch_device="cpu")
    lc.save_adapter(ours, tmp_path / "ours")
    theirs.save_pretrained(tmp_path / "peft")
    assert read_adapter_config(tmp_path / "ours").lora_alpha == 16
    assert json.loads((tmp_path / "peft" / "adapter_config.json").read_text())["lora_alpha"] == 8
    ours_again = PeftModel.from_pretrained(tiny_gpt2(), tmp_path / "ours").eval()
    peft_again = PeftModel.from_pretrained(tiny_gpt2(), tmp_path / "peft").eval()
    torch.testing.assert_close(logits(ours_again, tokens), logits(ours, tokens), rtol=0, atol=1e-6)
    assert (logits(peft_again, tokens) - logits(theirs, tokens)).abs().max() > 1e-3   # PEFT's file: half the ΔW


def test_a_layer_the_adapter_lacks_is_refused_before_anything_changes(tmp_path):
    folder = adapter_file(tmp_path / "new", r=4, lora_alpha=8, target_modules=["c_attn", "c_fc", "c_proj"])
    ours, theirs = pair()
    before, configs = state(ours), dict(ours.lora_configs)
    with pytest.raises(ValueError, match=r"unexpected keys found: .*c_proj.*hot-swapping cannot add layers"):
        hotswap_adapter(ours, folder, "default")
    assert same_state(ours, before) and ours.lora_configs == configs
    with pytest.raises(RuntimeError, match="unexpected keys found"):               # PEFT: a RuntimeError
        peft_hotswap(theirs, str(folder), "default", torch_device="cpu")


@pytest.mark.parametrize("field,value", [("use_rslora", True), ("lora_dropout", 0.1)])
def test_rslora_and_dropout_must_match_as_in_peft(field, value, tmp_path):
    folder = adapter_file(tmp_path / "new", **(OLD | {field: value}))
    ours, theirs = pair()
    before = state(ours)
    was = OLD.get(field, 0.0 if field == "lora_dropout" else False)
    with pytest.raises(ValueError, match=rf"^{field}={value} is not allowed: Configs are incompatible: for {field}, "
                                         rf"{was} != {value}"):
        hotswap_adapter(ours, folder, "default")
    assert same_state(ours, before)
    with pytest.raises(ValueError, match=f"Configs are incompatible: for {field}, {was} != {value}"):
        peft_hotswap(theirs, str(folder), "default", torch_device="cpu")


def test_a_merged_adapter_cannot_be_swapped_as_in_peft(tmp_path):
    folder = adapter_file(tmp_path / "new", **SWAPS["alpha_8_to_16"])
    ours, theirs = pair()
    lc.merge_lora(ours)
    theirs.merge_adapter()
    before = state(ours)
    with pytest.raises(ValueError, match="Cannot hot-swap adapter 'default' because it is currently merged"):
        hotswap_adapter(ours, folder, "default")
    assert same_state(ours, before)
    with pytest.raises(ValueError, match="Cannot hot-swap adapter 'default' because it is currently merged"):
        peft_hotswap(theirs, str(folder), "default", torch_device="cpu")


def test_the_config_is_checked_against_the_swapped_adapter_where_peft_checks_the_active_one(tmp_path, tokens):
    """PEFT compares the file with `model.active_peft_config` (peft/utils/hotswap.py 697), not with the adapter it
    swaps: an inactive rsLoRA adapter cannot take an rsLoRA file, and can take a plain one."""
    y = dict(r=2, lora_alpha=16, use_rslora=True, target_modules=["c_attn"], init_lora_weights=False)
    ours, theirs = pair()
    lc.add_adapter(ours, "y", lc.LoraConfig(**y), torch.Generator().manual_seed(5))
    theirs.add_adapter("y", PeftLoraConfig(**y))
    theirs.base_model.model.load_state_dict(ours.state_dict(), strict=True)
    rslora = adapter_file(tmp_path / "rs", r=4, lora_alpha=4, use_rslora=True, target_modules=["c_attn"])
    plain = adapter_file(tmp_path / "plain", r=4, lora_alpha=4, target_modules=["c_attn"])
    hotswap_adapter(ours, rslora, "y")
    with pytest.raises(ValueError, match="Configs are incompatible: for use_rslora, False != True"):
        peft_hotswap(theirs, str(rslora), "y", torch_device="cpu")
    with pytest.raises(ValueError, match=r"^use_rslora=False is not allowed: Configs are incompatible: for "
                                         r"use_rslora, True != False"):
        hotswap_adapter(ours, plain, "y")
    peft_hotswap(theirs, str(plain), "y", torch_device="cpu")                      # PEFT: accepted
    lc.set_adapter(ours, "y")
    fresh = lc.load_adapter(tiny_gpt2(), rslora).eval()
    assert torch.equal(logits(ours, tokens), logits(fresh, tokens))
    assert theirs.base_model.model.transformer.h[0].attn.c_attn.use_rslora["y"]      # yet it scales by α/r now
    assert theirs.base_model.model.transformer.h[0].attn.c_attn.scaling["y"] == 1.0


@pytest.mark.parametrize("file_kw,model_kw,why", [
    (dict(bias="lora_only"), {}, r"^bias='lora_only' is not allowed: this file trains biases"),
    (dict(modules_to_save=["lm_head"]), {}, r"^modules_to_save=\['lm_head'\] is not allowed: this file saves"),
    ({}, dict(bias="all"), r"^bias='all' is not allowed: adapter 'default' trains biases"),
], ids=["file_bias", "file_saved_module", "model_bias"])
def test_biases_and_saved_modules_are_refused_where_peft_keeps_the_old_ones(file_kw, model_kw, why, tmp_path):
    folder = adapter_file(tmp_path / "new", **(OLD | file_kw))
    ours, _ = pair(**model_kw)
    before = state(ours)
    with pytest.raises(ValueError, match=why):
        hotswap_adapter(ours, folder, "default")
    assert same_state(ours, before)


def _tensors(folder: Path) -> dict[str, torch.Tensor]:
    return load_file(folder / "adapter_model.safetensors")


A0 = "base_model.model.transformer.h.0.attn.c_attn.lora_A.weight"
B0 = "base_model.model.transformer.h.0.attn.c_attn.lora_B.weight"


@pytest.mark.parametrize("change,why", [
    (lambda t: t[A0].fill_(float("nan")), "NaN or inf"),
    (lambda t: t[A0].fill_(1e30), "over the bound"),
    (lambda t: t.pop(B0), rf"'{B0}' is missing: .*swapped as a whole"),
    (lambda t: t.__setitem__(A0, torch.zeros(3, 32)), r"has shape \(3, 32\), but with r=2 layer .* needs \(2, 32\)"),
], ids=["nan", "overflow", "half_a_layer", "rank_not_the_config_s"])
def test_a_bad_file_is_refused_before_anything_changes(change, why, tmp_path):
    folder = adapter_file(tmp_path / "new", **SWAPS["rank_4_to_2"])
    tensors = _tensors(folder)
    change(tensors)
    ours, _ = pair()
    before, ids = state(ours), {n: id(p) for n, p in ours.named_parameters()}
    with pytest.raises(ValueError, match=why):
        hotswap_adapter_from_state_dict(ours, tensors, "default", read_adapter_config(folder))
    assert same_state(ours, before) and {n: id(p) for n, p in ours.named_parameters()} == ids
    assert ours.lora_configs["default"].r == 4


def test_an_embedding_adapter_swaps_where_peft_fails(tmp_path, tokens):
    kw = dict(r=4, lora_alpha=8, target_modules=["wte", "c_attn"])
    folder = adapter_file(tmp_path / "new", r=2, lora_alpha=4, target_modules=["wte", "c_attn"])
    ours, theirs = pair(**kw)
    hotswap_adapter(ours, folder, "default")
    fresh = lc.load_adapter(tiny_gpt2(), folder).eval()
    assert torch.equal(logits(ours, tokens), logits(fresh, tokens))
    assert ours.transformer.wte.adapter().A.shape == (2, 64)
    # PEFT finds the layer by cutting ".lora_embedding_A.default" as if it were three parts: it lands on GPT2Model.
    with pytest.raises(AttributeError, match="'GPT2Model' object has no attribute 'scaling'"):
        peft_hotswap(theirs, str(folder), "default", torch_device="cpu")


def test_after_a_rank_change_the_adapter_trains_and_merges_like_a_fresh_one(tmp_path, tokens):
    folder = adapter_file(tmp_path / "new", **SWAPS["rank_4_to_8"])
    ours, _ = pair()
    hotswap_adapter(ours, folder, "default")
    fresh = lc.load_adapter(tiny_gpt2(), folder).eval()
    for model in (ours, fresh):
        model(tokens).logits.square().mean().backward()
    for (_, mine), (_, theirs) in zip(lc.lora_layers(ours), lc.lora_layers(fresh), strict=True):
        assert torch.equal(mine.adapter().A.grad, theirs.adapter().A.grad)
        assert torch.equal(mine.delta_weight(), theirs.delta_weight())
    with torch.no_grad():
        lc.merge_lora(ours)
        lc.merge_lora(fresh)
    assert torch.equal(logits(ours, tokens), logits(fresh, tokens))
    save_file(lc.adapter_state_dict(ours), tmp_path / "check.safetensors")     # shapes are consistent on disk too
    assert load_file(tmp_path / "check.safetensors")[A0].shape == (8, 32)
