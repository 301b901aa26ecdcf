"""The parameter ledger: PEFT's numbers on shipped configs, built on the meta device."""

import time

import pytest
import torch
from peft import LoraConfig as PeftLoraConfig
from peft import get_peft_model

import lora_core as lc


def test_distilgpt2_c_attn_r8_is_147456_of_82060032():
    ledger = lc.count_lora_parameters("distilgpt2", lc.LoraConfig(r=8, lora_alpha=16, target_modules=["c_attn"]))
    assert (ledger.trainable, ledger.total) == (147_456, 82_060_032)
    assert str(ledger).splitlines()[-1] == \
        "trainable params: 147,456 || all params: 82,060,032 || trainable%: 0.1797"
    (row,) = ledger.rows
    assert (row.in_features, row.out_features, row.count, row.lora_per_module) == (768, 2304, 6, 24_576)
    assert ledger.base_total == 81_912_576


def test_r16_doubles_it():
    ledger = lc.count_lora_parameters("distilgpt2", lc.LoraConfig(r=16, target_modules=["c_attn"]))
    assert ledger.trainable == 294_912


def test_square_768_matrix_at_r8_is_12288():
    ledger = lc.count_lora_parameters("distilgpt2", lc.LoraConfig(r=8, target_modules=r".*attn\.c_proj"))
    (row,) = ledger.rows
    assert (row.in_features, row.out_features) == (768, 768)
    assert row.lora_per_module == 12_288
    assert row.lora_per_module / row.weight_params == pytest.approx(0.0208, abs=1e-4)


def test_llama2_7b_q_v_r64_in_milliseconds():
    t0 = time.perf_counter()
    ledger = lc.count_lora_parameters("Llama-2-7b", lc.LoraConfig(r=64, lora_alpha=16,
                                                                  target_modules=["q_proj", "v_proj"]))
    seconds = time.perf_counter() - t0
    print(f"Llama-2-7b ledger built in {seconds * 1000:.0f} ms")
    assert ledger.trainable == 33_554_432
    assert ledger.base_total == 6_738_415_616


def test_bias_modes_and_modules_to_save():
    none = lc.count_lora_parameters("distilgpt2", lc.LoraConfig(target_modules=["c_attn"]))
    only = lc.count_lora_parameters("distilgpt2", lc.LoraConfig(target_modules=["c_attn"], bias="lora_only"))
    every = lc.count_lora_parameters("distilgpt2", lc.LoraConfig(target_modules=["c_attn"], bias="all"))
    assert only.trainable - none.trainable == 6 * 2304               # the c_attn biases
    assert every.other_trainable > only.other_trainable
    saved = lc.count_lora_parameters("distilgpt2", lc.LoraConfig(target_modules=["c_attn"],
                                                                 modules_to_save=["lm_head"]))
    assert saved.other_trainable == 50257 * 768                      # a trainable copy of the tied head
    assert saved.total == none.total + 50257 * 768


@pytest.mark.parametrize("targets", [["c_attn"], ["c_attn", "c_proj", "c_fc"], "all-linear"],
                         ids=["c_attn", "c_attn-c_proj-c_fc", "all-linear"])
def test_ledger_matches_peft_on_random_distilgpt2_shapes(targets):
    model = lc.build_on_meta("distilgpt2")
    theirs = get_peft_model(model, PeftLoraConfig(r=8, target_modules=targets))
    ours = lc.count_lora_parameters("distilgpt2", lc.LoraConfig(r=8, target_modules=targets))
    assert (ours.trainable, ours.total) == theirs.get_nb_trainable_parameters()


def test_count_from_a_model_leaves_it_untouched():
    model = lc.build_on_meta("gpt2")
    ledger = lc.count_lora_parameters(model, lc.LoraConfig(r=8, target_modules=["c_attn"]))
    assert ledger.trainable == 12 * 8 * (768 + 2304)
    assert not lc.lora_layers(model)
    assert isinstance(next(model.parameters()), torch.Tensor)
