"""Inputs a workshop room sends that used to escape as raw exceptions (issue 11, items 3-6 and two of 12).

Each now gets a ValueError naming the field, the value and what is allowed, before anything changes:
modules_to_save that saves a module inside another (PEFT accepts it, but its inner copy never runs) or
hides every target; an adapter whose finite values would overflow ΔW; lora_alpha = 1e300; a JSONL line
with a lone surrogate or the wrong keys; an empty target list. Where PEFT accepts an overlap cleanly, the
oracle tests pin that we build exactly what PEFT builds.
"""

from __future__ import annotations

import json
import math
import re

import pytest
import torch
from conftest import tiny_gpt2, tiny_llama
from peft import LoraConfig as PeftLoraConfig
from peft import get_peft_model
from peft.utils import get_peft_model_state_dict
from safetensors.torch import load as load_st
from safetensors.torch import save as save_st
from test_adapter_upload import CONFIG, WEIGHTS, make_zip, members, trained
from test_peft_oracle_heads import build_pair

import lora_core as lc
from lora_core import serve
from lora_core.config import MAX_LORA_ALPHA
from lora_core.inject import ModulesToSaveWrapper
from lora_core.peft_io import check_adapter_values, value_bound
from lora_core.serve.settings import Settings
from lora_core.training import run_setup
from lora_core.training.data import load_jsonl
from lora_core.training.run_setup import RunRequest

LIMIT = 10_000_000
F32_MAX = torch.finfo(torch.float32).max
def untouched(model: torch.nn.Module) -> bool:
    return not lc.lora_layers(model) and not hasattr(model, "lora_configs") and not any(
        isinstance(m, ModulesToSaveWrapper) for m in model.modules())


# --- 3. modules_to_save around or inside a LoRA target ----------------------------------------------------------
# PEFT 0.21 accepts a saved module that contains a target: the target inside gets no LoRA.
OVERLAP_CASES = {
    "llama-q_gate-saved_self_attn": (tiny_llama, dict(r=4, lora_alpha=8, target_modules=["q_proj", "gate_proj"],
                                                      modules_to_save=["self_attn"])),
    "gpt2-c_attn_c_fc-saved_mlp": (tiny_gpt2, dict(r=4, lora_alpha=8, target_modules=["c_attn", "c_fc"],
                                                   modules_to_save=["mlp"])),
}


@pytest.mark.parametrize("make,kw", OVERLAP_CASES.values(), ids=OVERLAP_CASES.keys())
def test_a_saved_module_around_a_target_builds_what_peft_builds(make, kw, tokens):
    ours, theirs = build_pair(make, kw)
    assert lc.trainable_parameters(ours) == theirs.get_nb_trainable_parameters()
    lora = sorted(n.removeprefix("base_model.model.") for n, m in theirs.named_modules()
                  if hasattr(m, "lora_A") and hasattr(m, "base_layer"))
    saved = sorted(n.removeprefix("base_model.model.") for n, m in theirs.named_modules()
                   if type(m).__name__ == "ModulesToSaveWrapper")
    assert sorted(n for n, _ in lc.lora_layers(ours)) == lora and lora
    assert sorted(n for n, m in ours.named_modules() if isinstance(m, ModulesToSaveWrapper)) == saved and saved
    assert set(lc.adapter_state_dict(ours)) == set(get_peft_model_state_dict(theirs))
    with torch.no_grad():
        torch.testing.assert_close(ours(tokens).logits, theirs(tokens).logits, rtol=1e-5, atol=1e-5)
    assert lc.count_lora_parameters(make().config, lc.LoraConfig(**kw)).trainable == \
        theirs.get_nb_trainable_parameters()[0]


def test_peft_accepts_nested_modules_to_save_but_never_runs_the_inner_copy(tokens):
    """Why we refuse it: PEFT hangs the inner copy on the outer wrapper, outside the forward, and saves the two
    copies of q_proj under one key of the adapter file."""
    kw = dict(r=4, target_modules=["gate_proj"], modules_to_save=["self_attn", "q_proj"])
    theirs = get_peft_model(tiny_llama(), PeftLoraConfig(**kw))
    theirs(tokens).logits.sum().backward()
    inner = theirs.base_model.model.model.layers[0].self_attn.q_proj  # the wrapper's own child, not its copy's
    assert type(inner).__name__ == "ModulesToSaveWrapper"
    trained_copy = inner.modules_to_save["default"].weight
    assert trained_copy.requires_grad and trained_copy.grad is None
    keys = list(get_peft_model_state_dict(theirs))
    assert keys.count("base_model.model.model.layers.0.self_attn.q_proj.weight") == 1


def test_nested_modules_to_save_is_a_value_error_before_anything_changes():
    model = tiny_llama()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    cfg = lc.LoraConfig(r=4, target_modules=["gate_proj"], modules_to_save=["self_attn", "q_proj"])
    with pytest.raises(ValueError, match=r"modules_to_save=\['self_attn', 'q_proj'\] saves 'model\.layers\.0\."
                                         r"self_attn' .* and also 'model\.layers\.0\.self_attn\.q_proj' inside it"
                                         r".*saved in full only once"):
        lc.inject_lora(model, cfg)
    assert untouched(model) and all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    with pytest.raises(ValueError, match="saved in full only once"):
        lc.count_lora_parameters(tiny_llama().config, cfg)


def test_a_name_that_also_ends_an_inner_module_is_refused_on_distilgpt2():
    # 'attn' matches both transformer.h.0.attn and transformer.h.0.attn.c_attn, as PEFT's endswith does
    with pytest.raises(ValueError, match=r"saves 'transformer\.h\.0\.attn' \(matched by 'attn'\) and also "
                                         r"'transformer\.h\.0\.attn\.c_attn' inside it \(matched by 'attn'"):
        lc.count_lora_parameters("distilgpt2", lc.LoraConfig(target_modules=["c_fc"], modules_to_save=["attn"]))


def test_targets_all_inside_saved_modules_say_so_as_peft_refuses_them():
    with pytest.raises(Exception, match="only targeted modules that are marked to be saved"):
        get_peft_model(tiny_gpt2(), PeftLoraConfig(target_modules=["c_attn"], modules_to_save=["attn"]))
    with pytest.raises(ValueError, match=r"target_modules=None matches only modules inside modules_to_save="
                                         r"\['attn'\] \(e\.g\. 'transformer\.h\.0\.attn\.c_attn'\)"):
        lc.count_lora_parameters("distilgpt2", lc.LoraConfig(modules_to_save=["attn"]))
    model = tiny_llama()
    with pytest.raises(ValueError, match=r"matches only modules inside modules_to_save=\['self_attn'\]"):
        lc.inject_lora(model, lc.LoraConfig(target_modules=["q_proj"], modules_to_save=["self_attn"]))
    assert untouched(model)


# --- 4. finite but huge adapter values ----------------------------------------------------------------------------
@pytest.fixture
def good() -> dict[str, bytes]:
    return members(lc.adapter_zip(trained(tiny_gpt2, r=4, lora_alpha=8, target_modules=["c_attn"])))


def scaled(good: dict[str, bytes], factor: str, by: float) -> bytes:
    tensors = load_st(good[WEIGHTS])
    for key in tensors:
        if f"h.0.attn.c_attn.{factor}." in key:
            tensors[key] = tensors[key] * by
    return make_zip({CONFIG: good[CONFIG], WEIGHTS: save_st(tensors)})


@pytest.mark.parametrize("factor", ["lora_A", "lora_B"])
def test_an_upload_with_huge_finite_factors_is_refused_naming_tensor_value_and_bound(good, factor):
    model = tiny_gpt2()
    bound = math.sqrt(F32_MAX / (2.0 * 4))  # scaling 8 / 4 = 2, r = 4
    with pytest.raises(ValueError, match=rf"adapter tensor 'base_model\.model\.transformer\.h\.0\.attn\.c_attn\."
                                         rf"{factor}\.weight' holds a value of size \S+e\+(2[89]|30), over the bound "
                                         rf"{re.escape(f'{bound:.3g}')}: with r=4 and scaling=2, "
                                         r"ΔW = scaling · B @ A could overflow torch\.float32"):
        serve.load_adapter_zip(model, scaled(good, factor, 1e30), LIMIT)
    assert untouched(model)
    serve.load_adapter_zip(model, scaled(good, factor, 1e3), LIMIT)  # large, but ΔW stays finite: allowed


def test_a_huge_adapter_folder_is_refused_and_the_model_left_as_it_was(good, tmp_path):
    (tmp_path / CONFIG).write_bytes(good[CONFIG])
    tensors = load_st(good[WEIGHTS])
    key = next(k for k in tensors if k.endswith("lora_B.weight"))
    tensors[key] = tensors[key] * 1e30
    (tmp_path / WEIGHTS).write_bytes(save_st(tensors))
    model = tiny_gpt2()
    with pytest.raises(ValueError, match=rf"adapter tensor '{key}' holds a value of size"):
        lc.load_adapter(model, tmp_path)
    assert untouched(model)


def test_the_value_bound_keeps_delta_w_finite_in_the_model_dtype():
    cfg = lc.LoraConfig(r=4, lora_alpha=8)
    assert value_bound("x.lora_A.weight", cfg, torch.float32) == math.sqrt(F32_MAX / 8)
    assert value_bound("x.lora_embedding_B", cfg, torch.float16) == math.sqrt(65504 / 8)
    assert value_bound("x.modules_to_save.weight", cfg, torch.bfloat16) == torch.finfo(torch.bfloat16).max
    at_bound = torch.full((4, 4), value_bound("x.lora_A.weight", cfg, torch.float32))
    assert torch.isfinite((at_bound @ at_bound) * cfg.scaling).all()  # r terms of bound² times scaling: finite
    half = tiny_gpt2().half()
    with pytest.raises(ValueError, match=r"holds a value of size 7e\+04, over the bound 6\.55e\+04: torch\.float16, "
                                         r"this model's dtype, cannot hold it"):
        check_adapter_values(half, cfg, {"base_model.model.lm_head.weight": torch.full((2,), 7e4)})


def test_adapter_report_never_raises_a_linalg_error_on_finite_factors():
    model = trained(tiny_gpt2, r=4, lora_alpha=8, target_modules=["c_attn"])
    plain = lc.spectrum.adapter_report(model)
    layer = lc.lora_layers(model)[0][1]
    with torch.no_grad():
        layer.adapter().A.mul_(1e30)   # QR's column norms would square to 1e60: inf in float32
    huge = lc.spectrum.adapter_report(model)
    torch.testing.assert_close(huge[0]["singular_values"].double(), plain[0]["singular_values"].double() * 1e30,
                               rtol=1e-5, atol=0)
    assert math.isfinite(huge[0]["delta_norm"]) and huge[0]["weight_norm"] == plain[0]["weight_norm"]
    assert torch.equal(huge[1]["singular_values"], plain[1]["singular_values"])  # the other layer as it was
    with torch.no_grad():
        layer.adapter().B.mul_(1e30)   # finite factors, but σ(ΔW) ≈ 1e60 is beyond float32
    with pytest.raises(ValueError, match=r"LoRA layer 'transformer\.h\.0\.attn\.c_attn': σ\(ΔW\) reaches .* beyond "
                                         r"float32's largest number"):
        lc.spectrum.adapter_report(model)
    with torch.no_grad():
        layer.adapter().B.fill_(float("nan"))
    with pytest.raises(ValueError, match=r"LoRA layer 'transformer\.h\.0\.attn\.c_attn': lora_B holds NaN or inf"):
        lc.spectrum.adapter_report(model)


def test_factor_singular_values_are_scale_free_and_bit_exact_for_ordinary_factors():
    gen = torch.Generator().manual_seed(0)
    B, A = torch.randn(48, 4, generator=gen), torch.randn(4, 32, generator=gen)
    reference = torch.linalg.svdvals(B.double() @ A.double())[:4]
    # (1e20, 1e20) at scaling 1e-6: σ(ΔW) ~ 1e34 fits float32, but R_B R_Aᵀ ~ 1e40 did not
    for b, a, scaling in [(1e30, 1.0, 0.5), (1.0, 1e-30, 0.5), (1e18, 1e18, 0.5), (3.0, 0.25, 0.5), (1e20, 1e20, 1e-6)]:
        got = lc.factor_singular_values(B * b, A * a, scaling)
        torch.testing.assert_close(got.double(), reference * b * a * scaling, rtol=1e-5, atol=0)
    assert torch.equal(lc.factor_singular_values(B * 8, A / 4, 0.5), lc.factor_singular_values(B * 2, A, 0.5))
    phi = lc.subspace_similarity(A * 1e30, A)
    torch.testing.assert_close(phi.diagonal(), torch.ones(4), rtol=1e-4, atol=1e-4)


# --- 5. lora_alpha far out of range ------------------------------------------------------------------------------
def test_lora_alpha_is_bounded_with_a_message_naming_the_range():
    assert lc.LoraConfig(r=1, lora_alpha=MAX_LORA_ALPHA).scaling == 1e6
    for alpha in (1e300, MAX_LORA_ALPHA * 1.000001, -8.0):
        with pytest.raises(ValueError, match=re.escape(f"lora_alpha={alpha!r} is not allowed: alpha must be a "
                                                       "positive number, at most 1,000,000")):
            lc.LoraConfig(lora_alpha=alpha)


def test_the_fine_tuning_plan_refuses_a_huge_alpha():
    with pytest.raises(ValueError, match=r"lora_alpha=1e\+300 is not allowed"):
        run_setup.plan_run(RunRequest("distilgpt2-random", lora_alpha=1e300), Settings())


def test_an_uploaded_config_with_a_huge_alpha_is_refused(good):
    config = json.loads(good[CONFIG]) | {"lora_alpha": 1e300}
    model = tiny_gpt2()
    with pytest.raises(ValueError, match=r"lora_alpha=1e\+300 is not allowed: alpha must be a positive number"):
        serve.load_adapter_zip(model, make_zip({CONFIG: json.dumps(config).encode(), WEIGHTS: good[WEIGHTS]}), LIMIT)
    assert untouched(model)


# --- 6. and 12. JSONL: lone surrogates, wrong keys -----------------------------------------------------------
def test_a_lone_surrogate_is_refused_naming_line_and_field():
    raw = b'{"prompt": "a", "completion": "b"}\n{"prompt": "ok", "completion": "x\\ud800y"}\n'
    assert json.loads(raw.splitlines()[1])["completion"] == "x\ud800y"  # valid JSON: json.loads accepts it
    with pytest.raises(ValueError, match=r"uploaded file line 2: field 'completion' holds a lone surrogate "
                                         r"'\\ud800' at character 2"):
        load_jsonl(raw)
    with pytest.raises(TypeError):  # what the tokenizer met on Start
        lc.models.gpt2_tokenizer()("x\ud800y")
    assert load_jsonl(b'{"prompt": "a \\ud83d\\ude00", "completion": "b"}') == [("a \U0001F600", "b")]


def test_wrong_keys_say_missing_and_list_the_keys_found():
    with pytest.raises(ValueError, match=r"line 1: field 'prompt' is missing \(the line has keys \['question', "
                                         r"'answer'\]\); each line needs 'prompt' and 'completion'"):
        load_jsonl(b'{"question": "a", "answer": "b"}')
    with pytest.raises(ValueError, match=r"line 1: field 'completion' is None; it must be a non-empty string"):
        load_jsonl(b'{"prompt": "a", "completion": null}')
    many = json.dumps({f"k{i}": i for i in range(50)}).encode()
    with pytest.raises(ValueError, match=r"keys \['k0', .*'k9', \.\.\.\]"):
        load_jsonl(many)


def test_an_empty_target_list_suggests_no_one_model():
    with pytest.raises(ValueError, match=r"target_modules=\[\] is not allowed: give at least one module name, "
                                         r"e\.g\. \['q_proj', 'v_proj'\] \(Llama\) or \['c_attn'\] \(GPT-2\)"):
        lc.LoraConfig(target_modules=[])
