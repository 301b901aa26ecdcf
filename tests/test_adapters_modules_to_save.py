"""modules_to_save with several adapters: one copy of the module per adapter, against PEFT 0.21.

PEFT's ModulesToSaveWrapper (peft/utils/other.py) deep-copies the original module for every adapter that saves it;
the active adapter's copy runs and trains, the others are frozen, and two adapters holding copies of one module
cannot be active together. Each adapter's copy is perturbed differently (and loaded into PEFT's model), so a
wrong copy shows in the logits.
"""

import copy

import pytest
import torch
import torch.nn as nn
from conftest import tiny_gpt2, tiny_llama
from peft import LoraConfig as PeftLoraConfig
from peft import get_peft_model
from transformers import GPT2ForSequenceClassification

import lora_core as lc
from lora_core.mixed import BASE, mixed_batch

pytestmark = pytest.mark.filterwarnings("ignore:Adapter name:UserWarning")  # PEFT: "a" is inside its prefix "lora_"

CASES = {  # id: (make, a's targets, b's targets, how the head is saved)
    "gpt2-lm_head": (tiny_gpt2, ["c_attn"], ["c_attn", "c_fc"], dict(modules_to_save=["lm_head"])),
    "llama-lm_head": (tiny_llama, ["q_proj", "v_proj"], ["q_proj", "v_proj", "up_proj"],
                      dict(modules_to_save=["lm_head"])),
    "gpt2-seq_cls-score": (lambda: tiny_gpt2(head=GPT2ForSequenceClassification, pad_token_id=0, num_labels=2),
                           ["c_attn"], ["c_attn", "c_fc"], dict(task_type="SEQ_CLS")),
}


def build(case: str = "gpt2-lm_head", a_saves: bool = True, b_saves: bool = True, extra=(), saved=None):
    """Ours and PEFT's model with adapters a (active) and b, plus `extra` [(name, kw)]; the same non-zero factors
    and the same perturbed head copies, in eval mode. `saved` replaces the case's modules_to_save/task_type."""
    make, ta, tb, case_saved = CASES[case]
    saved = case_saved if saved is None else saved
    cfgs = {"a": dict(r=4, lora_alpha=8, target_modules=ta, **(saved if a_saves else {})),
            "b": dict(r=2, lora_alpha=16, use_rslora=True, target_modules=tb, **(saved if b_saves else {})),
            **dict(extra)}
    ours, theirs, g = make(), None, torch.Generator().manual_seed(0)
    for name, kw in cfgs.items():
        kw = dict(init_lora_weights=False, **kw)
        if theirs is None:
            lc.inject_lora(ours, lc.LoraConfig(**kw), generator=g, adapter_name=name)
            theirs = get_peft_model(make(), PeftLoraConfig(**copy.deepcopy(kw)), adapter_name=name)
        else:
            lc.add_adapter(ours, name, lc.LoraConfig(**kw), generator=g)
            theirs.add_adapter(name, PeftLoraConfig(**copy.deepcopy(kw)))
    with torch.no_grad():
        for name, p in ours.named_parameters():
            if ".modules_to_save." in name:
                p.add_(torch.randn(p.shape, generator=g) * 0.1)
    theirs.base_model.model.load_state_dict(ours.state_dict(), strict=True)
    return ours.eval(), theirs.eval()


def head_of(model: nn.Module) -> lc.ModulesToSaveWrapper:
    return next(m for m in model.modules() if isinstance(m, lc.ModulesToSaveWrapper))


def keys(model) -> set[str]:
    return {k.removeprefix("base_model.model.") for k in model.state_dict()}


def trainable_names(model) -> set[str]:
    return {n.removeprefix("base_model.model.") for n, p in model.named_parameters() if p.requires_grad}


def logits(model, tokens) -> torch.Tensor:
    with torch.no_grad():
        return model(tokens).logits


def plain(model: nn.Module) -> nn.Module:
    for _, layer in lc.lora_layers(model):
        if isinstance(layer, lc.LoraLinear):
            layer.forward_path = "plain"  # the CPU fast paths (fused.py) agree with the plain formula to rounding
    return model


def same_as_peft(ours, theirs, tokens) -> None:
    """PEFT's trainable parameters and, on the plain formula, PEFT's logits exactly."""
    assert trainable_names(ours) == trainable_names(theirs)
    assert lc.trainable_parameters(ours) == theirs.get_nb_trainable_parameters()
    assert torch.equal(logits(plain(ours), tokens), logits(theirs, tokens))


@pytest.mark.parametrize("case", CASES)
def test_each_adapter_gets_its_own_frozen_copy_with_peft_s_keys(case, tokens):
    ours, theirs = build(case)
    head = head_of(ours)
    assert keys(ours) == keys(theirs)
    assert list(head.modules_to_save) == ["a", "b"] and head.active_adapter == "a"
    copies = [*head.modules_to_save.values(), head.original_module]
    weights = [m.weight for m in copies]
    assert len({w.data_ptr() for w in weights}) == 3                          # three tensors, none shared
    assert all(not torch.equal(weights[i], weights[j]) for i, j in ((0, 1), (0, 2), (1, 2)))   # perturbed apart
    assert {n for n in trainable_names(ours) if "modules_to_save" in n or "original_module" in n} == {
        n for n in trainable_names(theirs) if "modules_to_save" in n or "original_module" in n} != set()
    assert all(".a." in n for n in trainable_names(ours))                    # b's copy is frozen, as its factors
    assert ours.lora_configs["b"].modules_to_save == list(theirs.peft_config["b"].modules_to_save)
    same_as_peft(ours, theirs, tokens)


@pytest.mark.parametrize("case", CASES)
def test_set_adapter_switches_the_copy_that_runs_and_trains_as_peft_s(case, tokens):
    ours, theirs = build(case)
    seen = []
    for active in ("b", "a", "b"):
        lc.set_adapter(ours, active)
        theirs.base_model.set_adapter(active)
        assert head_of(ours).active_adapter == active
        assert {n for n in trainable_names(ours) if "modules_to_save" in n} == {
            n for n in trainable_names(ours) if f"modules_to_save.{active}." in n} != set()
        same_as_peft(ours, theirs, tokens)
        seen.append(logits(ours, tokens))
    assert (seen[0] - seen[1]).abs().max() > 1e-3 and torch.equal(seen[0], seen[2])
    lc.set_adapter(ours, "a", inference_mode=True)
    theirs.base_model.set_adapter("a", inference_mode=True)
    assert trainable_names(ours) == trainable_names(theirs) == set()


def test_two_active_adapters_with_copies_of_one_module_are_refused_as_in_peft(tokens):
    ours, theirs = build()
    before, trainable = logits(ours, tokens), trainable_names(ours)
    with pytest.raises(ValueError, match=r"\['a', 'b'\] each have their own copy of 'lm_head' \(modules_to_save\)"):
        lc.set_adapter(ours, ["a", "b"])
    with pytest.raises(ValueError, match="Only one adapter can be set at a time"):
        theirs.base_model.set_adapter(["a", "b"])
    assert lc.active_adapters(ours) == ["a"] and head_of(ours).active_adapter == "a"
    assert trainable_names(ours) == trainable and torch.equal(logits(ours, tokens), before)


def test_an_active_adapter_without_a_copy_runs_the_original_or_the_other_active_adapter_s_copy(tokens):
    ours, theirs = build(extra=[("c", dict(r=2, lora_alpha=4, target_modules=["c_fc"]))])
    assert list(head_of(ours).modules_to_save) == ["a", "b"]
    for active in (["c"], ["c", "b"], ["a", "c"]):
        lc.set_adapter(ours, active)
        theirs.base_model.set_adapter(active)
        held = [n for n in active if n != "c"]
        assert head_of(ours).active_adapter == (held[0] if held else None)
        same_as_peft(ours, theirs, tokens)


def test_an_added_adapter_that_saves_a_new_module_gets_an_inactive_wrapper(tokens):
    ours, theirs = build(a_saves=False)
    head = head_of(ours)
    assert head.active_adapter is None and list(head.modules_to_save) == ["b"]
    assert keys(ours) == keys(theirs)
    same_as_peft(ours, theirs, tokens)                                        # the original lm_head runs
    lc.set_adapter(ours, "b")
    theirs.base_model.set_adapter("b")
    assert "lm_head.modules_to_save.b.weight" in trainable_names(ours)
    same_as_peft(ours, theirs, tokens)


def test_deleting_an_adapter_deletes_its_copy_as_peft_does(tokens):
    ours, theirs = build()
    lc.set_adapter(ours, "b")
    theirs.base_model.set_adapter("b")
    lc.delete_adapter(ours, "a")
    theirs.delete_adapter("a")
    assert keys(ours) == keys(theirs) and list(head_of(ours).modules_to_save) == ["b"]
    same_as_peft(ours, theirs, tokens)
    ours, theirs = build()
    with pytest.warns(UserWarning, match="Adapter a was active which is now deleted. Setting active adapter to b"):
        lc.delete_adapter(ours, "a")
    with pytest.warns(UserWarning, match="Adapter a was active"):
        theirs.delete_adapter("a")
    assert head_of(ours).active_adapter == "b" and keys(ours) == keys(theirs)
    same_as_peft(ours, theirs, tokens)


# --- mixed batches --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("case", CASES)
def test_mixed_batch_rows_use_their_adapter_s_copy(case):
    """Rows equal PEFT's, and each equals its own run. Bit for bit, except behind GPT-2's 2-wide score head:
    there the CPU GEMM rounds a (12, 32) @ (32, 2) product (one row) differently from a (24, 32) one (a's two
    rows), so that case is compared to 1e-6."""
    ours, theirs = build(case)
    batch = torch.randint(0, 64, (4, 12), generator=torch.Generator().manual_seed(1))
    names = ["a", BASE, "b", "a"]
    with mixed_batch(plain(ours), names):
        mixed = logits(ours, batch)
    with torch.no_grad():
        assert torch.equal(mixed, theirs(batch, adapter_names=names).logits)
    for i, name in enumerate(names):
        with torch.no_grad():
            if name == BASE:
                with lc.disable_lora(ours):
                    alone = logits(ours, batch[i:i + 1])[0]
            else:
                lc.set_adapter(ours, name)
                alone = logits(ours, batch[i:i + 1])[0]
        if case == "gpt2-seq_cls-score":
            torch.testing.assert_close(mixed[i], alone, rtol=0, atol=1e-6)
        else:
            assert torch.equal(mixed[i], alone), (i, name)
        lc.set_adapter(ours, "b" if name == "a" else "a")
        assert (logits(ours, batch[i:i + 1])[0] - mixed[i]).abs().max() > 1e-4   # another adapter would show


def test_a_row_naming_an_adapter_without_a_copy_runs_the_original_where_peft_raises_key_error():
    ours, theirs = build(extra=[("c", dict(r=2, lora_alpha=4, target_modules=["c_fc"]))])
    batch = torch.randint(0, 64, (4, 12), generator=torch.Generator().manual_seed(1))
    names = ["a", "c", "b", BASE]
    with mixed_batch(plain(ours), names):
        mixed = logits(ours, batch)
    lc.set_adapter(ours, "c")                                                 # c's LoRA, the original lm_head
    assert torch.equal(mixed[1], logits(ours, batch[1:2])[0])
    lc.set_adapter(ours, "a")
    assert torch.equal(mixed[0], logits(ours, batch[0:1])[0])
    # PEFT 0.21: AuxiliaryTrainingWrapper._mixed_batch_forward sends c's rows to modules_to_save["c"]
    # (ModulesToSaveWrapper._forward_wrapped_mixed_batch, peft/utils/other.py), which does not exist.
    with pytest.raises(KeyError, match="'c'"), torch.no_grad():
        theirs(batch, adapter_names=names)


def test_a_saved_layer_norm_runs_a_one_adapter_batch_and_refuses_to_split_rows_where_peft_refuses_both(tokens):
    """PEFT splits rows only through Linear, Embedding and ConvNd copies and raises a TypeError for any other
    saved module in a mixed batch (other.py, `_mixed_batch_forward`), even when every row names one adapter.
    Ours refuses (ValueError) only a batch that would split such a module's rows."""
    ours, theirs = build(saved=dict(modules_to_save=["ln_f"]))             # GPT-2's final LayerNorm
    with pytest.raises(ValueError, match="split rows only for Linear, Embedding"), mixed_batch(ours, ["a", "b"]):
        ours(tokens)
    with mixed_batch(ours, ["b", "b"]):
        one_adapter = logits(plain(ours), tokens)
    lc.set_adapter(ours, "b")
    assert torch.equal(one_adapter, logits(ours, tokens))
    for names in (["a", "b"], ["b", "b"]):
        with pytest.raises(TypeError, match="Mixed batching is only supported for the following modules"):
            theirs(tokens, adapter_names=names)


def test_an_added_adapter_may_not_save_a_module_that_has_lora_where_peft_raises_type_error(tokens):
    ours, theirs = build(b_saves=False)
    before, modules = logits(ours, tokens), [n for n, _ in ours.named_modules()]
    cfg = dict(r=2, lora_alpha=4, target_modules=["c_fc"], modules_to_save=["c_attn"])
    with pytest.raises(ValueError, match=r"matches 'transformer.h.0.attn.c_attn', which has LoRA already"):
        lc.add_adapter(ours, "c", lc.LoraConfig(**cfg))
    assert [n for n, _ in ours.named_modules()] == modules and list(ours.lora_configs) == ["a", "b"]
    assert torch.equal(logits(ours, tokens), before)
    with pytest.raises(TypeError, match="modules_to_save cannot be applied to modules of type"):
        theirs.add_adapter("c", PeftLoraConfig(**cfg))


def test_bias_all_trains_the_copies_biases_not_the_original_s_and_an_added_copy_stays_frozen_where_peft_s_trains():
    """bias="all" with a saved ln_f: PEFT marks every bias, then its wrapper freezes the original module, so the
    original's bias stays frozen (ours too). Adding b, PEFT marks a's biases again before deep-copying the
    original for b (tuners_utils.py inject_adapter, `_mark_only_adapters_as_trainable` then
    `set_additional_trainable_modules`), so b's inactive copy keeps a trainable bias; ours is frozen."""
    make = CASES["gpt2-seq_cls-score"][0]
    a = dict(r=4, lora_alpha=8, target_modules=["c_attn"], init_lora_weights=False, bias="all",
             modules_to_save=["ln_f"])
    b = dict(r=2, lora_alpha=16, target_modules=["c_attn"], init_lora_weights=False, modules_to_save=["ln_f"])
    ours = make()
    lc.inject_lora(ours, lc.LoraConfig(**a), adapter_name="a")
    theirs = get_peft_model(make(), PeftLoraConfig(**copy.deepcopy(a)), adapter_name="a")
    assert trainable_names(ours) == trainable_names(theirs)
    assert "transformer.ln_f.original_module.bias" not in trainable_names(ours)
    assert lc.trainable_parameters(ours) == theirs.get_nb_trainable_parameters()
    lc.add_adapter(ours, "b", lc.LoraConfig(**b))
    theirs.add_adapter("b", PeftLoraConfig(**copy.deepcopy(b)))
    assert trainable_names(theirs) - trainable_names(ours) == {"transformer.ln_f.modules_to_save.b.bias"}
    assert trainable_names(ours) <= trainable_names(theirs)
