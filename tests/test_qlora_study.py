"""lora_core.teach.qlora_study, what the QLoRA page shows: a weight quantized with each codebook and ranked,
and the memory comparison behind the page's target box."""

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
