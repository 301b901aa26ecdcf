"""The room as one experiment, in a real browser: learners share finished runs, a third session sees them on the
Room page within seconds, the teacher unlocks the controls and starts a 2-cell sweep, two new sessions get
different presets, the server restarts, and the board and the sweep are still there.

Timings (seconds from a share click to the Room page showing it) are printed, and written as JSON to
$ROOM_BOARD_REPORT when it is set; only a generous bound is asserted.
"""

from __future__ import annotations

import json
import os
import time

import pytest
from browser_util import exceptions, go_to, metrics, needs_chromium, settings_server, settle, wait_for_text
from test_room import button, configure_run

from lora_core.serve.board import Board

pytestmark = [needs_chromium, pytest.mark.slow]

TOKEN = "browser-room-token"
TOML = f"""
[training]
max_concurrent = 2
heartbeat_seconds = 300

[room]
board_dir = "room"
teacher_token = "{TOKEN}"
"""
SEEN_WITHIN_S = 60  # "within a few seconds": the board redraws every 2 s; a loaded 2-core machine gets slack


def on_board(page) -> int:
    return int(metrics(page).get("results on the board", "-1"))


def board_shows(page, n: int) -> None:
    """Wait until the Room page's "results on the board" reads n (its fragment redraws every 2 s)."""
    page.wait_for_function("""n => {
        const m = [...document.querySelectorAll('[data-testid="stMetric"]')]
            .find(e => e.querySelector('[data-testid="stMetricLabel"]')?.innerText.trim() === 'results on the board');
        return m !== undefined && parseInt(m.querySelector('[data-testid="stMetricValue"]').innerText) === n;
    }""", arg=n, timeout=SEEN_WITHIN_S * 1000)


def open_app(context, url: str, link: str, heading: str):
    page = context.new_page()
    page.goto(url)
    page.wait_for_selector('[data-testid="stSidebar"] a', timeout=180_000)
    settle(page, 180_000)
    go_to(page, link, heading, timeout_ms=240_000)
    return page


def finish_and_share(page, nickname: str) -> float:
    """Train a 2-step run on random distilgpt2, share it; returns the time of the share click."""
    configure_run(page, r=8, steps=2)
    button(page, "Start training").click()
    wait_for_text(page, "held-out BLEU (0–100)", timeout_ms=300_000)
    settle(page, 240_000)
    box = page.get_by_label("nickname", exact=True)
    box.fill(nickname)
    box.press("Tab")
    clicked = time.time()
    button(page, "Share my result").click()
    wait_for_text(page, "On the room's board", timeout_ms=120_000)
    return clicked


def test_three_sessions_share_see_and_sweep_and_a_restart_keeps_the_board(browser, tmp_path):
    report: dict = {}
    contexts = [browser.new_context(viewport={"width": 1400, "height": 1100}) for _ in range(5)]
    with settings_server(tmp_path, TOML) as server:
        # 1. Two learners train and share; a third watches the Room page.
        watcher = open_app(contexts[2], server.url, "Room: the workshop's board", "Room")
        assert on_board(watcher) == 0
        learners = [open_app(c, server.url, "Live fine-tuning", "Live fine-tuning") for c in contexts[:2]]
        seen = []
        for i, page in enumerate(learners, start=1):
            clicked = finish_and_share(page, f"learner <{i}>")
            board_shows(watcher, i)
            seen.append(time.time() - clicked)
        report["seconds_from_share_to_board"] = [round(s, 2) for s in seen]
        assert on_board(watcher) == 2 and metrics(watcher)["nicknames"] == "2"
        # one figure (between two redraws of the fragment a stale copy may show for a moment)
        watcher.wait_for_function("() => document.querySelectorAll('[data-testid=\"stPlotlyChart\"]').length === 1",
                                  timeout=20_000)
        watcher.screenshot(path=str(tmp_path / "room.png"), full_page=True)

        # 2. The watcher is the teacher: a wrong token is refused, the right one (after the pause) unlocks.
        token = watcher.get_by_label("teacher token", exact=True)
        token.fill("a guess")
        button(watcher, "Unlock the teacher's controls").click()
        wait_for_text(watcher, "that is not it")
        time.sleep(1.5)
        token.fill(TOKEN)
        button(watcher, "Unlock the teacher's controls").click()
        wait_for_text(watcher, "Unlocked in this browser session")
        watcher.locator('[data-testid="stSelectbox"]').filter(has=watcher.get_by_text("sweep", exact=True)).click()
        watcher.get_by_role("option", name="your own", exact=True).click()
        values = watcher.get_by_label("your own: values", exact=True)
        values.fill("4, 16")
        values.press("Tab")
        button(watcher, "Start this sweep").click()
        wait_for_text(watcher, "is running: r over 4, 16")

        # 3. Two new sessions open Live fine-tuning and get different cells.
        newcomers = [open_app(c, server.url, "Live fine-tuning", "Live fine-tuning") for c in contexts[3:]]
        wait_for_text(newcomers[0], "gives you r = 4 (seed 0)")
        wait_for_text(newcomers[1], "gives you r = 16 (seed 0)")
        for page in [*learners, watcher, *newcomers]:
            assert exceptions(page) == 0

    # 4. The server restarts on the same folder: the board and the sweep are complete.
    lines = (tmp_path / "room" / "board.jsonl").read_bytes().splitlines()
    report["board_bytes"] = (tmp_path / "room" / "board.jsonl").stat().st_size
    assert len(lines) == 2 and len(Board(tmp_path / "room").entries()) == 2
    with settings_server(tmp_path, TOML) as server:
        again = open_app(contexts[2], server.url, "Room: the workshop's board", "Room")
        wait_for_text(again, "is running: r over 4, 16")
        assert on_board(again) == 2 and exceptions(again) == 0
        third = open_app(browser.new_context(), server.url, "Live fine-tuning", "Live fine-tuning")
        wait_for_text(third, "gives you r = 4 (seed 1)")  # both cells taken once: the next is a repeat
    print("room board:", json.dumps(report))
    if os.environ.get("ROOM_BOARD_REPORT"):
        with open(os.environ["ROOM_BOARD_REPORT"], "w") as f:
            json.dump(report, f, indent=1)
