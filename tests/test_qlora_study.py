"""lora_core.teach.qlora_study, what the QLoRA page shows: a weight quantized with each codebook and ranked,
and the memory comparison behind the page's target box."""

from dataclasses import replace

import pytest

from lora_core.quant import memory
from lora_core.teach import qlora_study


def test_study_round_trips_the_first_weights_and_ranks_nf4_first_on_a_normal_matrix():
    w = qlora_study.weight_to_study(None, qlora_study.CONTROL)
    res = qlora_study.study(w, 64)
    assert res["shape"] == (576, 576) and res["n_blocks"] == 576 * 576 // 64
    first = res["first"][0]
    assert first["ŵ = level·absmax"] == pytest.approx(first["level"] * res["absmax0"], rel=1e-6)
    rank = qlora_study.codebook_ranking(res["table"])
    assert rank["best"] == "NF4" and all(v > 1 for v in rank["ratios"].values())
    assert rank["log_top_gap"] == pytest.approx(0.5) and rank["log_inner_level"] == pytest.approx(2 ** -4)
    rows = qlora_study.error_table(res["table"])
    assert [r["codebook"] for r in rows] == list(res["table"]) and "RMSE" in rows[0]
    with pytest.raises(ValueError, match="needs a model"):
        qlora_study.weight_to_study(None, "model.layers.0.self_attn.q_proj")


def test_memory_comparison_reads_the_target_box():
    assert qlora_study.parse_targets("  ") is None
    assert qlora_study.parse_targets("all-linear") == "all-linear"
    assert qlora_study.parse_targets("q_proj, v_proj") == ["q_proj", "v_proj"]
    cfg, by_method = qlora_study.memory_comparison("q_proj,v_proj", model="Llama-2-7b", method="qlora", r=64)
    assert cfg.target_modules == ["q_proj", "v_proj"] and set(by_method) == {"full", "lora", "qlora"}
    assert by_method["qlora"].weights < by_method["lora"].weights
    table = qlora_study.dtype_table(cfg)
    assert [row["dtype"] for row in table] == list(memory.DTYPE_BYTES)
    seed = qlora_study.seed_002()
    assert seed["with checkpointing"].total < seed["as given"].total


def test_paged_optimizer_view_counts_what_paging_can_move_and_the_long_batch_spike():
    seed = memory.SEED_002_QLORA
    view = qlora_study.paged_optimizer_view(seed)
    usual = memory.estimate_memory(seed)
    long = memory.estimate_memory(replace(seed, seq_len=seed.seq_len * qlora_study.LONG_SEQ_FACTOR))
    assert view["optimizer"] == usual.optimizer == usual.trainable_params * 8       # AdamW on fp32 factors
    assert view["long_seq_len"] == 4 * seed.seq_len and view["long_total"] == long.total
    assert view["spike"] == long.activations - usual.activations > 0
    with pytest.raises(ValueError, match="long_seq_factor=1 is not allowed"):
        qlora_study.paged_optimizer_view(seed, long_seq_factor=1)
