"""AppTest for the Merging studio page, run through app.py: the sections that need no training, bad input kept
inline, and two adapters trained on distilgpt2-random, merged, swept and run as one mixed batch."""

import pytest
from conftest import errors, metrics

from lora_core.teach import merging_studio as ms


def _slider(at, label):
    return next(s for s in at.slider if s.label == label)


def _button(at, label):
    return next(b for b in at.button if b.label.startswith(label))


def test_the_page_renders_the_ties_steps_and_the_one_adapter_check_before_any_training(app_page):
    at = app_page("merging")
    assert "No adapters yet in this session" in at.info[0].value
    assert any("Train the two adapters in section 1 first" in i.value for i in at.info)
    shown = metrics(at)
    assert {"sign conflicts before the trim", "after the trim", "values overruled by the elected sign"} <= set(shown)
    assert shown[f"lora_core, rsLoRA: {ms.RATIO}"] == "1.0000"       # ours: the source, unchanged
    assert shown[f"PEFT, rsLoRA: {ms.RATIO}"] == "2.0000"            # PEFT: √4 (peft issue 3761)
    assert float(shown[f"PEFT, rsLoRA: {ms.DLOGIT}"]) > 0.1
    assert "peft issue 3761" in " ".join(m.value for m in at.markdown)

    next(s for s in at.select_slider if s.label == "r of the adapter").set_value(16).run()
    assert metrics(at)[f"PEFT, rsLoRA: {ms.RATIO}"] == "4.0000"


def test_a_bad_ties_density_is_shown_inline_and_the_last_steps_are_kept(app_page):
    at = app_page("merging")
    conflicts = metrics(at)["after the trim"]
    _slider(at, "TIES density").set_value(0.0).run()
    assert not at.exception
    assert "density=0.0 is not allowed" in errors(at)
    assert metrics(at)["after the trim"] == conflicts
    assert "Showing the last valid settings" in " ".join(c.value for c in at.caption)


@pytest.mark.slow
def test_train_both_adapters_merge_sweep_and_run_a_mixed_batch(app_page, monkeypatch):
    monkeypatch.setattr(ms, "COMBINATION_TYPES", ("linear", "ties"))  # the full sweep (11 merges) is the core's test
    at = app_page("merging")
    at.selectbox[0].set_value("distilgpt2-random").run()
    next(n for n in at.number_input if n.label == "steps per adapter").set_value(2)
    next(n for n in at.number_input if n.label == "held-out pairs scored per task").set_value(2)
    _button(at, "Train both adapters").click().run()
    assert not at.exception, at.exception
    for _ in range(30):                                              # each rerun advances about a second
        if any(b.label == "Merge and score" for b in at.button):
            break
        at.run()
    assert not at.exception, at.exception
    studio = at.session_state["merging:studio"]
    assert studio.ready and [len(studio.losses[a]) for a in ms.ADAPTERS] == [2, 2]
    assert metrics(at)["recsys: step"] == "2 / 2" and metrics(at)["e2e: step"] == "2 / 2"

    _button(at, "Merge and score").click().run()
    assert not at.exception and not at.error, errors(at)
    table = at.dataframe[0].value
    assert list(table["model"]) == ["base", "recsys", "e2e", "merged (linear, 0.5 / 0.5)"]
    assert table.iloc[3]["mean"] == pytest.approx(studio.scores["merged"]["recsys"] / 2
                                                  + studio.scores["merged"]["e2e"] / 2)

    at.selectbox[1].set_value("ties").run()                          # combination_type
    _slider(at, "density (fraction kept)").set_value(0.0).run()
    _button(at, "Merge and score").click().run()
    assert not at.exception
    assert "density=0.0 is not allowed" in errors(at)
    assert list(at.dataframe[0].value["model"])[-1] == "merged (linear, 0.5 / 0.5)"   # the last good merge stays

    _slider(at, "density (fraction kept)").set_value(0.5).run()
    _button(at, "Sweep").click().run()
    assert not at.exception and not at.error, errors(at)
    assert list(at.dataframe[1].value["model"]) == ["linear", "ties"]
    assert "Lowest mean loss: **" in " ".join(c.value for c in at.caption)

    _slider(at, "new tokens").set_value(4).run()
    _button(at, "Run one mixed batch").click().run()
    assert not at.exception and not at.error, errors(at)
    assert metrics(at)["rows equal to their own single run"] == "8 of 8"
    assert float(metrics(at)["max |Δlogit|, mixed batch vs single runs"]) < 1e-3
