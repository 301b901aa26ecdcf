"""AppTest for the Research replays page: seven tabs, each with the paper's numbers, ours, the verdict the rule
computes and the provenance; the command that makes a missing result; and the live quick replay, which waits for
a training slot, runs in a (here fake) child process, can be cancelled, and says when it disagrees with the
shipped full run.

The shipped results (results/replay/*.json, or the folder LORA_LAB_REPLAY_RESULTS names) are copied into a
temporary folder the page reads; without them those tests skip. No replay really runs here.
"""

import os
import shutil
from pathlib import Path

import pytest
from conftest import ROOT, errors
from streamlit.testing.v1 import AppTest

import pages.common
from lora_core.research import papers, record, verdicts
from lora_core.research.experiments import EXPERIMENTS
from lora_core.research.live import LiveReplay
from lora_core.serve.admission import TrainingSlots

SOURCE = Path(os.environ.get("LORA_LAB_REPLAY_RESULTS", ROOT / "results" / "replay"))
SHIPPED = sorted(SOURCE.glob("*.json")) if SOURCE.is_dir() else []
needs_results = pytest.mark.skipif(
    not SHIPPED, reason=f"no replay results in {SOURCE}: run `python -m lora_core.replay run all --out "
                        "results/replay`, or point LORA_LAB_REPLAY_RESULTS at a folder of results")
CHARTS = {"targets": 1, "rank": 1, "subspace": 3, "amplification": 2, "intruders": 2, "forgetting": 2,
          "learning_rate": 2}


@pytest.fixture
def results_dir(tmp_path, monkeypatch) -> Path:
    """The shipped results, copied where the page reads them."""
    folder = tmp_path / "replay"
    folder.mkdir()
    for path in SHIPPED:
        shutil.copy(path, folder)
    monkeypatch.setattr(record, "RESULTS_DIR", folder)
    return folder


@pytest.fixture
def no_results(tmp_path, monkeypatch) -> Path:
    monkeypatch.setattr(record, "RESULTS_DIR", tmp_path)
    return tmp_path


@pytest.fixture
def slots(monkeypatch) -> TrainingSlots:
    """One training slot for this test alone (the server's cached queue is left alone)."""
    queue = TrainingSlots(1, heartbeat_seconds=600)
    monkeypatch.setattr(pages.common, "training_slots", lambda: queue)
    return queue


class FakeReplay:
    """Stands in for LiveReplay's child process: the test moves it from "running" to "done" or "failed"."""

    def __init__(self, name: str, result: dict | None = None):
        self.name, self.state, self.final, self.cancelled = name, "running", result, False

    def status(self) -> str:
        return self.state

    def progress(self) -> list[str]:
        return ["  LoRA q+v r=1, lr 0.002, seed 0: 6 steps, held-out loss 1.514, BLEU 26.5 (47 s)"]

    def result(self) -> dict | None:
        return self.final if self.state == "done" else None

    def error(self) -> str:
        return 'File "/srv/lab/lora_core/research/runs.py", line 9\nRuntimeError: out of memory'

    def cancel(self) -> None:
        self.cancelled = True


@pytest.fixture
def started(monkeypatch) -> list[FakeReplay]:
    """LiveReplay.start replaced: each call records a FakeReplay instead of starting a process."""
    jobs: list[FakeReplay] = []

    def start(cls, name: str, device: str = "cpu") -> FakeReplay:
        jobs.append(FakeReplay(name))
        return jobs[-1]

    monkeypatch.setattr(LiveReplay, "start", classmethod(start))
    return jobs


def tab(at: AppTest, name: str):
    return at.tabs[[e.name for e in EXPERIMENTS].index(name)]


def boxes(block) -> list[str]:
    return [b.value for b in (*block.success, *block.warning, *block.error)]


@needs_results
def test_every_tab_shows_the_papers_numbers_ours_the_verdict_and_how_it_was_made(app_page, results_dir):
    at = app_page("replays")
    assert all(e.value in verdicts.VERDICTS for e in at.error), errors(at)  # "did not hold here" is drawn red
    assert [t.label for t in at.tabs] == [e.title for e in EXPERIMENTS]
    for e, block in zip(EXPERIMENTS, at.tabs, strict=True):
        quoted = " ".join(block.table[0].value["numbers"])
        for q in papers.quotes_for(e.name):
            for label, value in q.numbers.items():
                assert f"{label}: {value}" in quoted, (e.name, label)
        result = record.shipped(e.name, results_dir)
        if result is None:
            assert any(f"run {e.name} --out" in i.value for i in block.info), e.name
            continue
        assert boxes(block) == [verdicts.verdict(result)["verdict"]], e.name
        assert len(block.get("plotly_chart")) == CHARTS[e.name], e.name
        provenance = next(df.value for df in block.dataframe if "what" in df.value.columns).set_index("what")
        assert provenance.loc["command", "value"] == result["command"]
        assert any(f"run the quick {e.name} replay".lower() in b.label.lower() for b in block.button)


def test_without_results_each_tab_names_the_command_that_makes_them(app_page, no_results):
    at = app_page("replays")
    assert not at.error, errors(at)
    assert len(at.tabs) == len(EXPERIMENTS) == 7
    for e, block in zip(EXPERIMENTS, at.tabs, strict=True):
        assert any(f"python -m lora_core.replay run {e.name} --out {no_results}" in i.value for i in block.info)
        assert len(block.table) == 1 and not block.dataframe and not block.get("plotly_chart")  # the paper's only


def test_a_broken_result_file_is_reported_in_its_tab_and_the_others_still_draw(app_page, no_results):
    (no_results / "rank.json").write_text('{"name": "rank"}')
    at = app_page("replays")
    assert "result is missing title" in " ".join(e.value for e in tab(at, "rank").error)
    assert not tab(at, "targets").error and len(at.tabs) == 7


@needs_results
def test_the_lambda_slider_highlights_its_point_and_counts_the_intruders_left(app_page, results_dir):
    result = record.shipped("intruders", results_dir)
    if result is None:
        pytest.skip("no intruders result")
    at = app_page("replays")
    smallest = min(result["results"]["reduction"]["points"], key=lambda p: p["lambda"])
    at.select_slider(key="replays:lambda").set_value(smallest["lambda"]).run()
    assert not at.exception
    shown = {m.label: m.value for m in tab(at, "intruders").metric}
    assert shown["intruders left (q and v, every block)"] == str(smallest["intruders"])


def test_the_live_button_takes_a_slot_starts_one_replay_and_cancel_stops_it(app_page, no_results, slots, started):
    at = app_page("replays")
    at.button(key="replays:start:rank").click().run()
    assert not at.exception and [job.name for job in started] == ["rank"]
    assert slots.snapshot()["running"] == 1
    rank = tab(at, "rank")
    assert any("running in a process of its own" in i.value for i in rank.info)
    assert "held-out loss 1.514" in rank.code[0].value
    keys = {b.key for b in at.button}
    assert "replays:start:targets" not in keys  # one live replay per session
    assert any("one live replay per session" in c.value for c in tab(at, "targets").caption)
    at.button(key="replays:cancel").click().run()
    assert not at.exception and started[0].cancelled
    assert slots.snapshot()["running"] == 0
    assert "replays:start:targets" in {b.key for b in at.button}


def test_with_every_slot_busy_the_page_says_where_in_the_queue_it_is(app_page, no_results, slots, started):
    assert slots.request("another learner") == 0
    at = app_page("replays")
    at.button(key="replays:start:subspace").click().run()
    assert not started
    assert any("number 1 in line" in w.value for w in tab(at, "subspace").warning)
    slots.release("another learner")
    at.run()
    assert [job.name for job in started] == ["subspace"]


def test_a_failed_live_replay_shows_its_last_output_without_server_paths(app_page, no_results, slots, started):
    at = app_page("replays")
    at.button(key="replays:start:targets").click().run()
    started[0].state = "failed"
    at.run()
    assert not at.exception
    shown = errors(at)
    assert "The replay failed" in shown and "RuntimeError: out of memory" in shown
    assert "/srv/lab" not in shown and "runs.py" in shown
    assert slots.snapshot()["running"] == 0


@needs_results
def test_a_finished_live_replay_shows_its_verdict_and_whether_it_agrees(app_page, results_dir, slots, started,
                                                                       monkeypatch):
    name = next(e.name for e in EXPERIMENTS if record.shipped(e.name, results_dir) is not None)
    shipped = record.shipped(name, results_dir)
    at = app_page("replays")
    at.button(key=f"replays:start:{name}").click().run()
    started[0].final, started[0].state = {**shipped, "scale": "quick"}, "done"
    at.run()
    assert not at.exception
    word = verdicts.verdict(shipped)["verdict"]
    assert boxes(tab(at, name)).count(word) == 2  # the shipped verdict, then the live one
    assert any("agrees with the shipped full run" in s.value for s in tab(at, name).success)
    assert started[0].cancelled and slots.snapshot()["running"] == 0  # its folder is cleaned up, its slot freed

    monkeypatch.setattr(verdicts, "disagreements", lambda a, b: ["The shipped full run says one thing."])
    at.run()
    warned = " ".join(w.value for w in tab(at, name).warning)
    assert "The shipped full run says one thing." in warned and "disagrees with the shipped full run" in warned
    assert "one seed gives no spread" in warned
