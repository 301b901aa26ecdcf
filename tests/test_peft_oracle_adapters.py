"""Named adapters against PEFT 0.21: the same names, keys, draws and (with several adapters) the same outputs.

Every comparison of outputs uses non-zero factors (init_lora_weights=False, copied across), with alphas that
differ from r, so that a wrong scaling or a dropped adapter shows.
"""

import pytest
import torch
from conftest import tiny_gpt2, tiny_llama
from peft import LoraConfig as PeftLoraConfig
from peft import get_peft_model
from peft.utils import get_peft_model_state_dict

import lora_core as lc
from lora_core.inject import adapter_layers


@pytest.mark.parametrize("init", [True, False, "gaussian"])
def test_factors_drawn_from_the_global_rng_are_peft_s_embedding_included(init):
    """Without a generator every factor comes from torch's global RNG in PEFT's order: an Embedding's A and B are
    drawn with torch.randn first, then reset (A = 0, B normal), so the layers after it get PEFT's stream too."""
    kw = dict(r=4, lora_alpha=8, target_modules=["wte", "c_attn", "c_fc"], init_lora_weights=init)
    torch.manual_seed(11)
    ours = tiny_gpt2()
    lc.inject_lora(ours, lc.LoraConfig(**kw))
    after_ours = torch.get_rng_state()
    torch.manual_seed(11)
    theirs = get_peft_model(tiny_gpt2(), PeftLoraConfig(**kw))
    assert torch.equal(torch.get_rng_state(), after_ours)            # the same number of draws
    peft_state = {k.removeprefix("base_model.model."): t for k, t in theirs.state_dict().items()}
    lora = {k: t for k, t in ours.state_dict().items() if ".lora_" in k}
    assert len(lora) == 2 * 5                                        # wte, and c_attn and c_fc in 2 blocks
    for key, t in lora.items():
        assert torch.equal(t, peft_state[key]), key


# --- several adapters --------------------------------------------------------------------------------------------
CFG_X = dict(r=4, lora_alpha=8, target_modules=["c_attn"], init_lora_weights=False)
CFG_Y = dict(r=2, lora_alpha=16, use_rslora=True, target_modules=["c_attn", "c_fc"], init_lora_weights=False)


def two_adapters(dtype=torch.float32):
    """Ours and PEFT's tiny GPT-2 with adapters x (c_attn, r 4, α 8) and y (c_attn + c_fc, r 2, α 16, rsLoRA),
    x active; our random factors are loaded into PEFT's model by state_dict, whose keys are the same. (Not "a"
    and "b": PEFT warns about names inside its prefix "lora_".)"""
    g = torch.Generator().manual_seed(0)
    ours = tiny_gpt2().to(dtype)
    lc.inject_lora(ours, lc.LoraConfig(**CFG_X), generator=g, adapter_name="x")
    assert lc.add_adapter(ours, "y", lc.LoraConfig(**CFG_Y), generator=g) == [
        f"transformer.h.{i}.{m}" for i in (0, 1) for m in ("attn.c_attn", "mlp.c_fc")]
    theirs = get_peft_model(tiny_gpt2().to(dtype), PeftLoraConfig(**CFG_X), adapter_name="x")
    theirs.add_adapter("y", PeftLoraConfig(**CFG_Y))
    theirs.base_model.model.load_state_dict(ours.state_dict(), strict=True)
    return ours.eval(), theirs.eval()


def trainable_names(model) -> set[str]:
    return {n.removeprefix("base_model.model.") for n, p in model.named_parameters() if p.requires_grad}


def logits(model, tokens):
    with torch.no_grad():
        return model(tokens).logits


def test_an_added_adapter_is_inactive_and_frozen_as_in_peft(tokens):
    ours, theirs = two_adapters()
    assert set(ours.state_dict()) == {k.removeprefix("base_model.model.") for k in theirs.state_dict()}
    assert trainable_names(ours) == trainable_names(theirs) == {
        f"transformer.h.{i}.attn.c_attn.lora_{f}.x.weight" for i in (0, 1) for f in "AB"}
    assert lc.active_adapters(ours) == ["x"] == theirs.active_adapters
    assert list(ours.lora_configs) == ["x", "y"] and ours.lora_configs["y"].fan_in_fan_out   # Conv1D settles it
    torch.testing.assert_close(logits(ours, tokens), logits(theirs, tokens), rtol=0, atol=1e-6)
    only_a = tiny_gpt2()
    lc.inject_lora(only_a, lc.LoraConfig(**CFG_X), adapter_name="x")
    with torch.no_grad():
        for (_, layer), (_, alone) in zip(adapter_layers(ours, "x"), lc.lora_layers(only_a), strict=True):
            alone.adapter().A.copy_(layer.adapter("x").A)
            alone.adapter().B.copy_(layer.adapter("x").B)
    assert torch.equal(logits(ours, tokens), logits(only_a.eval(), tokens))   # b adds nothing yet
    assert lc.trainable_parameters(ours) == theirs.get_nb_trainable_parameters() == (1_024, 30_720)
    ledger = lc.ledger_of(ours)
    assert ledger.adapters == ["x", "y"] and ledger.lora_params == 2_176 and ledger.frozen_lora == 1_152
    assert ledger.trainable == 1_024 and ledger.other_trainable == 0


@pytest.mark.parametrize("active", ["y", ["x", "y"], ["y", "x"], "x"], ids=repr)
def test_switching_adapters_gives_peft_s_outputs_and_trainable_factors(active, tokens):
    ours, theirs = two_adapters()
    lc.set_adapter(ours, active)
    theirs.base_model.set_adapter(active)
    torch.testing.assert_close(logits(ours, tokens), logits(theirs, tokens), rtol=0, atol=1e-6)
    assert trainable_names(ours) == trainable_names(theirs)
    assert lc.trainable_parameters(ours) == theirs.get_nb_trainable_parameters()
    names = [active] if isinstance(active, str) else active
    assert lc.active_adapters(ours) == names
    assert all(layer.active_adapters == names for _, layer in lc.lora_layers(ours))


def test_both_adapters_active_add_both_branches_also_on_a_bf16_base(tokens):
    for dtype in (torch.float32, torch.bfloat16):
        ours, theirs = two_adapters(dtype)
        lc.set_adapter(ours, ["x", "y"])
        theirs.base_model.set_adapter(["x", "y"])
        layer = ours.transformer.h[0].attn.c_attn
        assert layer.adapter("x").A.dtype == torch.float32                         # fp32 factors, as PEFT's
        x = torch.randn(3, 32, generator=torch.Generator().manual_seed(2)).to(dtype)
        with torch.no_grad():
            by_hand = (layer.base_layer(x) + layer.lora_branch(x, "x") + layer.lora_branch(x, "y")).to(dtype)
            assert torch.equal(layer(x), by_hand)                                   # summed wide, rounded once
            assert torch.equal(layer(x), theirs.base_model.model.transformer.h[0].attn.c_attn(x))
        torch.testing.assert_close(logits(ours, tokens), logits(theirs, tokens), rtol=0, atol=1e-6 if
                                   dtype == torch.float32 else 0)


def test_merging_two_adapters_equals_peft_and_unmerging_is_bit_exact_where_peft_s_is_not(tokens):
    ours, theirs = two_adapters()
    lc.set_adapter(ours, ["x", "y"])
    theirs.base_model.set_adapter(["x", "y"])
    before = {n: layer.base_layer.weight.detach().clone() for n, layer in lc.lora_layers(ours)}
    unmerged = logits(ours, tokens)
    with torch.no_grad():
        lc.merge_lora(ours, ["x", "y"])
        theirs.base_model.merge_adapter(["x", "y"])
    peft_w = {n.removeprefix("base_model.model.").removesuffix(".base_layer.weight"): p
              for n, p in theirs.named_parameters() if n.endswith(".base_layer.weight")}
    for name, layer in lc.lora_layers(ours):
        assert torch.equal(layer.base_layer.weight, peft_w[name]), name           # W + ΔW_a + ΔW_b, in PEFT's order
        assert layer.merged_adapters == [n for n in ("x", "y") if n in layer.r]
    torch.testing.assert_close(logits(ours, tokens), unmerged, rtol=1e-5, atol=1e-5)
    assert torch.equal(logits(ours, tokens), logits(theirs, tokens))
    lc.unmerge_lora(ours)
    theirs.base_model.unmerge_adapter()
    assert all(torch.equal(layer.base_layer.weight, before[n]) for n, layer in lc.lora_layers(ours))
    assert not all(torch.equal(peft_w[n], before[n]) for n in before)              # PEFT subtracts: rounding stays


def test_a_partial_merge_keeps_the_other_active_adapter_where_peft_drops_it(tokens):
    ours, theirs = two_adapters()
    lc.set_adapter(ours, ["x", "y"])
    theirs.base_model.set_adapter(["x", "y"])
    both = logits(ours, tokens)
    with torch.no_grad():
        lc.merge_lora(ours, ["x"])
        theirs.base_model.merge_adapter(["x"])
    torch.testing.assert_close(logits(ours, tokens), both, rtol=1e-5, atol=1e-5)   # W + ΔW_a, plus b's branch
    lc.unmerge_lora(ours)
    lc.set_adapter(ours, "x")
    # PEFT: once anything is merged into a layer, its forward is the base layer alone, so b's branch is lost
    # on c_attn (a merged) but kept on c_fc (nothing merged there).
    peft_out = logits(theirs, tokens)
    assert (peft_out - both).abs().max() > 1e-2
    assert (peft_out - logits(ours, tokens)).abs().max() > 1e-2


def test_deleting_the_active_adapter_activates_one_adapter_for_the_whole_model_where_peft_picks_per_layer(tokens):
    """PEFT's choice: per layer, the first in sorted order of the adapters that layer still holds."""
    kw = dict(r=2, lora_alpha=4, init_lora_weights=False)
    cfgs = {"default": ["c_attn", "c_fc"], "zz": ["c_attn"], "bb": ["c_fc"]}
    ours, theirs = tiny_gpt2(), None
    for name, targets in cfgs.items():
        if theirs is None:
            lc.inject_lora(ours, lc.LoraConfig(target_modules=targets, **kw), adapter_name=name)
            theirs = get_peft_model(tiny_gpt2(), PeftLoraConfig(target_modules=targets, **kw), adapter_name=name)
        else:
            lc.add_adapter(ours, name, lc.LoraConfig(target_modules=targets, **kw))
            theirs.add_adapter(name, PeftLoraConfig(target_modules=targets, **kw))
    theirs.base_model.model.load_state_dict(ours.state_dict(), strict=True)
    with pytest.warns(UserWarning, match="Adapter default was active which is now deleted. Setting active adapter to bb"
                      ):
        lc.delete_adapter(ours, "default")
    with pytest.warns(UserWarning, match="Adapter default was active"):
        theirs.delete_adapter("default")
    assert set(ours.state_dict()) == {k.removeprefix("base_model.model.") for k in theirs.state_dict()}
    assert lc.active_adapters(ours) == ["bb"] and list(ours.lora_configs) == ["zz", "bb"]
    assert {tuple(layer.active_adapters) for _, layer in lc.lora_layers(ours)} == {("bb",)}
    peft_active = {n.rsplit(".", 1)[-1]: layer.active_adapters for n, layer in theirs.named_modules()
                   if hasattr(layer, "lora_A") and hasattr(layer, "base_layer")}
    assert peft_active == {"c_attn": ["zz"], "c_fc": ["bb"]}                        # two adapters active at once
    assert trainable_names(ours) == {f"transformer.h.{i}.mlp.c_fc.lora_{f}.bb.weight" for i in (0, 1) for f in "AB"}
    lc.set_adapter(ours, ["zz", "bb"])
    torch.testing.assert_close(logits(ours, tokens), logits(theirs, tokens), rtol=0, atol=1e-6)


def test_adapter_verbs_refuse_what_peft_refuses_and_a_bit_more():
    ours, _ = two_adapters()
    with pytest.raises(ValueError, match="Adapter with name 'y' already exists"):
        lc.add_adapter(ours, "y", lc.LoraConfig(**CFG_Y))
    with pytest.raises(ValueError, match=r"^adapter_name='x\.y' is not allowed"):
        lc.add_adapter(ours, "x.y", lc.LoraConfig(**CFG_Y))
    with pytest.raises(ValueError, match="Adapter c not found"):
        lc.set_adapter(ours, ["x", "c"])
    with pytest.raises(ValueError, match="disable_lora"):
        lc.set_adapter(ours, [])
    with pytest.raises(ValueError, match="Adapter c does not exist"):
        lc.delete_adapter(ours, "c")
    lc.merge_lora(ours)
    with pytest.raises(ValueError, match=r"Cannot delete adapter\(s\) \['x'\] while they are merged"):
        lc.delete_adapter(ours, "x")
    with pytest.warns(UserWarning, match="Adapter cannot be set when the model is merged. Unmerging the model first"):
        lc.set_adapter(ours, "y")
    assert not any(layer.merged for _, layer in lc.lora_layers(ours))
    lc.delete_adapter(ours, "x")
    with pytest.raises(ValueError, match="only adapter: remove_lora"):
        lc.delete_adapter(ours, "y")
    with pytest.raises(ValueError, match="the first one comes from inject_lora"):
        lc.add_adapter(tiny_gpt2(), "y", lc.LoraConfig(**CFG_Y))


@pytest.mark.parametrize("cfg,why", [
    (dict(bias="all"), "supports only 1 adapter with bias"),
    (dict(modules_to_save=["c_attn"]), "has LoRA already"),
    (dict(init_lora_weights="pissa"), "replace the base weight"),
    (dict(target_modules=["nothing"]), "matches no module"),
    (dict(r=64), "r=64 is too large"),
], ids=["second_bias", "save_a_lora_layer", "pissa", "no_target", "rank"])
def test_an_adapter_that_cannot_be_added_changes_nothing(cfg, why, tokens):
    ours = tiny_gpt2()
    lc.inject_lora(ours, lc.LoraConfig(**CFG_X, bias="lora_only"))
    before = {k: v.clone() for k, v in ours.state_dict().items()}
    modules, trainable, out = [n for n, _ in ours.named_modules()], trainable_names(ours), logits(ours, tokens)
    with pytest.raises(ValueError, match=why):
        lc.add_adapter(ours, "y", lc.LoraConfig(**(CFG_Y | cfg)))
    assert [n for n, _ in ours.named_modules()] == modules and list(ours.lora_configs) == ["default"]
    assert ours.state_dict().keys() == before.keys() and all(torch.equal(v, before[k]) for k, v in
                                                              ours.state_dict().items())
    assert trainable_names(ours) == trainable and torch.equal(logits(ours, tokens), out)


def test_an_all_linear_adapter_on_an_adapted_llama_wraps_what_peft_wraps():
    first = dict(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    second = dict(r=2, lora_alpha=4, target_modules="all-linear", init_lora_weights=False)
    ours = tiny_llama()
    lc.inject_lora(ours, lc.LoraConfig(**first))
    lc.add_adapter(ours, "all", lc.LoraConfig(**second))
    theirs = get_peft_model(tiny_llama(), PeftLoraConfig(**first))
    theirs.add_adapter("all", PeftLoraConfig(**second))
    assert set(ours.state_dict()) == {k.removeprefix("base_model.model.") for k in theirs.state_dict()}
    assert not any(".lora_A.default.lora_" in k or ".base_layer.lora_" in k for k in ours.state_dict())  # not nested
    assert trainable_names(ours) == trainable_names(theirs)
    assert lc.adapter_state_dict(ours, "all").keys() == get_peft_model_state_dict(theirs, adapter_name="all").keys()


def test_the_fused_paths_follow_the_one_active_adapter_and_step_aside_for_two():
    from lora_core import fused

    ours, _ = two_adapters(torch.float64)  # float64: the paths agree to 1e-12, so a swapped adapter would show
    layer = ours.transformer.h[0].attn.c_attn
    x = torch.randn(4, 32, 32, generator=torch.Generator().manual_seed(3), dtype=torch.float64, requires_grad=True)
    for active in ("x", "y"):
        lc.set_adapter(ours, active)
        ours.zero_grad(set_to_none=True)
        outs = {}
        for path in ("one-node", "addmm", "plain"):
            layer.forward_path = path
            a = layer.adapter(active)
            for p in (x, a.A, a.B):
                p.grad = None
            y = layer(x)
            y.square().sum().backward()
            outs[path] = (y.detach(), x.grad.clone(), a.A.grad.clone(), a.B.grad.clone())
            if path == "one-node":
                assert type(y.grad_fn).__name__ == "FusedLoraLinearBackward"
        for path in ("one-node", "addmm"):
            for got, want in zip(outs[path], outs["plain"], strict=True):
                torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
        assert layer.adapter("x" if active == "y" else "y").A.grad is None        # the inactive adapter: no gradient
    lc.set_adapter(ours, ["x", "y"])
    layer.forward_path = "one-node"
    assert fused.forward(layer, x) is None                                        # two active: the plain formula


def test_adding_an_adapter_leaves_every_other_parameter_s_trainability_as_it_was():
    """As PEFT: frozen A's (LoRA-FA) stay frozen and a trainable bias stays trainable when an adapter is added."""
    first = dict(CFG_X, bias="lora_only")
    ours = tiny_gpt2()
    lc.inject_lora(ours, lc.LoraConfig(**first), adapter_name="x")
    theirs = get_peft_model(tiny_gpt2(), PeftLoraConfig(**first), adapter_name="x")
    for model in (ours, theirs):
        for name, p in model.named_parameters():
            if ".lora_A." in name:
                p.requires_grad_(False)
    before = trainable_names(ours)
    assert before == trainable_names(theirs) and any(n.endswith("c_attn.base_layer.bias") for n in before)
    lc.add_adapter(ours, "y", lc.LoraConfig(**CFG_Y))
    theirs.add_adapter("y", PeftLoraConfig(**CFG_Y))
    assert trainable_names(ours) == trainable_names(theirs) == before
