"""The room, attacked: one learner's input must never freeze or break anyone else's session.

On one `streamlit run app.py` with one training slot:
  * a session sends pathological regexes while another keeps working, and the server's health check
    keeps answering within a second;
  * a session hammers page switches and Pause/Resume while training: the buttons end up matching the
    run, and nothing reaches the server log as an exception;
  * a reload mid-training finds its run again;
  * a tab closed mid-training gives its slot to the next in line at once (not after the heartbeat).
"""

from __future__ import annotations

import threading
import time
import urllib.request

import pytest
from browser_util import exceptions, go_to, metrics, needs_chromium, settings_server, settle, wait_for_text
from test_room import PARAM_RANKS, button, configure_run, press_slider, set_own_rank, start, step_at_least

pytestmark = [needs_chromium, pytest.mark.slow]

HEALTH_BOUND_S = 1.0
ROOM_TOML = """
[training]
max_concurrent = 1
heartbeat_seconds = 600        # so only the closed-tab sweep, never the heartbeat, can free a slot here
"""
BUG_SIGNS = ("Traceback", "unexpected error in", "This is a bug")


class HealthPoller(threading.Thread):
    """GETs /_stcore/health every 0.1 s and keeps each answer's latency."""

    def __init__(self, url: str):
        super().__init__(daemon=True)
        self.url, self.latencies, self.at, self.failures = f"{url}/_stcore/health", [], [], 0
        self._stop_event = threading.Event()

    def run(self) -> None:
        while not self._stop_event.is_set():
            t = time.perf_counter()
            try:
                urllib.request.urlopen(self.url, timeout=10).read()
                self.latencies.append(time.perf_counter() - t)
                self.at.append(t)
            except OSError:
                self.failures += 1
            self._stop_event.wait(0.1)

    def stop(self) -> list[float]:
        self._stop_event.set()
        self.join(timeout=15)
        return self.latencies


@pytest.fixture(scope="module")
def room(tmp_path_factory):
    with settings_server(tmp_path_factory.mktemp("room_proof"), ROOM_TOML) as server:
        yield server


def open_page(browser, room, link: str, heading: str):
    page = browser.new_context(viewport={"width": 1400, "height": 1000}).new_page()
    page.goto(room.url)
    page.wait_for_selector('[data-testid="stSidebar"] a', timeout=180_000)
    settle(page, 180_000)
    go_to(page, link, heading, timeout_ms=240_000)
    return page


def no_bug_in(room, *pages) -> None:
    log = room.log()
    assert not [s for s in BUG_SIGNS if s in log], log[-4000:]
    for page in pages:
        assert exceptions(page) == 0 and "This is a bug" not in page.inner_text("body")


def test_a_pathological_regex_never_freezes_the_room(room, browser):
    attacker = open_page(browser, room, "Parameters: the ledger", "Parameters")
    other = open_page(browser, room, "Parameters: the ledger", "Parameters")
    set_own_rank(other, 16)
    poller = HealthPoller(room.url)
    poller.start()
    box = attacker.get_by_label("…or a regex over full module names (used when set)")
    for pattern, message in ((r"(.*)*X", "matches no module of this model"),
                             (r"(.*){1,32000}[0-9]", "backtracks without end")):
        box.fill(pattern)
        box.press("Tab")
        press_slider(other, 1)                                   # the other learner keeps working meanwhile
        attacker.wait_for_selector(f'[data-testid="stAlertContentError"]:has-text("{message}")', timeout=60_000)
    wait_for_text(other, f"trainable params: {6 * (768 + 2304) * PARAM_RANKS[PARAM_RANKS.index(16) + 2]:,} ||",
                  timeout_ms=60_000)
    latencies = poller.stop()
    slowest = sorted(zip(latencies, poller.at, strict=True), reverse=True)[:5]
    print(f"\nhealth while attacked: {len(latencies)} answers, failures {poller.failures}, slowest "
          + ", ".join(f"{lat:.3f} s at +{t - poller.at[0]:.1f} s" for lat, t in slowest))
    assert poller.failures == 0 and max(latencies) < HEALTH_BOUND_S
    no_bug_in(room, attacker, other)


def _status(page) -> str:
    main = page.inner_text('[data-testid="stMain"]')
    return next(s for s in ("running", "paused", "stopped", "done") if f"status: {s}" in main)


def test_hammering_switches_and_pause_resume_while_training_leaves_a_consistent_run(room, browser):
    from playwright.sync_api import expect

    page = open_page(browser, room, "Live fine-tuning", "Live fine-tuning")
    configure_run(page, 8, steps=2000)
    start(page)
    wait_for_text(page, "status: running", timeout_ms=240_000)
    step_at_least(page, 1)
    for _ in range(4):                                           # Home ↔ Live fine-tuning, fast
        page.locator('[data-testid="stSidebar"] a', has_text="Home").click()
        page.locator('[data-testid="stSidebar"] a', has_text="Live fine-tuning").click()
    page.wait_for_selector("h1:has-text('Live fine-tuning')", timeout=120_000)
    for _ in range(3):                                           # Pause/Resume as fast as the buttons allow
        button(page, "Pause").click()
        button(page, "Resume").click()
    # While it trains, the live fragment reruns back to back (each tick trains for a second), so on a loaded
    # machine the script may never be seen idle (settle() timed out that way in 1 of 3 runs): wait for the
    # state the last click (Resume) must lead to, then check that it holds.
    wait_for_text(page, "status: running", timeout_ms=90_000)
    expect(button(page, "Pause")).to_be_enabled(timeout=90_000)
    expect(button(page, "Resume")).to_be_disabled(timeout=90_000)
    time.sleep(2)
    assert _status(page) == "running"                            # the last click was Resume, and it counted
    assert not button(page, "Pause").is_disabled() and button(page, "Resume").is_disabled()
    step = int(metrics(page)["step"].split("/")[0])
    step_at_least(page, step + 1)                                # and it trains on
    button(page, "Pause").click()
    wait_for_text(page, "status: paused")
    settle(page)
    assert button(page, "Pause").is_disabled() and not button(page, "Resume").is_disabled()
    no_bug_in(room, page)

    # A reload is a new session: the run's id in the URL finds the same run, at the same step.
    paused_at = metrics(page)["step"]
    page.reload()
    page.wait_for_selector("h1:has-text('Live fine-tuning')", timeout=120_000)
    wait_for_text(page, "status: paused", timeout_ms=120_000)
    settle(page)
    assert metrics(page)["step"] == paused_at
    button(page, "Resume").click()
    step_at_least(page, int(paused_at.split("/")[0]) + 1)
    page.reload()                                                # ... also while it trains
    wait_for_text(page, "status: running", timeout_ms=120_000)
    step_at_least(page, int(paused_at.split("/")[0]) + 2)
    no_bug_in(room, page)

    # That tab closes mid-training: the next in line gets the slot at once.
    waiting = open_page(browser, room, "Live fine-tuning", "Live fine-tuning")
    configure_run(waiting, 4, steps=2000)
    start(waiting)
    wait_for_text(waiting, "you are number 1 in line", timeout_ms=240_000)
    closed_at = time.perf_counter()
    page.context.close()
    step_at_least(waiting, 1, timeout_ms=120_000)
    freed_after = time.perf_counter() - closed_at
    print(f"\nslot freed {freed_after:.1f} s after the tab closed (heartbeat: 600 s)")
    assert freed_after < 120
    button(waiting, "Stop").click()
    wait_for_text(waiting, "status: stopped", timeout_ms=240_000)
    no_bug_in(room, waiting)
    assert room.healthy()
