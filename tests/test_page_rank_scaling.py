"""AppTest for the Rank/SVD and Scaling pages: they run, show core numbers, and survive bad input."""

from pathlib import Path

import pytest
import torch
from streamlit.testing.v1 import AppTest

import lora_core as lc

APP = Path(__file__).resolve().parents[1] / "app.py"


def page(name: str) -> AppTest:
    """Run a page through app.py's navigation, as the browser does (its page links must resolve)."""
    at = AppTest.from_file(str(APP), default_timeout=120)
    at.switch_page(f"pages/{name}")
    at.run()
    assert not at.exception, at.exception
    return at


def metrics(at: AppTest) -> dict[str, str]:
    return {m.label: m.value for m in at.metric}


def test_rank_page_shows_the_core_report_for_a_real_weight():
    at = page("rank_svd.py")
    model, _ = lc.load_model("smollm2-135m")
    W = model.model.layers[0].self_attn.q_proj.weight.detach()
    rep = lc.rank_k_report(W, 8)
    shown = metrics(at)
    assert shown["energy kept"] == f"{rep['energy']:.2%}"
    assert shown["numbers stored"] == "9,216 of 331,776"           # 8·(576+576) of 576²
    table = at.dataframe[0].value
    fresh, random = table.iloc[0], table.iloc[1]
    assert fresh["numerical rank"] == 0 and random["numerical rank"] == 8
    assert random["max |σ_factors − σ_full|"] < 1e-4
    assert float(shown["φ on ΔW, top 4"]) > 0.9


def test_rank_page_picture_mode():
    at = page("rank_svd.py")
    at.radio[0].set_value("a picture").run()
    assert not at.exception
    assert metrics(at)["numbers stored"] == f"{8 * (96 + 160):,} of {96 * 160:,}"


def test_rank_page_keeps_the_last_table_on_bad_alpha():
    at = page("rank_svd.py")
    at.number_input[0].set_value(0.0).run()
    assert not at.exception
    assert "lora_alpha=0.0 is not allowed" in at.error[0].value
    assert at.dataframe[0].value.iloc[1]["numerical rank"] == 8


def test_scaling_page_numbers_and_bad_input():
    at = page("scaling.py")
    assert metrics(at) == {"α/r at r=64": "0.25", "α/√r at r=64": "2"}
    at.number_input[0].set_value(0.0).run()
    assert not at.exception and "lora_alpha=0.0 is not allowed" in at.error[0].value
    assert metrics(at)["α/r at r=64"] == "0.25"                      # the last good picture stays
    at.number_input[0].set_value(16.0).run()
    at.multiselect[0].set_value([]).run()
    assert any("ranks=[] is not allowed" in e.value for e in at.error)


def test_scaling_page_adam_table_matches_the_toy_runs():
    at = page("scaling.py")
    table = at.dataframe[-1].value
    first, half, twin = table.columns[1:]
    assert table.iloc[0][first] == pytest.approx(table.iloc[0][half], rel=1e-6)   # step 1: equal
    assert (table[first] - table[twin]).abs().max() < 1e-6 * table[first].max() * 100
    ref = lc.train_toy(lc.ToyConfig(r=8, lora_alpha=16, lr=1e-3, steps=80))
    assert table.iloc[-1][first] == pytest.approx(ref.losses[-1])
    assert torch.isfinite(torch.tensor(table[first].tolist())).all()
