"""PEFT files for several adapters (save_adapter / load_adapter with names) against PEFT 0.21.

Three adapters on one tiny GPT-2: "default" (c_proj, r 4, α 4), "x" (c_attn, r 4, α 8) and "y" (c_attn + c_fc,
r 2, α 16, rsLoRA), all with random non-zero factors, so a wrong scaling, a dropped adapter or a swapped file shows.
(Not "a" and "b": PEFT warns about adapter names inside its prefix "lora_", and its key filters match substrings.)
"""

import json
import re
from pathlib import Path

import pytest
import torch
from conftest import tiny_gpt2
from peft import LoraConfig as PeftLoraConfig
from peft import PeftModel, get_peft_model
from peft.utils import get_peft_model_state_dict
from safetensors.torch import load_file, save_file

import lora_core as lc
from lora_core.peft_io import adapter_folder

CFGS = {
    "default": dict(r=4, lora_alpha=4, target_modules=["c_proj"], init_lora_weights=False),
    "x": dict(r=4, lora_alpha=8, target_modules=["c_attn"], init_lora_weights=False),
    "y": dict(r=2, lora_alpha=16, use_rslora=True, target_modules=["c_attn", "c_fc"], init_lora_weights=False),
}


def three_adapters(seed: int = 0):
    """Ours and PEFT's models with the three adapters and the same factors (drawn from a generator); default active."""
    g = torch.Generator().manual_seed(seed)
    ours = tiny_gpt2()
    theirs = None
    for name, kw in CFGS.items():
        if theirs is None:
            lc.inject_lora(ours, lc.LoraConfig(**kw), generator=g, adapter_name=name)
            theirs = get_peft_model(tiny_gpt2(), PeftLoraConfig(**kw), adapter_name=name)
        else:
            lc.add_adapter(ours, name, lc.LoraConfig(**kw), generator=g)
            theirs.add_adapter(name, PeftLoraConfig(**kw))
    theirs.base_model.model.load_state_dict(ours.state_dict(), strict=True)
    return ours.eval(), theirs.eval()


def logits(model, tokens):
    with torch.no_grad():
        return model(tokens).logits


def trainable_names(model) -> set[str]:
    return {n.removeprefix("base_model.model.") for n, p in model.named_parameters() if p.requires_grad}


def files(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file() and p.name != "README.md"}


def test_save_adapter_writes_peft_s_layout_tensors_and_configs(tmp_path):
    ours, theirs = three_adapters()
    assert lc.save_adapter(ours, tmp_path / "ours") == tmp_path / "ours"
    theirs.save_pretrained(tmp_path / "peft")
    assert files(tmp_path / "ours") == files(tmp_path / "peft") == {
        f"{folder}{f}" for folder in ("", "x/", "y/") for f in ("adapter_config.json", "adapter_model.safetensors")}
    for name in CFGS:
        mine, peft = (adapter_folder(tmp_path / who, name) for who in ("ours", "peft"))
        a, b = load_file(mine / "adapter_model.safetensors"), load_file(peft / "adapter_model.safetensors")
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), name
        assert a.keys() == get_peft_model_state_dict(theirs, adapter_name=name).keys()
        ours_cfg, peft_cfg = (json.loads((f / "adapter_config.json").read_text()) for f in (mine, peft))
        assert set(ours_cfg) <= set(peft_cfg)                                      # PEFT writes more fields
        for field, value in ours_cfg.items():                                      # each of ours is PEFT's
            if field == "target_modules":                                          # a set in PEFT: any order
                assert sorted(value) == sorted(peft_cfg[field]), name
            else:
                assert value == peft_cfg[field], (name, field)
        assert (ours_cfg["r"], ours_cfg["lora_alpha"], ours_cfg["inference_mode"]) == (
            CFGS[name]["r"], CFGS[name]["lora_alpha"], True)


def test_peft_loads_our_folder_and_gives_our_logits_for_each_adapter(tmp_path, tokens):
    ours, _ = three_adapters()
    lc.save_adapter(ours, tmp_path)
    theirs = PeftModel.from_pretrained(tiny_gpt2(), tmp_path)
    for name in ("x", "y"):
        theirs.load_adapter(tmp_path / name, name)
    theirs.eval()
    for active in ("default", "x", "y"):
        lc.set_adapter(ours, active)
        theirs.set_adapter(active)
        torch.testing.assert_close(logits(ours, tokens), logits(theirs, tokens), rtol=0, atol=1e-6)
    assert not torch.allclose(logits(ours, tokens), logits(tiny_gpt2(), tokens), atol=1e-3)   # y adds something


def test_load_adapter_round_trips_bit_exact_with_peft_s_trainability(tmp_path, tokens):
    ours, _ = three_adapters()
    lc.save_adapter(ours, tmp_path)
    back = tiny_gpt2().train()
    rng = torch.get_rng_state()
    lc.load_adapter(back, tmp_path)
    assert back.training and lc.active_adapters(back) == ["default"]              # the first one: as today
    lc.load_adapter(back, tmp_path / "x", "x")
    assert not back.training                                                       # frozen load: eval(), as PEFT
    lc.load_adapter(back.train(), tmp_path / "y", "y", is_trainable=True)
    assert back.training
    assert torch.equal(torch.get_rng_state(), rng)                                 # loading draws nothing globally
    assert back.state_dict().keys() == ours.state_dict().keys()
    assert all(torch.equal(t, ours.state_dict()[k]) for k, t in back.state_dict().items())
    assert list(back.lora_configs) == ["default", "x", "y"] and lc.active_adapters(back) == ["default"]
    assert all(back.lora_configs[n] == ours.lora_configs[n] for n in CFGS)

    peft = PeftModel.from_pretrained(tiny_gpt2(), tmp_path, is_trainable=True)
    peft.load_adapter(tmp_path / "x", "x")
    peft.train()
    peft.load_adapter(tmp_path / "y", "y", is_trainable=True)
    assert peft.training and peft.active_adapters == ["default"]
    assert trainable_names(back) == trainable_names(peft)                          # default and y's factors, not x's
    assert {n.split(".")[-2] for n in trainable_names(back)} == {"default", "y"}
    lc.set_adapter(back, "y")
    peft.set_adapter("y")
    torch.testing.assert_close(logits(back.eval(), tokens), logits(peft.eval(), tokens), rtol=0, atol=1e-6)


def test_only_known_adapters_are_saved_and_an_empty_selection_is_refused_where_peft_writes_nothing(tmp_path):
    ours, theirs = three_adapters()
    for bad, why in ((["nope"], r"'nope' is not an adapter of this model; its adapters are \['default', 'x', 'y'\]"),
                     (["x", "nope"], "'nope' is not an adapter"),
                     ([], "name at least one"),
                     ("x", "a list of adapter names")):
        with pytest.raises(ValueError, match=rf"^selected_adapters={re.escape(repr(bad))} is not allowed: {why}"):
            lc.save_adapter(ours, tmp_path / "bad", selected_adapters=bad)
    assert not (tmp_path / "bad").exists()
    with pytest.raises(ValueError, match="invalid `selected_adapters`"):
        theirs.save_pretrained(tmp_path / "peft_bad", selected_adapters=["nope"])
    theirs.save_pretrained(tmp_path / "peft_empty", selected_adapters=[])          # PEFT: no error, no adapter
    assert not list((tmp_path / "peft_empty").rglob("*.safetensors"))
    lc.save_adapter(ours, tmp_path / "one", selected_adapters=["y"])
    assert files(tmp_path / "one") == {"y/adapter_config.json", "y/adapter_model.safetensors"}
    with pytest.raises(ValueError, match="no LoRA adapter"):
        lc.save_adapter(tiny_gpt2(), tmp_path / "none")


def test_adapter_zip_and_state_dict_take_an_adapter_name():
    import io
    import zipfile

    ours, theirs = three_adapters()
    zf = zipfile.ZipFile(io.BytesIO(lc.adapter_zip(ours, "y")))
    assert sorted(zf.namelist()) == ["adapter_config.json", "adapter_model.safetensors"]
    assert json.loads(zf.read("adapter_config.json"))["r"] == 2
    assert lc.adapter_state_dict(ours, "y").keys() == get_peft_model_state_dict(theirs, adapter_name="y").keys()
    assert json.loads(zipfile.ZipFile(io.BytesIO(lc.adapter_zip(ours))).read("adapter_config.json"))["r"] == 4


def _with_config(src: Path, dst: Path, **changes) -> Path:
    """A copy of adapter folder `src` at `dst` with config fields changed (the tensors as they were)."""
    dst.mkdir(parents=True)
    config = json.loads((src / "adapter_config.json").read_text()) | changes
    (dst / "adapter_config.json").write_text(json.dumps(config))
    (dst / "adapter_model.safetensors").write_bytes((src / "adapter_model.safetensors").read_bytes())
    return dst


def test_loading_into_an_existing_adapter_refuses_another_config_where_peft_keeps_the_old_scaling(tmp_path, tokens):
    ours, theirs = three_adapters()
    lc.save_adapter(ours, tmp_path / "saved")
    other = _with_config(tmp_path / "saved" / "x", tmp_path / "alpha16", lora_alpha=16)
    before = {k: t.clone() for k, t in ours.state_dict().items()}
    for folder, field in ((other, r"lora_alpha=16 is not allowed: adapter 'x' has lora_alpha=8"),
                          (_with_config(tmp_path / "saved" / "x", tmp_path / "rs", use_rslora=True), "use_rslora=True"),
                          (_with_config(tmp_path / "saved" / "x", tmp_path / "t", target_modules=["c_attn", "c_fc"]),
                           "target_modules=")):
        with pytest.raises(ValueError, match=rf"^{field}.*hotswap_adapter\(model, directory, 'x'\)"):
            lc.load_adapter(ours, folder, "x")
    with pytest.raises(ValueError, match=r"does not fit this model: .*hotswap_adapter"):   # another rank, targets
        lc.load_adapter(ours, tmp_path / "saved" / "y", "x")
    assert all(torch.equal(t, before[k]) for k, t in ours.state_dict().items())
    assert ours.lora_configs["x"].lora_alpha == 8

    # PEFT copies the weights and keeps x's scaling: the file says alpha 16, the model computes with 8 / 4.
    theirs.load_adapter(other, "x")
    c_attn = theirs.base_model.model.transformer.h[0].attn.c_attn
    assert c_attn.scaling["x"] == 2.0 and theirs.peft_config["x"].lora_alpha == 8
    theirs.set_adapter("x")
    fresh = PeftModel.from_pretrained(tiny_gpt2(), other).eval()                       # what the file means
    assert (logits(theirs, tokens) - logits(fresh, tokens)).abs().max() > 1e-3

    with torch.no_grad():                                                           # a file that fits: copied
        ours.transformer.h[0].attn.c_attn.lora_A["x"].weight.zero_()
    lc.load_adapter(ours, tmp_path / "saved" / "x", "x")
    assert all(torch.equal(t, before[k]) for k, t in ours.state_dict().items())


def _corrupt(src: Path, dst: Path, change) -> Path:
    dst.mkdir(parents=True)
    (dst / "adapter_config.json").write_text((src / "adapter_config.json").read_text())
    tensors = load_file(src / "adapter_model.safetensors")
    change(tensors)
    save_file(tensors, dst / "adapter_model.safetensors")
    return dst


Y_A = "base_model.model.transformer.h.1.mlp.c_fc.lora_A.weight"


@pytest.mark.parametrize("change,why", [
    (lambda t: t[Y_A].fill_(float("nan")), "NaN or inf"),
    (lambda t: t.__setitem__(Y_A, torch.zeros(3, 32)), r"has shape \(3, 32\), but this model needs \(2, 32\)"),
    (lambda t: t.pop(Y_A), "does not fit this model: missing"),
    (lambda t: t.__setitem__("base_model.model.lm_head.lora_A.weight", torch.zeros(2, 32)), "unexpected"),
], ids=["nan", "shape", "missing", "unexpected"])
def test_a_bad_file_for_a_new_adapter_changes_nothing(change, why, tmp_path, tokens):
    ours, _ = three_adapters()
    lc.save_adapter(ours, tmp_path / "saved", selected_adapters=["y"])
    bad = _corrupt(tmp_path / "saved" / "y", tmp_path / "bad", change)
    model = tiny_gpt2(dropout=0.0).train()  # train mode (a frozen load would switch it), outputs deterministic
    lc.inject_lora(model, lc.LoraConfig(**CFGS["default"]), generator=torch.Generator().manual_seed(1))
    modules, trainable, out = [n for n, _ in model.named_modules()], trainable_names(model), logits(model, tokens)
    state = {k: t.clone() for k, t in model.state_dict().items()}
    with pytest.raises(ValueError, match=why):
        lc.load_adapter(model, bad, "y")
    assert [n for n, _ in model.named_modules()] == modules                 # the new c_attn/c_fc layers unwrapped
    assert model.state_dict().keys() == state.keys() and all(torch.equal(t, state[k]) for k, t in
                                                             model.state_dict().items())
    assert list(model.lora_configs) == ["default"] and lc.active_adapters(model) == ["default"]
    assert trainable_names(model) == trainable and model.training and torch.equal(logits(model, tokens), out)
    lc.load_adapter(model, tmp_path / "saved" / "y", "y")                   # the good file still loads
    assert list(model.lora_configs) == ["default", "y"]


def test_a_frozen_first_load_freezes_the_whole_adapter_where_peft_leaves_a_lora_only_bias_trainable(tmp_path):
    kw = dict(r=4, lora_alpha=8, target_modules=["c_attn"], bias="lora_only", init_lora_weights=False)
    src = tiny_gpt2()
    lc.inject_lora(src, lc.LoraConfig(**kw))
    lc.save_adapter(src, tmp_path)
    ours = lc.load_adapter(tiny_gpt2().train(), tmp_path, is_trainable=False)
    assert not trainable_names(ours) and not ours.training
    peft = PeftModel.from_pretrained(tiny_gpt2().train(), tmp_path)                 # is_trainable=False
    assert not peft.training
    assert trainable_names(peft) == {f"transformer.h.{i}.attn.c_attn.base_layer.bias" for i in (0, 1)}
    trained = lc.load_adapter(tiny_gpt2(), tmp_path)                                # None: trains, as inject_lora
    assert trainable_names(trained) == trainable_names(PeftModel.from_pretrained(tiny_gpt2(), tmp_path,
                                                                                   is_trainable=True))


def test_a_dora_adapter_s_files_have_peft_s_keys(tmp_path):
    """The key map is PEFT's strip-the-name rule over every per-adapter container: the magnitude needs no case."""
    kw = dict(r=4, lora_alpha=8, target_modules=["c_attn"], use_dora=True, init_lora_weights=False)
    ours = tiny_gpt2()
    lc.inject_lora(ours, lc.LoraConfig(**CFGS["default"]))
    lc.add_adapter(ours, "x", lc.LoraConfig(**kw), generator=torch.Generator().manual_seed(0))
    theirs = get_peft_model(tiny_gpt2(), PeftLoraConfig(**CFGS["default"]))
    theirs.add_adapter("x", PeftLoraConfig(**kw))
    keys = lc.adapter_state_dict(ours, "x").keys()
    assert keys == get_peft_model_state_dict(theirs, adapter_name="x").keys()
    assert "base_model.model.transformer.h.0.attn.c_attn.lora_magnitude_vector" in keys     # PEFT's old key: no .weight
    theirs.base_model.model.load_state_dict(ours.state_dict(), strict=True)
    lc.save_adapter(ours, tmp_path / "ours")
    theirs.save_pretrained(tmp_path / "peft")
    for who in ("ours", "peft"):                                    # either file loads back bit-exact
        back = tiny_gpt2()
        lc.load_adapter(back, tmp_path / who)
        lc.load_adapter(back, tmp_path / who / "x", "x")
        assert all(torch.equal(t, ours.state_dict()[k]) for k, t in back.state_dict().items())
