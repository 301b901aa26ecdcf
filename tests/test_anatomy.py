"""lora_core.teach.anatomy and lora_core.teach.peft_reference: the numbers the Parameters and Anatomy pages show."""

import dataclasses

import pytest
import torch
import torch.nn as nn
from conftest import tiny_gpt2
from peft import LoraConfig as PeftLoraConfig
from peft import get_peft_model

import lora_core as lc
from lora_core.teach import anatomy, peft_reference


# --- dropout ---------------------------------------------------------------------------------------------
def test_dropout_zeroes_the_branch_input_only_in_train_mode():
    t = anatomy.trace_dropout(in_features=64, out_features=48, r=4, p=0.25, train=True, seed=3, tokens=512)
    assert t["branch_input_zero_fraction"] == pytest.approx(0.25, abs=0.02)
    assert t["base_input_zero_fraction"] == 0.0 and t["x_zero_fraction"] == 0.0
    assert t["base_input_is_x"]                      # the frozen path sees x itself
    assert t["A_zero_fraction"] == 0.0 and t["B_zero_fraction"] == 0.0
    assert not t["A_changed"] and not t["B_changed"]
    assert t["kept_scale"] == pytest.approx(1 / 0.75, rel=1e-5)   # inverted dropout
    assert [p["name"] for p in t["panels"]][1] == "dropout(x) → lora_A"


def test_traces_draw_from_their_own_generator_only(monkeypatch):
    layer = nn.Linear(24, 40)                        # built (and drawn) before the state is read
    monkeypatch.setattr(torch, "manual_seed", lambda *a: pytest.fail("torch.manual_seed reseeds every session"))
    state = torch.get_rng_state()
    first, again = anatomy.trace_dropout(p=0.3, seed=1), anatomy.trace_dropout(p=0.3, seed=1)
    assert first["panels"] == again["panels"]                                 # the seed decides the mask
    assert first["panels"] != anatomy.trace_dropout(p=0.3, seed=2)["panels"]
    assert anatomy.init_gallery(layer, r=4)["rows"] == anatomy.init_gallery(layer, r=4)["rows"]
    anatomy.compare_notations(32, 48, r=4, lora_alpha=8)
    assert torch.equal(torch.get_rng_state(), state)                          # the global RNG was not drawn


def test_dropout_does_nothing_in_eval_or_at_p0():
    for p, train in ((0.5, False), (0.0, True)):
        t = anatomy.trace_dropout(p=p, train=train)
        assert t["branch_input_zero_fraction"] == 0.0
        assert t["kept_scale"] == pytest.approx(1.0)


def test_peft_also_drops_the_branch_input_not_a_or_b():
    """The oracle: hook PEFT's own lora_A input and see the same thing."""
    torch.manual_seed(0)
    model = get_peft_model(nn.Sequential(nn.Linear(32, 32)), PeftLoraConfig(r=4, target_modules=["0"],
                                                                             lora_dropout=0.5))
    layer = model.base_model.model[0]
    seen = {}
    layer.lora_A["default"].register_forward_pre_hook(lambda m, a: seen.update(x=a[0]))
    A = layer.lora_A["default"].weight.detach().clone()
    model.train()(torch.randn(256, 32))
    assert (seen["x"] == 0).float().mean().item() == pytest.approx(0.5, abs=0.05)
    assert torch.equal(A, layer.lora_A["default"].weight)


# --- init ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("make", [lambda: nn.Linear(24, 40), lambda: tiny_gpt2().transformer.h[0].attn.c_attn],
                         ids=["Linear", "Conv1D"])
def test_init_gallery_numbers(make):
    torch.manual_seed(0)  # nn.Linear draws its init from the global RNG
    layer = make()
    before = layer.weight.detach().clone()
    g = anatomy.init_gallery(layer, r=4, lora_alpha=8)
    rows = {row["mode"]: row for row in g["rows"]}
    for mode in (True, "gaussian"):                 # B = 0: exactly the base
        assert rows[mode]["delta_norm"] == 0 and rows[mode]["max_abs_output_change"] == 0
        assert not rows[mode]["base_rewritten"] and rows[mode]["max_abs_reconstruction_error"] == 0
    assert rows[False]["max_abs_output_change"] > 1e-3  # both random: the model moves at step 0
    pissa = rows["pissa"]
    assert pissa["base_rewritten"] and pissa["delta_norm"] > 0
    assert pissa["max_abs_output_change"] < 1e-4
    assert pissa["max_abs_reconstruction_error"] < 1e-5     # W_res + ΔW == W
    assert pissa["base_weight_norm"] < pissa["W_norm"]
    # the residual's spectrum is W's with the top r removed
    sv = g["singular_values"]
    assert sv["W_res (PiSSA)"][0] == pytest.approx(sv["W"][4], rel=1e-4)
    assert torch.equal(layer.weight, before)                # the layer passed in is untouched


def test_init_gallery_refuses_a_rank_above_the_layer():
    with pytest.raises(ValueError, match="r=64 is too large"):
        anatomy.init_gallery(nn.Linear(16, 32), r=64)


# --- targets ----------------------------------------------------------------------------------------------
def test_seed_regex_finds_only_lm_head_on_gpt2():
    res = anatomy.regex_vs_all_linear(lc.build_on_meta("distilgpt2"))
    assert res["regex"] == ["lm_head"]
    assert res["all_linear"] == {"c_attn": ("Conv1D", 6), "c_fc": ("Conv1D", 6), "c_proj": ("Conv1D", 12)}
    assert res["all_linear_modules"] == 24
    assert res["excluded_output_layer"] == "lm_head" and res["output_tied_to_embedding"]


def test_seed_regex_on_llama_adds_lm_head_that_all_linear_leaves_out():
    res = anatomy.regex_vs_all_linear(lc.build_on_meta("SmolLM2-135M"))
    assert "lm_head" in res["regex"] and "lm_head" not in res["all_linear"]
    assert set(res["regex"]) - {"lm_head"} == set(res["all_linear"])


def test_block_tree_marks_what_the_config_matches():
    cfg = lc.LoraConfig(target_modules=["c_attn", "q_proj", "v_proj"])
    gpt2 = {n.label: n for n in anatomy.block_tree(lc.build_on_meta("distilgpt2"), cfg)}
    assert gpt2["c_attn"].matched and gpt2["c_attn"].shape == "768→2304" and gpt2["c_attn"].kind == "Conv1D"
    assert not gpt2["c_fc"].matched and gpt2["c_fc"].role == "mlp"
    assert gpt2["block 0"].params == gpt2["attn"].params + gpt2["mlp"].params + gpt2["ln_1"].params \
        + gpt2["ln_2"].params
    llama = {n.label: n for n in anatomy.block_tree(lc.build_on_meta("SmolLM2-135M"), cfg)}
    assert [k for k, n in llama.items() if n.matched] == ["q_proj", "v_proj"]
    assert llama["k_proj"].shape == "576→192"


# --- counts ------------------------------------------------------------------------------------------------
PEFT_CASES = {  # id: (shipped config, LoraConfig)
    "distilgpt2-c_attn-r8": ("distilgpt2", dict(r=8, lora_alpha=16, target_modules=["c_attn"])),
    "distilgpt2-all_linear-bias_all": ("distilgpt2", dict(r=4, target_modules="all-linear", bias="all")),
    "distilgpt2-attn-bias_lora_only-saved_lm_head": ("distilgpt2", dict(r=8, target_modules=["c_attn", "c_proj"],
                                                                        bias="lora_only", modules_to_save=["lm_head"])),
    "distilgpt2-c_fc-layers_1_3": ("distilgpt2", dict(r=16, target_modules=["c_fc"], layers_to_transform=[1, 3])),
    "distilgpt2-regex-pissa": ("distilgpt2", dict(r=2, target_modules=r".*\.attn\.c_proj", init_lora_weights="pissa")),
    "SmolLM2-default_targets": ("SmolLM2-135M", dict(r=8, target_modules=None)),
    "SmolLM2-all_linear-r32-rslora": ("SmolLM2-135M", dict(r=32, target_modules="all-linear", use_rslora=True,
                                                           task_type="CAUSAL_LM")),
}


@pytest.mark.parametrize("model,kw", PEFT_CASES.values(), ids=PEFT_CASES.keys())
def test_peft_reference_count_equals_our_ledger(model, kw):
    cfg = lc.LoraConfig(**kw)
    ours = lc.count_lora_parameters(model, cfg)
    assert peft_reference.peft_reference_count(model, cfg) == (ours.trainable, ours.total)


def test_peft_reference_count_of_the_seed_config():
    cfg = lc.LoraConfig(r=8, lora_alpha=16, target_modules=["c_attn"], lora_dropout=0.1, task_type="CAUSAL_LM")
    assert lc.peft_line(*peft_reference.peft_reference_count("distilgpt2", cfg)) == \
        "trainable params: 147,456 || all params: 82,060,032 || trainable%: 0.1797"


def test_rank_sweep_equals_a_full_recount():
    cfgs = {"c_attn": lc.LoraConfig(target_modules=["c_attn"]),
            "all-linear + bias": lc.LoraConfig(target_modules="all-linear", bias="all", modules_to_save=["lm_head"])}
    points = anatomy.rank_sweep("distilgpt2", cfgs, [1, 8, 64])
    assert len(points) == 6
    for p in points:
        book = lc.count_lora_parameters("distilgpt2", dataclasses.replace(cfgs[p["label"]], r=p["r"]))
        assert (p["trainable"], p["total"]) == (book.trainable, book.total)
        assert p["trainable%"] == pytest.approx(book.trainable_percent)


def test_rank_sweep_leaves_out_ranks_a_layer_cannot_take():
    points = anatomy.rank_sweep("SmolLM2-135M", {"kv": lc.LoraConfig(target_modules=["k_proj"])}, [64, 192, 256])
    assert [p["r"] for p in points] == [64, 192]       # k_proj is 576→192


def test_seed_000_count_is_c_attn_in_four_of_six_blocks():
    claim = anatomy.explain_claimed_count("distilgpt2", lc.LoraConfig(r=8, target_modules=["c_attn"]), 98_304)
    assert (claim["trainable"], claim["total"], claim["per_module"], claim["modules"]) == \
        (147_456, 82_060_032, 24_576, 6)
    assert claim["implied_modules"] == 4 and claim["reproduced_with_first_layers"] == 98_304
    assert claim["claimed_percent_of_total"] == pytest.approx(0.1198, abs=1e-4)
    assert claim["trainable_percent"] == pytest.approx(0.1797, abs=1e-4)


def test_square_matrix_worked_example():
    (row,) = lc.count_lora_parameters("distilgpt2", lc.LoraConfig(r=8, target_modules=r".*\.attn\.c_proj")).rows
    assert row.lora_per_module == 12_288 and row.weight_params == 589_824
    assert anatomy.percent_of_weight(row) == pytest.approx(2.0833, abs=1e-4)


def test_bias_modes():
    rows = anatomy.bias_mode_ledgers("distilgpt2", lc.LoraConfig(target_modules=["c_attn"]))
    gpt2 = {row["bias"]: row for row in rows}
    assert gpt2["none"]["extra trainable"] == 0
    assert gpt2["lora_only"]["extra trainable"] == 6 * 2304           # the six c_attn biases
    assert gpt2["all"]["extra trainable"] > gpt2["lora_only"]["extra trainable"]
    llama = anatomy.bias_mode_ledgers("SmolLM2-135M", lc.LoraConfig(target_modules=["q_proj"]))
    assert {row["extra trainable"] for row in llama} == {0}          # Llama has no biases


def test_lora_adds_parameters_and_selects_none():
    info = anatomy.added_not_selected("distilgpt2", lc.LoraConfig(r=8, target_modules=["c_attn"]))
    assert info["base_trainable"] == 0 and info["base_frozen"] == info["base_total"] == 81_912_576
    assert info["trainable"] == info["lora"] == 147_456
    with_bias = anatomy.added_not_selected("distilgpt2", lc.LoraConfig(r=8, target_modules=["c_attn"], bias="all"))
    assert with_bias["base_trainable"] > 0
    assert all(kind.endswith(".bias") for kind in with_bias["base_trainable_kinds"])


def test_notations():
    n = anatomy.compare_notations(768, 2304, r=8, lora_alpha=16)
    assert n["A_shape"] == (8, 768) and n["B_shape"] == (2304, 8) and n["delta_shape"] == (2304, 768)
    assert n["literal_error"] is not None            # A @ B @ x does not even run with PEFT's shapes
    assert n["peft_max_abs_diff"] < 1e-6
    assert n["branch_over_unscaled"] == pytest.approx(n["scaling"], rel=1e-5) and n["scaling"] == 2
