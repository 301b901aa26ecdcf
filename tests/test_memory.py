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


def test_seed_002_activations_are_the_sites_autograd_keeps():
    # fp16 compute, eager attention, LoRA dropout 0.1 on q_proj and v_proj, frozen NF4 base. Per layer: two
    # RMSNorm inputs upcast to fp32 (4 B), Q, K and V (2 B), the fp32 softmax and its fp16 cast, and the
    # SiLU input, SiLU output and up output; no projection input (all frozen). Each branch: its dropped fp32
    # copy of x plus a 1-byte mask, and A's fp32 output. Layer 0's first RMSNorm keeps nothing (no gradient
    # reaches it), and the final RMSNorm keeps its fp32 input: those two cancel.
    s, b, r = 512, 4, 64
    per_layer = 2 * H * 4 + 3 * H * 2 + A * s * (4 + 2) + 3 * F * 2
    branches = 2 * (H * (4 + 1) + r * 4)
    assert seed().activations == s * b * (L * (per_layer + branches) - H * 4 + H * 4 + V * (2 + 4))
    # Without dropout each branch still keeps its own fp32 copy of x: PEFT casts x to A's dtype first.
    assert seed(lora_dropout=0.0).activations == seed().activations - s * b * L * 2 * H * 1


def test_gradient_checkpointing_keeps_layer_inputs_and_one_layer():
    s, b, r = 512, 4, 64
    est = seed(gradient_checkpointing=True)
    one_layer = 2 * H * 4 + 3 * H * 2 + A * s * (4 + 2) + 3 * F * 2 + 2 * (H * 5 + r * 4)
    assert est.activations == s * b * (L * H * 2 + one_layer + H * 4 + V * 6)
    assert est.activations < seed().activations / 5


def test_full_fine_tuning_bytes_per_parameter():
    full32 = seed(method="full", weight_dtype="fp32")
    assert (full32.weights, full32.gradients, full32.optimizer) == (4 * P, 4 * P, 8 * P)
    assert full32.trainable_params == P and full32.quant_constants == 0
    for precision in memory.OPTIMIZER_PRECISIONS:  # fp32 weights: already the master copy, moments fp32 anyway
        assert seed(method="full", weight_dtype="fp32", optimizer_precision=precision).optimizer == 8 * P
    assert seed(method="full", optimizer="sgd").optimizer == 0
    assert seed(method="full", optimizer="adamw-8bit").optimizer == round(P * (2 + 8 / 2048))
    assert seed(method="full", weight_dtype="bf16", optimizer="sgd", optimizer_precision="mixed").optimizer == 4 * P


@pytest.mark.parametrize(("precision", "per_param", "moments"), [("param", 8, 4), ("fp32", 12, 8), ("mixed", 16, 12)])
def test_full_bf16_llama_bytes_per_parameter_follow_the_chosen_recipe(precision, per_param, moments):
    # torch.optim.AdamW: bf16 moments (2+2+2+2); the QLoRA paper: fp32 moments (2+2+8); ZeRO: + fp32 master (16).
    est = memory.estimate_memory(memory.MemoryConfig(model="Llama-2-7b", method="full", weight_dtype="bf16",
                                                     optimizer_precision=precision))
    assert est.weights + est.gradients + est.optimizer == per_param * P
    assert est.optimizer == moments * P and est.bytes_per_trainable_param == per_param
    assert memory.PRECISION_LABELS[precision].count(f"= {per_param} B/param") == 1


def test_adamw_moments_take_the_parameter_dtype_in_torch():
    torch = pytest.importorskip("torch")
    p = torch.nn.Parameter(torch.zeros(4, 4, dtype=torch.bfloat16))
    opt = torch.optim.AdamW([p])
    p.grad = torch.ones_like(p)
    opt.step()
    assert {opt.state[p][k].dtype for k in ("exp_avg", "exp_avg_sq")} == {torch.bfloat16}
    est = seed(method="full", weight_dtype="bf16")
    assert est.optimizer == 4 * P and "parameter's dtype" in est.formulas["optimizer states"]


def test_lora_factors_are_fp32_so_the_precision_choice_changes_nothing():
    by = {p: seed(optimizer_precision=p) for p in memory.OPTIMIZER_PRECISIONS}
    assert {(e.gradients, e.optimizer, e.total) for e in by.values()} == {(T_QV_64 * 4, T_QV_64 * 8, by["param"].total)}
    assert {e.bytes_per_trainable_param for e in by.values()} == {16.0}
    assert "every precision choice gives the same bytes" in by["mixed"].formulas["optimizer states"]


def test_bf16_halves_weights_gradients_and_activations_and_adam_with_it():  # CLAIMS row 18
    fp32, bf16 = seed(method="full", weight_dtype="fp32"), seed(method="full", weight_dtype="bf16")
    assert fp32.weights == 2 * bf16.weights and fp32.gradients == 2 * bf16.gradients
    assert fp32.optimizer == 2 * bf16.optimizer                     # AdamW's moments follow the parameter dtype
    assert fp32.optimizer == seed(method="full", weight_dtype="bf16", optimizer_precision="fp32").optimizer
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
    ({"optimizer_precision": "fp16"}, "optimizer_precision"),
    ({"batch_size": 0}, "batch_size"), ({"seq_len": -1}, "seq_len"), ({"r": 0}, "r"),
    ({"lora_dropout": 1.0}, "lora_dropout"), ({"quant_block_size": 0}, "quant_block_size"),
    ({"target_modules": []}, "target_modules"),
], ids=["method=half", "weight_dtype=int8", "optimizer=adam", "optimizer_precision=fp16", "batch_size=0", "seq_len=-1",
        "r=0", "lora_dropout=1.0", "quant_block_size=0", "target_modules=[]"])
def test_bad_config_names_the_field(kw, field):
    with pytest.raises(ValueError, match=rf"^{field}="):
        memory.MemoryConfig(**kw)


def test_unknown_model_and_unmatched_targets_name_the_field():
    with pytest.raises(ValueError, match=r"^model"):
        memory.estimate_memory(memory.MemoryConfig(model="Llama-9"))
    with pytest.raises(ValueError, match=r"^target_modules=\['nope'\]"):
        memory.estimate_memory(memory.MemoryConfig(target_modules=["nope"]))
