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


def test_section_3_shows_the_subspace_replay_on_smollm2_not_a_planted_toy(app_page, monkeypatch, tmp_path):
    from lora_core.research import record, verdicts
    text = lambda at: " ".join(m.value for m in [*at.markdown, *at.caption, *at.info])
    shipped = record.shipped("subspace")
    monkeypatch.setattr(record, "RESULTS_DIR", tmp_path)              # a copy without shipped replays
    at = app_page("rank_svd")
    assert not at.exception
    assert "planted" not in text(at) and "python -m lora_core.replay run subspace" in text(at)
    assert "intrinsic *dimension*" in text(at) and "arXiv 2012.13255" in text(at)
    if shipped is None:
        return
    monkeypatch.setattr(record, "RESULTS_DIR", record.REPO_ROOT / "results" / "replay")
    at = app_page("rank_svd")
    phi = shipped["results"]["modules"]["q_proj"]["r8_vs_r64"][0][0]
    assert metrics(at)["φ(1, 1), q"] == f"{phi:.3f}"
    assert f"Figure 3: {verdicts.verdict(shipped)['verdict']}" in text(at)
