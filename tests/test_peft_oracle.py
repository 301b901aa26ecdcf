"""Oracle tests: lora_core against HF PEFT on the same weights (minGPT's test_huggingface_import idea).

Every comparison uses a non-zero B (init_lora_weights=False): with B = 0 a merge or logits test
proves nothing, because ΔW = 0.
"""

import copy

import pytest
import torch
from conftest import load_ours_into_peft, tiny_gpt2, tiny_llama
from peft import LoraConfig as PeftLoraConfig
from peft import PeftModel, get_peft_model
from peft.utils import get_peft_model_state_dict

import lora_core as lc

CASES = {  # id: (model, config)
    "gpt2-c_attn-r4": (tiny_gpt2, dict(r=4, lora_alpha=8, target_modules=["c_attn"])),
    "gpt2-attn_mlp-r2-rslora": (tiny_gpt2, dict(r=2, lora_alpha=16, target_modules=["c_attn", "c_proj", "c_fc"],
                                                use_rslora=True)),
    "gpt2-c_proj-bias_all": (tiny_gpt2, dict(r=4, lora_alpha=8, target_modules=["c_proj"], bias="all")),
    "gpt2-c_attn-bias_lora_only": (tiny_gpt2, dict(r=4, lora_alpha=8, target_modules=["c_attn"], bias="lora_only")),
    "gpt2-all_linear": (tiny_gpt2, dict(r=4, lora_alpha=8, target_modules="all-linear")),
    "gpt2-c_attn-embedding": (tiny_gpt2, dict(r=4, lora_alpha=8, target_modules=["c_attn", "wte"])),
    "gpt2-c_attn-saved_lm_head": (tiny_gpt2, dict(r=4, lora_alpha=8, target_modules=["c_attn"],
                                                  modules_to_save=["lm_head"])),
    "gpt2-c_fc-layer_1_only": (tiny_gpt2, dict(r=4, lora_alpha=8, target_modules=["c_fc"], layers_to_transform=[1])),
    "gpt2-regex-attn": (tiny_gpt2, dict(r=4, lora_alpha=8, target_modules=r".*\.attn\.c_(attn|proj)")),
    "llama-default_targets": (tiny_llama, dict(r=4, lora_alpha=16, target_modules=None)),
    "llama-all_linear-r8-bias_all": (tiny_llama, dict(r=8, lora_alpha=16, target_modules="all-linear", bias="all")),
    "llama-qkvo-saved_lm_head": (tiny_llama, dict(r=4, lora_alpha=4, modules_to_save=["lm_head"],
                                                  target_modules=["q_proj", "k_proj", "v_proj", "o_proj"])),
}
FILE_CASES = {k: CASES[k] for k in ("gpt2-attn_mlp-r2-rslora", "gpt2-c_attn-embedding", "gpt2-c_attn-saved_lm_head",
                                    "llama-all_linear-r8-bias_all")}


def build_pair(make, kw):
    """Our model and PEFT's, from the same base weights, with our random (non-zero) factors copied in.

    The factors and perturbations come from the global RNG (PEFT's draws), so the pair is built on a private
    copy of that stream seeded 0: the same numbers whatever ran before (the full suite once drew factors
    whose merged logits missed the 1e-5 check only in that order), and the caller's stream untouched.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        base = make()
        ours = copy.deepcopy(base)
        lc.inject_lora(ours, lc.LoraConfig(init_lora_weights=False, **kw))
        theirs = get_peft_model(copy.deepcopy(base), PeftLoraConfig(init_lora_weights=False, **kw))
        return load_ours_into_peft(ours, theirs)


@pytest.mark.parametrize("make,kw", CASES.values(), ids=CASES.keys())
def test_counts_match_peft(make, kw):
    ours, theirs = build_pair(make, kw)
    assert lc.trainable_parameters(ours) == theirs.get_nb_trainable_parameters()


@pytest.mark.parametrize("make,kw", CASES.values(), ids=CASES.keys())
def test_wrapped_modules_match_peft(make, kw):
    ours, theirs = build_pair(make, kw)
    peft_names = sorted(n.removeprefix("base_model.model.") for n, m in theirs.named_modules()
                        if hasattr(m, "lora_A") and hasattr(m, "base_layer"))
    assert sorted(n for n, _ in lc.lora_layers(ours)) == peft_names


@pytest.mark.parametrize("make,kw", CASES.values(), ids=CASES.keys())
def test_logits_match_peft_with_nonzero_b(make, kw, tokens):
    ours, theirs = build_pair(make, kw)
    assert any(float(layer.adapter().B.detach().abs().sum()) > 0 for _, layer in lc.lora_layers(ours))
    with torch.no_grad():
        ours_logits = ours(tokens).logits
        peft_logits = theirs(tokens).logits
        base_logits = make()(tokens).logits
    torch.testing.assert_close(ours_logits, peft_logits, rtol=1e-5, atol=1e-5)
    assert (ours_logits - base_logits).abs().max() > 1e-3  # the adapter really changes the output


@pytest.mark.parametrize("make,kw", CASES.values(), ids=CASES.keys())
def test_merged_matches_unmerged_and_peft_merged(make, kw, tokens):
    ours, theirs = build_pair(make, kw)
    with torch.no_grad():
        unmerged = ours(tokens).logits
        lc.merge_lora(ours)
        merged = ours(tokens).logits
        theirs = theirs.merge_and_unload()
        peft_merged = theirs(tokens).logits
    torch.testing.assert_close(merged, unmerged, rtol=1e-5, atol=1e-5)
    if "wte" in (kw["target_modules"] or []):
        # GPT-2 ties wte to lm_head. PEFT merges in place, so its lm_head silently picks up ΔWᵀ and the
        # merged model no longer equals the unmerged one (peft issue 2777). Ours merges out of place.
        assert (peft_merged - unmerged).abs().max() > 1e-2
    else:
        torch.testing.assert_close(merged, peft_merged, rtol=1e-5, atol=1e-5)
    for name, layer in lc.lora_layers(ours):
        peft_w = dict(theirs.named_parameters())[f"{name}.weight"]
        torch.testing.assert_close(layer.base_layer.weight, peft_w, rtol=1e-6, atol=1e-6)


def test_peft_adapter_loads_into_lora_core(tmp_path, tokens):
    kw = dict(r=4, lora_alpha=8, target_modules=["c_attn", "c_proj"], bias="lora_only")
    theirs = get_peft_model(tiny_gpt2(), PeftLoraConfig(init_lora_weights=False, **kw)).eval()
    theirs.save_pretrained(tmp_path)
    ours = lc.load_adapter(tiny_gpt2(), tmp_path).eval()
    with torch.no_grad():
        torch.testing.assert_close(ours(tokens).logits, theirs(tokens).logits, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("make,kw", FILE_CASES.values(), ids=FILE_CASES.keys())
def test_lora_core_adapter_loads_into_peft(make, kw, tmp_path, tokens):
    ours, _ = build_pair(make, kw)
    lc.save_adapter(ours, tmp_path)
    theirs = PeftModel.from_pretrained(make(), tmp_path).eval()
    with torch.no_grad():
        torch.testing.assert_close(ours(tokens).logits, theirs(tokens).logits, rtol=1e-5, atol=1e-5)


# --- the merged state: counts, state_dict keys, unmerge ------------------------------------------
def gpt2_two_layers() -> torch.nn.Module:
    """The issue's 2-layer GPT-2: c_attn at r=4 gives PEFT's 2,048 of 110,592 parameters."""
    return tiny_gpt2(n_embd=64, vocab_size=100)


MERGE_CASES = {
    "gpt2-c_attn-r4": (gpt2_two_layers, dict(r=4, lora_alpha=8, target_modules=["c_attn"])),
    "llama-q_v": (tiny_llama, dict(r=4, lora_alpha=16, target_modules=["q_proj", "v_proj"])),
    "gpt2-bias_all": (tiny_gpt2, dict(r=4, lora_alpha=8, target_modules=["c_proj"], bias="all")),
    "llama-saved_lm_head": (tiny_llama, dict(r=4, lora_alpha=4, target_modules=["q_proj", "o_proj"],
                                             modules_to_save=["lm_head"])),
    "llama-embedding": (tiny_llama, dict(r=4, lora_alpha=8, target_modules=["embed_tokens", "v_proj"])),
}


def peft_keys(theirs: torch.nn.Module) -> set[str]:
    """PEFT's state_dict keys without the PeftModel's prefix: ours must be exactly these."""
    return {k.removeprefix("base_model.model.") for k in theirs.state_dict()}


@pytest.mark.parametrize("make,kw", CASES.values(), ids=CASES.keys())
def test_state_dict_keys_modules_and_trainable_names_are_peft_s(make, kw):
    ours, theirs = build_pair(make, kw)
    assert set(ours.state_dict()) == peft_keys(theirs)
    assert {n for n, _ in ours.named_modules() if n} == {
        n.removeprefix("base_model.model.") for n, _ in theirs.named_modules() if n.startswith("base_model.model.")}
    trainable = {n for n, p in ours.named_parameters() if p.requires_grad}
    assert trainable == {n.removeprefix("base_model.model.") for n, p in theirs.named_parameters() if p.requires_grad}
    assert trainable and all(".default" in n or ".bias" in n for n in trainable)


@pytest.mark.parametrize("adapter_name", ["other", "default"])
def test_a_named_adapter_has_peft_s_keys_in_memory_and_in_the_file(adapter_name):
    kw = dict(r=4, lora_alpha=8, target_modules=["c_attn", "wte"], modules_to_save=["ln_f"], bias="lora_only")
    ours = tiny_gpt2()
    lc.inject_lora(ours, lc.LoraConfig(init_lora_weights=False, **kw), adapter_name=adapter_name)
    theirs = get_peft_model(tiny_gpt2(), PeftLoraConfig(init_lora_weights=False, **kw), adapter_name=adapter_name)
    assert set(ours.state_dict()) == peft_keys(theirs)
    assert any(f".lora_embedding_A.{adapter_name}" in k for k in ours.state_dict())
    assert set(lc.adapter_state_dict(ours)) == set(get_peft_model_state_dict(theirs, adapter_name=adapter_name))
    assert lc.adapter_config(ours, adapter_name) is lc.adapter_config(ours)
    assert [layer.active_adapters for _, layer in lc.lora_layers(ours)] == [[adapter_name]] * 3


@pytest.mark.parametrize("make,kw", MERGE_CASES.values(), ids=MERGE_CASES.keys())
def test_merged_state_counts_and_keys_match_peft(make, kw):
    ours, theirs = build_pair(make, kw)
    keys = set(ours.state_dict())
    assert keys == peft_keys(theirs)
    lc.merge_lora(ours)
    theirs.merge_adapter()                                     # PEFT keeps its LoRA modules, merged
    assert lc.trainable_parameters(ours) == theirs.get_nb_trainable_parameters()
    assert set(ours.state_dict()) == keys                      # no ..._unmerged_weight, nothing else new
    assert keys == peft_keys(theirs)
    lc.unmerge_lora(ours)
    theirs.unmerge_adapter()
    assert set(ours.state_dict()) == keys
    assert lc.trainable_parameters(ours) == theirs.get_nb_trainable_parameters()


def test_the_issues_two_layer_gpt2_counts_110592_merged_or_not():
    ours, theirs = build_pair(*MERGE_CASES["gpt2-c_attn-r4"])
    lc.merge_lora(ours)
    theirs.merge_adapter()
    assert lc.trainable_parameters(ours) == theirs.get_nb_trainable_parameters() == (2_048, 110_592)


def test_merged_tied_embedding_counts_the_untied_output_layer_once_more():
    # GPT-2 ties wte to lm_head. PEFT merges in place, so lm_head silently changes too (peft issue 2777);
    # ours merges out of place, so the merged model really holds two matrices: W + ΔW for wte, W for lm_head.
    ours, theirs = build_pair(tiny_gpt2, dict(r=4, lora_alpha=8, target_modules=["c_attn", "wte"]))
    before = lc.trainable_parameters(ours)
    assert before == theirs.get_nb_trainable_parameters()
    lc.merge_lora(ours)
    theirs.merge_adapter()
    trainable, total = lc.trainable_parameters(ours)
    peft_trainable, peft_total = theirs.get_nb_trainable_parameters()
    assert trainable == peft_trainable and total == peft_total + ours.lm_head.weight.numel()
    lc.unmerge_lora(ours)
    assert lc.trainable_parameters(ours) == before                # the tie is back: lm_head is wte again
    assert ours.lm_head.weight is ours.transformer.wte.base_layer.weight


@pytest.mark.parametrize("make,kw", MERGE_CASES.values(), ids=MERGE_CASES.keys())
def test_unmerge_is_bit_exact_and_never_writes_the_base(make, kw, tokens):
    ours, _ = build_pair(make, kw)
    weights = {n: (layer.base_layer.weight, layer.base_layer.weight.data_ptr(), layer.base_layer.weight.clone())
               for n, layer in lc.lora_layers(ours)}
    with torch.no_grad():
        unmerged = ours(tokens).logits
        lc.merge_lora(ours)
        for name, layer in lc.lora_layers(ours):
            w, ptr, copy_ = weights[name]
            assert layer.base_layer.weight is not w and not torch.equal(layer.base_layer.weight, copy_)  # ΔW ≠ 0
            assert torch.equal(w, copy_) and w.data_ptr() == ptr                       # W itself untouched
        torch.testing.assert_close(ours(tokens).logits, unmerged, rtol=1e-5, atol=1e-5)
        lc.unmerge_lora(ours)
        for name, layer in lc.lora_layers(ours):
            w, ptr, copy_ = weights[name]
            assert layer.base_layer.weight is w and torch.equal(w, copy_)              # the same Parameter back
        assert torch.equal(ours(tokens).logits, unmerged)


def test_merged_model_moves_with_to_and_still_unmerges(tokens):
    ours, _ = build_pair(tiny_llama, dict(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"]))
    originals = {n: layer.base_layer.weight.detach().clone() for n, layer in lc.lora_layers(ours)}
    keys = set(ours.state_dict())
    with torch.no_grad():
        expected = ours.double()(tokens).logits                  # the adapted model, in float64
        ours.float()
        lc.merge_lora(ours)
        ours.double()                                            # the kept W moves with the model
        lc.unmerge_lora(ours)
        for name, layer in lc.lora_layers(ours):
            w = layer.base_layer.weight
            assert isinstance(w, torch.nn.Parameter) and not w.requires_grad and w.dtype == torch.float64
            assert torch.equal(w, originals[name].double())
        torch.testing.assert_close(ours(tokens).logits, expected)
    assert set(ours.state_dict()) == keys


# --- randomness: without a generator, the very draws PEFT makes ------------------------------------
@pytest.mark.parametrize("make,kw", [
    (tiny_llama, dict(r=4, target_modules=["q_proj", "v_proj"])),
    (tiny_gpt2, dict(r=4, target_modules=["c_attn", "c_fc"])),
    (tiny_gpt2, dict(r=4, target_modules=["c_attn"], init_lora_weights=False)),
    (tiny_gpt2, dict(r=4, target_modules=["wte", "c_attn"], init_lora_weights="gaussian")),
], ids=["llama-kaiming", "gpt2-kaiming", "gpt2-random-b", "gpt2-embedding-gaussian"])
def test_without_a_generator_the_init_is_peft_s_draw_for_draw(make, kw):
    base = make()
    ours, theirs = copy.deepcopy(base), copy.deepcopy(base)
    torch.manual_seed(5)
    lc.inject_lora(ours, lc.LoraConfig(**kw))
    ours_next = torch.rand(1)
    torch.manual_seed(5)
    theirs = get_peft_model(theirs, PeftLoraConfig(**kw))
    assert torch.equal(ours_next, torch.rand(1))              # the global stream advanced by as much
    peft_tensors = get_peft_model_state_dict(theirs)
    ours_tensors = lc.adapter_state_dict(ours)
    assert sorted(ours_tensors) == sorted(peft_tensors)
    assert all(torch.equal(t, peft_tensors[k]) for k, t in ours_tensors.items())
