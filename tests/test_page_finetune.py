"""AppTest for the Fine-tuning page: start, steps, results, merge check, export."""

import pytest
from conftest import metrics


@pytest.mark.slow
def test_start_train_merge_and_export_on_random_distilgpt2(app_page):
    at = app_page("finetune")
    assert "No run yet" in at.info[0].value
    at.selectbox[0].set_value("distilgpt2-random").run()
    next(n for n in at.number_input if n.label == "steps").set_value(3)
    at.button[0].click().run()                                   # the form's "Start training"
    assert not at.exception, at.exception
    for _ in range(10):                                          # each rerun advances about a second
        shown = metrics(at)
        if "held-out BLEU (0–100)" in shown:
            break
        at.run()
    assert shown["step"] == "3 / 3"
    assert shown["trainable"] == "147,456"                     # c_attn r=8 on distilgpt2's shapes
    assert float(shown["held-out BLEU (0–100)"]) >= 0
    assert len(at.session_state["trained_adapters"]) == 1       # the Rank/SVD page can read it
    next(b for b in at.button if b.label.startswith("Merge check")).click().run()
    merged = metrics(at)
    assert float(merged["max |Δlogit| merged vs unmerged"]) < 1e-3
    assert not at.exception


def test_bad_config_is_shown_inline_and_nothing_starts(app_page):
    at = app_page("finetune")
    at.selectbox[0].set_value("distilgpt2-random").run()
    next(n for n in at.number_input if n.label == "lora_alpha").set_value(0.0)
    at.button[0].click().run()
    assert not at.exception
    assert "lora_alpha=0.0 is not allowed" in at.error[0].value
    assert "finetune:run" not in at.session_state


@pytest.mark.slow
def test_qlora_base_trains_and_reports_its_smaller_memory(app_page):
    at = app_page("finetune")
    at.selectbox[0].set_value("distilgpt2-random").run()
    next(n for n in at.number_input if n.label == "steps").set_value(2)
    next(s for s in at.selectbox if s.label == "base precision").set_value("nf4")
    at.button[0].click().run()
    for _ in range(10):
        shown = metrics(at)
        if "base weights (nf4)" in shown:
            break
        at.run()
    assert not at.exception
    mib = float(shown["base weights (nf4)"].split()[0].replace(",", ""))
    assert mib < 0.6 * 81_912_576 * 4 / 2**20                       # below 60% of the fp32 base
    next(b for b in at.button if b.label.startswith("Merge check")).click().run()
    assert any("merge is not allowed on a 4-bit" in e.value for e in at.error)
    assert not at.exception
