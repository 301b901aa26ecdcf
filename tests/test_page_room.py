"""AppTest for the Room page and the Fine-tuning page's share: a finished run shared and withdrawn, the board drawn,
the teacher's controls behind the token (none, wrong, right), a sweep handing two sessions two presets, exports."""

import time

import pytest
import streamlit as st
from conftest import metrics

from lora_core.serve.board import Board
from lora_core.serve.teacher import TOKEN_ENV

TOKEN = "room-test-token"


@pytest.fixture
def room_folder(tmp_path, monkeypatch):
    """A server whose board lives in tmp_path/room, with a teacher token; its caches are fresh before and after."""
    (tmp_path / "lab.toml").write_text(f'[room]\nboard_dir = "room"\nteacher_token = "{TOKEN}"\n')
    monkeypatch.setenv("LORA_LAB_SETTINGS", str(tmp_path / "lab.toml"))
    monkeypatch.delenv(TOKEN_ENV, raising=False)
    st.cache_resource.clear()  # settings, the board and the gate are read once per server
    yield tmp_path / "room"
    st.cache_resource.clear()


def _button(at, label):
    return next(b for b in at.button if b.label == label)


def _finish_a_run(at, steps=2):
    at.selectbox[0].set_value("distilgpt2-random").run()
    next(n for n in at.number_input if n.label == "steps").set_value(steps)
    at.button[0].click().run()                                   # the form's "Start training"
    for _ in range(15):
        if "held-out BLEU (0–100)" in metrics(at):
            return at
        at.run()
    raise AssertionError("the run did not finish")


def test_without_a_token_the_board_shows_and_no_control_does(app_page, tmp_path, monkeypatch):
    (tmp_path / "lab.toml").write_text(f'[room]\nboard_dir = "{tmp_path / "room"}"\n')
    monkeypatch.setenv("LORA_LAB_SETTINGS", str(tmp_path / "lab.toml"))
    monkeypatch.delenv(TOKEN_ENV, raising=False)
    st.cache_resource.clear()
    try:
        at = app_page("room")
        assert metrics(at)["results on the board"] == "0"
        assert any("No results on the board yet" in i.value for i in at.info)
        assert any("Teacher controls are off" in c.value for c in at.caption)
        assert not at.text_input and not any(b.label.startswith("Start") for b in at.button)
    finally:
        st.cache_resource.clear()


@pytest.mark.slow
def test_a_finished_run_is_shared_shown_and_withdrawn(app_page, room_folder):
    at = _finish_a_run(app_page("finetune"))
    heldout = float(metrics(at)["held-out loss"])
    next(b for b in at.button if b.label == "Share my result").click().run()  # no nickname yet
    assert any("nickname='' is not allowed" in e.value for e in at.error) and not at.exception
    assert Board(room_folder).entries() == []
    next(t for t in at.text_input if t.label == "nickname").set_value("<b>ada</b>")
    next(b for b in at.button if b.label == "Share my result").click().run()
    assert not at.exception, at.exception
    (entry,) = Board(room_folder).entries()
    assert entry.nickname == "<b>ada</b>" and entry.knobs["model"] == "distilgpt2-random"
    assert entry.metrics["steps"] == 2 and abs(entry.metrics["heldout_loss"] - heldout) < 5e-4  # shown to 3 places
    assert any(t.value == "<b>ada</b>" for t in at.text)         # shown as text, never markup
    assert not any(t.label == "nickname" for t in at.text_input)  # one share per run

    at.switch_page("pages/room.py").run()                          # the same session, on the Room page
    assert not at.exception, at.exception
    assert metrics(at)["results on the board"] == "1" and metrics(at)["yours"] == "1"
    table = at.dataframe[-1].value
    assert list(table["nickname"]) == ["<b>ada</b>"] and bool(table["yours"][0])

    at.switch_page("pages/finetune.py").run()
    _button(at, "Withdraw my result").click().run()
    assert Board(room_folder).entries() == []
    assert any(t.label == "nickname" for t in at.text_input)   # it may be shared again


def test_the_teacher_token_is_checked_and_a_sweep_hands_out_different_presets(app_page, room_folder):
    teacher = app_page("room")
    assert not any(b.label == "Start this sweep" for b in teacher.button)
    teacher.text_input[0].set_value("a guess")
    _button(teacher, "Unlock the teacher's controls").click().run()
    assert "that is not it; the next try is heard in 1 s" in teacher.error[0].value
    assert not any(b.label == "Start this sweep" for b in teacher.button)
    time.sleep(1.1)  # the 1 s wait after one wrong try (its doubling is timed with a fake clock in test_board.py)
    teacher.text_input[0].set_value(TOKEN)
    _button(teacher, "Unlock the teacher's controls").click().run()
    assert not teacher.error and any(b.label == "Start this sweep" for b in teacher.button)

    sweep = next(s for s in teacher.selectbox if s.label == "sweep")
    sweep.set_value("your own")
    next(t for t in teacher.text_input if t.label == "your own: values").set_value("4, 16")
    _button(teacher, "Start this sweep").click().run()
    assert not teacher.error, teacher.error[0].value
    assert any("is running: r over 4, 16" in i.value for i in teacher.info)

    presets = []
    for _ in range(2):  # two learners open Live fine-tuning
        learner = app_page("finetune")
        note = next(i.value for i in learner.info if "sweep" in i.value)
        presets.append((next(s for s in learner.select_slider if s.label == "r").value, note))
    assert [r for r, _ in presets] == [4, 16] and "gives you r = 16 (seed 0)" in presets[1][1]
    teacher.run()
    cells = teacher.dataframe[0].value
    assert list(cells["handed out"]) == [1, 1]

    board = Board(room_folder)
    board.share("run-x", "cy", {"r": 4, "targets": "q_proj,v_proj"}, {"heldout_loss": 1.5, "bleu": 3.0})
    teacher.run()
    assert metrics(teacher)["results on the board"] == "1" and len(teacher.get("plotly_chart")) == 1
    assert [d.proto.label for d in teacher.get("download_button")] == ["Export CSV", "Export JSON"]

    _button(teacher, "End the sweep").click().run()
    assert not any("is running" in i.value for i in teacher.info)
    next(c for c in teacher.checkbox if c.label == "yes, clear it").check().run()
    _button(teacher, "Clear the board").click().run()
    assert board.entries() == [] and metrics(teacher)["results on the board"] == "0"

