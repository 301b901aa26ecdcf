"""The memory estimator: each component against its stated formula, with the parameter counts
rebuilt here from the Llama-2-7b config numbers, plus the claims the page shows (rows 16 and 18)."""

import json
import time
from dataclasses import replace

import pytest

from lora_core.models.sources import CONFIG_DIR
from lora_core.quant import codebook, memory

LLAMA = json.loads((CONFIG_DIR / "Llama-2-7b.json").read_text())
H, F, L, V, A = (LLAMA[k] for k in ("hidden_size", "intermediate_size", "num_hidden_layers", "vocab_size",
                                    "num_attention_heads"))
LINEAR = L * (4 * H * H + 3 * H * F)             # q, k, v, o and gate, up, down in every layer
P = LINEAR + 2 * V * H + (2 * L + 1) * H          # + embeddings, lm_head (untied), RMSNorm weights
T_QV_64 = L * 2 * 64 * (H + H)                   # r·(in+out) on q_proj and v_proj in every layer


def seed(**kw) -> memory.MemoryEstimate:
    return memory.estimate_memory(replace(memory.SEED_002_QLORA, **kw))


def test_seed_002_counts_come_from_the_model():
    est = memory.estimate_memory(memory.SEED_002_QLORA)
    assert (est.base_params, est.quantized_params, est.trainable_params) == (P, LINEAR, T_QV_64)
    assert T_QV_64 == 33_554_432


def test_qlora_weights_are_nf4_plus_the_unquantized_rest_plus_fp32_adapters():
    est = seed()
    assert est.weights == LINEAR // 2 + (P - LINEAR) * 2 + T_QV_64 * 4
    assert est.quant_constants == LINEAR * 0.5 / 8                   # no double quantization in seed 002
    assert seed(double_quant=True).quant_constants == round(LINEAR * codebook.constant_bits_per_param(64, True) / 8)
    assert est.gradients == T_QV_64 * 4 and est.optimizer == T_QV_64 * 8


def test_activations_follow_korthikanti_plus_logits_and_lora_branches():
    s, b, r = 512, 4, 64
    layer = s * b * H * (34 + 5 * A * s / H)
    lora = 2 * L * s * b * r * 2                                      # A's output per branch, fp16
    assert seed(lora_dropout=0.0).activations == round(L * layer + s * b * V * 6 + lora)
    dropout = 2 * L * s * b * H * 3                                   # dropped input (fp16) + 1-byte mask
    assert seed().activations == round(L * layer + s * b * V * 6 + lora + dropout)
    flash = seed(lora_dropout=0.0, flash_attention=True).activations
    assert flash == round(L * s * b * H * 34 + s * b * V * 6 + lora)


def test_gradient_checkpointing_keeps_layer_inputs_and_one_layer():
    s, b = 512, 4
    est = seed(lora_dropout=0.0, gradient_checkpointing=True)
    one_layer = s * b * H * (34 + 5 * A * s / H)
    lora_share = 2 * s * b * 64 * 2                                   # one layer's two branches
    assert est.activations == round(L * s * b * H * 2 + one_layer + lora_share + s * b * V * 6)
    assert est.activations < seed(lora_dropout=0.0).activations / 5


def test_full_fine_tuning_bytes_per_parameter():
    full32 = seed(method="full", weight_dtype="fp32")
    assert (full32.weights, full32.gradients, full32.optimizer) == (4 * P, 4 * P, 8 * P)
    assert full32.trainable_params == P and full32.quant_constants == 0
    mixed = seed(method="full", weight_dtype="bf16", master_weights=True)
    assert mixed.weights + mixed.gradients + mixed.optimizer == 16 * P          # ZeRO's 2 + 2 + 12
    assert seed(method="full", weight_dtype="fp32", master_weights=True).optimizer == 8 * P  # already fp32
    assert seed(method="full", optimizer="sgd").optimizer == 0
    assert seed(method="full", optimizer="adamw-8bit").optimizer == round(P * (2 + 8 / 2048))


def test_bf16_halves_weights_gradients_and_activations_but_not_adam():  # CLAIMS row 18
    fp32, bf16 = seed(method="full", weight_dtype="fp32"), seed(method="full", weight_dtype="bf16")
    assert fp32.weights == 2 * bf16.weights and fp32.gradients == 2 * bf16.gradients
    assert fp32.optimizer == bf16.optimizer
    assert bf16.activations < fp32.activations
    assert bf16.total < fp32.total


def test_qlora_saves_through_the_4bit_base_and_lora_is_in_every_layer():  # CLAIMS row 16
    by = memory.compare_methods(memory.SEED_002_QLORA)
    lora, qlora, full = by["lora"], by["qlora"], by["full"]
    assert qlora.total < lora.total < full.total
    assert lora.layers_with_lora == qlora.layers_with_lora == lora.num_layers == L
    assert (lora.gradients, lora.optimizer) == (qlora.gradients, qlora.optimizer)
    assert lora.weights - qlora.weights == LINEAR * 2 - LINEAR // 2
    only_some = memory.estimate_memory(replace(memory.SEED_002_QLORA, target_modules=r".*\.(0|1)\.self_attn\.q_proj"))
    assert only_some.layers_with_lora == 2


def test_rank_changes_lora_but_not_full():
    r8, r64 = seed(method="lora", r=8), seed(method="lora", r=64)
    assert r64.trainable_params == 8 * r8.trainable_params
    assert r64.total > r8.total
    assert seed(method="full", r=8).total == seed(method="full", r=64).total


def test_records_add_up_and_carry_formulas():
    est = seed()
    rows = est.records()
    assert [r["component"] for r in rows] == [*memory.COMPONENTS, "total"]
    assert sum(r["bytes"] for r in rows[:-1]) == rows[-1]["bytes"] == est.total
    assert f"{T_QV_64:,}" in est.formulas["gradients"] and "NF4" in est.formulas["weights"]


def test_gpt2_counts_conv1d_as_quantizable_and_skips_the_tied_output():
    est = memory.estimate_memory(memory.MemoryConfig(model="distilgpt2", method="qlora", target_modules=["c_attn"]))
    h, n = 768, 6
    assert est.quantized_params == n * (h * 3 * h + h * h + 2 * h * 4 * h)
    assert est.base_params == 81_912_576


def test_warm_estimate_is_fast():
    memory.compare_methods(memory.SEED_002_QLORA)
    start = time.perf_counter()
    memory.compare_methods(replace(memory.SEED_002_QLORA, batch_size=8))
    assert time.perf_counter() - start < 0.05


@pytest.mark.parametrize(("kw", "field"), [
    ({"method": "half"}, "method"), ({"weight_dtype": "int8"}, "weight_dtype"), ({"optimizer": "adam"}, "optimizer"),
    ({"batch_size": 0}, "batch_size"), ({"seq_len": -1}, "seq_len"), ({"r": 0}, "r"),
    ({"lora_dropout": 1.0}, "lora_dropout"), ({"quant_block_size": 0}, "quant_block_size"),
    ({"target_modules": []}, "target_modules"),
], ids=["method=half", "weight_dtype=int8", "optimizer=adam", "batch_size=0", "seq_len=-1", "r=0", "lora_dropout=1.0",
        "quant_block_size=0", "target_modules=[]"])
def test_bad_config_names_the_field(kw, field):
    with pytest.raises(ValueError, match=rf"^{field}="):
        memory.MemoryConfig(**kw)


def test_unknown_model_and_unmatched_targets_name_the_field():
    with pytest.raises(ValueError, match=r"^model"):
        memory.estimate_memory(memory.MemoryConfig(model="Llama-9"))
    with pytest.raises(ValueError, match=r"^target_modules=\['nope'\]"):
        memory.estimate_memory(memory.MemoryConfig(target_modules=["nope"]))
