"""AppTest for the Rank/SVD page: ΔW's spectrum for a real weight, the picture mode, bad input kept inline."""

from conftest import metrics

import lora_core as lc


def test_rank_page_shows_the_core_report_for_a_real_weight(app_page):
    at = app_page("rank_svd")
    model, _ = lc.load_model("smollm2-135m")
    W = model.model.layers[0].self_attn.q_proj.weight.detach()
    rep = lc.spectrum.rank_k_report(W, 8)
    shown = metrics(at)
    assert shown["energy kept"] == f"{rep['energy']:.2%}"
    assert shown["numbers stored"] == "9,216 of 331,776"           # 8·(576+576) of 576²
    table = at.dataframe[0].value
    fresh, random = table.iloc[0], table.iloc[1]
    assert fresh["numerical rank"] == 0 and random["numerical rank"] == 8
    assert random["max |σ_factors − σ_full|"] < 1e-4
    assert float(shown["φ on ΔW, top 4"]) > 0.9


def test_rank_page_picture_mode(app_page):
    at = app_page("rank_svd")
    at.radio[0].set_value("a picture").run()
    assert not at.exception
    assert metrics(at)["numbers stored"] == f"{8 * (96 + 160):,} of {96 * 160:,}"


def test_rank_page_keeps_the_last_table_on_bad_alpha(app_page):
    at = app_page("rank_svd")
    at.number_input[0].set_value(0.0).run()
    assert not at.exception
    assert "lora_alpha=0.0 is not allowed" in at.error[0].value
    assert at.dataframe[0].value.iloc[1]["numerical rank"] == 8


def test_the_toy_is_labelled_a_planted_target_not_intrinsic_rank_evidence(app_page):
    at = app_page("rank_svd")
    text = " ".join(m.value for m in at.markdown) + " ".join(c.value for c in at.caption) + \
        " ".join(i.value for i in at.info)
    assert "the intrinsic-rank claim of the LoRA paper, measured here" not in text
    assert "planted" in text and "intrinsic *dimension*" in text and "arXiv 2012.13255" in text
    assert any("not evidence" in i.value for i in at.info)
