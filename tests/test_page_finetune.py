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


def _button(at, label):
    return next(b for b in at.button if b.label == label)


@pytest.mark.slow
def test_pause_resume_and_stop_show_the_state_after_each_click(app_page):
    """on_click: every button is drawn after the click took effect, and each click acts once."""
    at = app_page("finetune")
    at.selectbox[0].set_value("distilgpt2-random").run()
    next(n for n in at.number_input if n.label == "steps").set_value(500)
    at.button[0].click().run()
    run = at.session_state["finetune:run"]
    assert run.status == "running" and not _button(at, "Pause").disabled and _button(at, "Resume").disabled
    for _ in range(3):
        _button(at, "Pause").click().run()
        assert run.status == "paused" and _button(at, "Pause").disabled and not _button(at, "Resume").disabled
        paused_at = run.step
        at.run()
        assert run.step == paused_at                                   # a paused run does not step
        _button(at, "Resume").click().run()
        assert run.status == "running" and not _button(at, "Pause").disabled and _button(at, "Resume").disabled
    _button(at, "Stop").click().run()
    assert run.status == "stopped" and run.after and _button(at, "Stop").disabled
    assert _button(at, "Pause").disabled and _button(at, "Resume").disabled
    assert "held-out BLEU (0–100)" in metrics(at) and not at.exception
    assert at.query_params["run"] == at.session_state["finetune:run_id"]     # a reload comes back to it


def test_a_link_to_a_run_that_is_gone_says_so(app_page):
    at = app_page("finetune")
    at.query_params["run"] = "0" * 32
    at.run()
    assert any("no longer here" in w.value for w in at.warning) and not at.exception
    assert "run" not in at.query_params


def test_limited_inputs_take_their_maximum_from_the_servers_settings(app_page):
    from lora_core.serve.settings import Settings
    at = app_page("finetune")
    limits, shown = Settings(), {n.label: n for n in at.number_input}
    assert shown["sequence length"].max == limits.max_seq_len == 256
    assert shown["steps"].max == limits.max_steps and shown["batch size"].max == limits.max_batch_size
