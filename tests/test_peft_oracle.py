"""Oracle tests: lora_core against HF PEFT on the same weights (minGPT's test_huggingface_import idea).

Every comparison uses a non-zero B (init_lora_weights=False): with B = 0 a merge or logits test
proves nothing, because ΔW = 0.
"""

import copy

import pytest
import torch
from conftest import tiny_gpt2, tiny_llama
from peft import LoraConfig as PeftLoraConfig
from peft import PeftModel, get_peft_model
from peft.utils import set_peft_model_state_dict

import lora_core as lc

CASES = [
    (tiny_gpt2, dict(r=4, lora_alpha=8, target_modules=["c_attn"])),
    (tiny_gpt2, dict(r=2, lora_alpha=16, target_modules=["c_attn", "c_proj", "c_fc"], use_rslora=True)),
    (tiny_gpt2, dict(r=4, lora_alpha=8, target_modules=["c_proj"], bias="all")),
    (tiny_gpt2, dict(r=4, lora_alpha=8, target_modules=["c_attn"], bias="lora_only")),
    (tiny_gpt2, dict(r=4, lora_alpha=8, target_modules="all-linear")),
    (tiny_gpt2, dict(r=4, lora_alpha=8, target_modules=["c_attn", "wte"])),
    (tiny_gpt2, dict(r=4, lora_alpha=8, target_modules=["c_attn"], modules_to_save=["lm_head"])),
    (tiny_gpt2, dict(r=4, lora_alpha=8, target_modules=["c_fc"], layers_to_transform=[1])),
    (tiny_gpt2, dict(r=4, lora_alpha=8, target_modules=r".*\.attn\.c_(attn|proj)")),
    (tiny_llama, dict(r=4, lora_alpha=16, target_modules=None)),
    (tiny_llama, dict(r=8, lora_alpha=16, target_modules="all-linear", bias="all")),
    (tiny_llama, dict(r=4, lora_alpha=4, target_modules=["q_proj", "k_proj", "v_proj", "o_proj"],
                      modules_to_save=["lm_head"])),
]
IDS = [f"{make.__name__}-{i}" for i, (make, _) in enumerate(CASES)]


def build_pair(make, kw):
    """Our model and PEFT's, from the same base weights, with our random (non-zero) factors copied in."""
    base = make()
    ours = copy.deepcopy(base)
    lc.inject_lora(ours, lc.LoraConfig(init_lora_weights=False, **kw))
    theirs = get_peft_model(copy.deepcopy(base), PeftLoraConfig(init_lora_weights=False, **kw))
    # Perturb the trainable biases / saved copies too, so they are compared, not just defaults.
    with torch.no_grad():
        for name, p in ours.named_parameters():
            if p.requires_grad and ".lora_" not in name:
                p.add_(torch.randn_like(p) * 0.1)
    result = set_peft_model_state_dict(theirs, lc.adapter_state_dict(ours))
    assert not result.unexpected_keys
    return ours.eval(), theirs.eval()


@pytest.mark.parametrize("make,kw", CASES, ids=IDS)
def test_counts_match_peft(make, kw):
    ours, theirs = build_pair(make, kw)
    assert lc.trainable_parameters(ours) == theirs.get_nb_trainable_parameters()


@pytest.mark.parametrize("make,kw", CASES, ids=IDS)
def test_wrapped_modules_match_peft(make, kw):
    ours, theirs = build_pair(make, kw)
    peft_names = sorted(n.removeprefix("base_model.model.") for n, m in theirs.named_modules()
                        if hasattr(m, "lora_A") and hasattr(m, "base_layer"))
    assert sorted(n for n, _ in lc.lora_layers(ours)) == peft_names


@pytest.mark.parametrize("make,kw", CASES, ids=IDS)
def test_logits_match_peft_with_nonzero_b(make, kw, tokens):
    ours, theirs = build_pair(make, kw)
    assert any(float(layer.lora_B.weight.detach().abs().sum()) > 0 for _, layer in lc.lora_layers(ours))
    with torch.no_grad():
        ours_logits = ours(tokens).logits
        peft_logits = theirs(tokens).logits
        base_logits = make()(tokens).logits
    torch.testing.assert_close(ours_logits, peft_logits, rtol=1e-5, atol=1e-5)
    assert (ours_logits - base_logits).abs().max() > 1e-3  # the adapter really changes the output


@pytest.mark.parametrize("make,kw", CASES, ids=IDS)
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


@pytest.mark.parametrize("make,kw", [CASES[1], CASES[5], CASES[6], CASES[10]], ids=["gpt2-rslora", "gpt2-embedding",
                                                                                  "gpt2-saved", "llama-bias"])
def test_lora_core_adapter_loads_into_peft(make, kw, tmp_path, tokens):
    ours, _ = build_pair(make, kw)
    lc.save_adapter(ours, tmp_path)
    theirs = PeftModel.from_pretrained(make(), tmp_path).eval()
    with torch.no_grad():
        torch.testing.assert_close(ours(tokens).logits, theirs(tokens).logits, rtol=1e-5, atol=1e-5)
