"""lora_core.teach.ledger_views, what the Parameters page shows: the target widgets resolved, a model's facts
and target options read from the meta model, the rank sweep's configs, the ledger table."""

import dataclasses

import lora_core as lc
from lora_core.config import ALL_LINEAR
from lora_core.teach import ledger_views


def test_target_widgets_resolve_like_the_page_says():
    assert ledger_views.resolve_targets(["c_attn"], "") == (["c_attn"], None)
    assert ledger_views.resolve_targets(["c_attn"], r".*\.c_proj") == (r".*\.c_proj", None)   # a regex wins
    targets, note = ledger_views.resolve_targets([ALL_LINEAR, "c_attn"], "  ")
    assert targets == ALL_LINEAR and "already covers" in note
    assert ledger_views.resolve_targets([ALL_LINEAR], "") == (ALL_LINEAR, None)


def test_model_facts_and_target_options_read_the_meta_model():
    gpt2, llama = lc.build_on_meta("distilgpt2"), lc.build_on_meta("SmolLM2-135M")
    facts = ledger_views.model_facts(gpt2)
    assert (facts["layers"], facts["last_layer"], facts["default_targets"]) == (6, 5, ["c_attn"])
    options = ledger_views.target_options([gpt2, llama])
    assert options[0] == ALL_LINEAR and options[1:] == sorted(options[1:])
    assert {"c_attn", "q_proj", "down_proj"} <= set(options)
    names = lc.matched_modules(llama, lc.LoraConfig(target_modules=ALL_LINEAR))
    prefix, leaves = ledger_views.block_layers(llama, names, 3)
    assert prefix == "model.layers.3." and "self_attn.q_proj" in leaves and len(leaves) == 7


def test_sweep_configs_drop_r_and_alpha_so_the_figure_stays_cached():
    cfg = lc.LoraConfig(r=16, lora_alpha=32, target_modules=["c_attn"])
    sets = ledger_views.sweep_configs(cfg, "gpt2")
    assert sets[0][0] == "your choice" and sets[0][1].target_modules == ["c_attn"]
    assert {(c.r, c.lora_alpha) for _, c in sets} == {(1, 1)}
    assert sets == ledger_views.sweep_configs(dataclasses.replace(cfg, r=4), "gpt2")


def test_the_ledger_table_sums_to_the_ledger():
    book = lc.count_lora_parameters("distilgpt2", lc.LoraConfig(r=8, target_modules=ALL_LINEAR))
    rows = ledger_views.ledger_table(book)
    assert sum(row["LoRA params"] for row in rows) == book.lora_params
    assert {row["shape (in→out)"] for row in rows} == {"768→2304", "768→768", "768→3072", "3072→768"}
