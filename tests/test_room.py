"""A workshop room in one test: six browser sessions on one `streamlit run app.py` with two training slots.

Each session sets its own rank and must keep seeing its own numbers while the others change theirs;
two sessions train at once, a third queues as number 1 and gets the slot when one of them stops; the
first one switches pages and comes back to its stopped run. Nothing may raise, and the
server must still answer its health check at the end.

The server's memory is measured on the way (RSS of the streamlit process: one idle session, six idle
sessions, the peak while two runs train) and printed; with ROOM_REPORT=path it is also written there
as JSON. Only generous bounds are asserted (an idle session costs < 50 MB, the peak < 6 GB); timings
are printed, never asserted.
"""

from __future__ import annotations

import itertools
import json
import os
import statistics
import threading
import time
from pathlib import Path

import pytest
from browser_util import (
    SHOTS,
    exceptions,
    go_to,
    metrics,
    needs_chromium,
    settings_server,
    settle,
    wait_for_text,
)

pytestmark = [needs_chromium, pytest.mark.slow]

SESSIONS = 6
PARAM_RANKS = [1, 2, 4, 8, 16, 32, 64, 128, 256]  # the Parameters page's r slider, default 8
FORM_RANKS = [1, 2, 4, 8, 16, 32, 64]              # the Fine-tuning form's r slider, default 8
OWN_R = [1, 2, 4, 16, 32, 64]                      # one rank per session on the Parameters page
C_ATTN_PER_R = 6 * (768 + 2304)                    # distilgpt2: 6 blocks of c_attn, 768 → 2304
IDLE_MB_GOAL = 50
PEAK_MB_BOUND = 6 * 1024
ROOM_TOML = """
[limits]
max_upload_bytes = 4096        # small, so the browser can send an over-the-limit file cheaply

[training]
max_concurrent = 2
heartbeat_seconds = 300        # a busy 2-core machine must not expire a slot between two fragment ticks
"""
# A file the uploader accepts (.jsonl) that is none of what the page wants, and what it must say.
BAD_UPLOADS = [
    ("empty.jsonl", b"", "is empty"),
    ("binary.jsonl", bytes(range(256)) * 4, "is not UTF-8 text (bad byte at offset 128)"),
    ("latin1.jsonl", '{"prompt": "caf\xe9", "completion": "ol\xe9"}\n'.encode("latin-1"),
     "is not UTF-8 text (bad byte at offset 15)"),
    ("huge.jsonl", b'{"prompt": "a", "completion": "b"}\n' * 200, "upload_bytes=7,000 is over this server's limit"),
]


# --- memory -----------------------------------------------------------------------------------------
def rss_mb(pid: int) -> float:
    """Resident memory of `pid` in MB (psutil when installed, else /proc)."""
    try:
        import psutil
    except ImportError:
        return _proc_status_mb(pid, "VmRSS")
    return psutil.Process(pid).memory_info().rss / 2**20


def _proc_status_mb(pid: int, key: str) -> float | None:
    """A memory line of /proc/<pid>/status in MB, or None off Linux."""
    try:
        lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    except OSError:
        return None
    return next((int(line.split()[1]) / 1024 for line in lines if line.startswith(f"{key}:")), None)  # kB


def anon_mb(pid: int) -> float | None:
    """Anonymous resident memory (heap, tensors): RSS without file-backed pages such as mapped weights.

    Mapped pages come and go from RSS with the page cache, so a per-session difference is read here too.
    """
    return _proc_status_mb(pid, "RssAnon")


def high_water_mb(pid: int) -> float | None:
    """The kernel's peak RSS of `pid` since it started (VmHWM), or None off Linux."""
    return _proc_status_mb(pid, "VmHWM")


class PeakSampler(threading.Thread):
    """Samples a process's RSS every `every` seconds until stopped; `.peak` is the largest sample."""

    def __init__(self, pid: int, every: float = 0.25):
        super().__init__(daemon=True)
        self.pid, self.every, self.peak = pid, every, 0.0
        self._stop_event = threading.Event()

    def run(self) -> None:
        while not self._stop_event.is_set():
            try:
                self.peak = max(self.peak, rss_mb(self.pid))
            except Exception:  # the server is gone: the test fails elsewhere, quietly end here
                return
            self._stop_event.wait(self.every)

    def stop(self) -> float:
        self._stop_event.set()
        self.join(timeout=5)
        return self.peak


# --- page helpers -----------------------------------------------------------------------------------
def step_at_least(page, n: int, timeout_ms: int = 180_000) -> None:
    page.wait_for_function("""n => {
        const m = [...document.querySelectorAll('[data-testid="stMetric"]')]
            .find(e => e.querySelector('[data-testid="stMetricLabel"]')?.innerText.trim() === 'step');
        return m !== undefined && parseInt(m.querySelector('[data-testid="stMetricValue"]').innerText) >= n;
    }""", arg=n, timeout=timeout_ms)


def press_slider(page, steps: int, which: int = 0) -> None:
    """Move the `which`-th slider of the page by `steps` options (negative: to the left)."""
    thumb = page.locator('[data-testid="stSlider"] input[type="range"]').nth(which)
    thumb.focus()
    for _ in range(abs(steps)):
        thumb.press("ArrowRight" if steps > 0 else "ArrowLeft")


def set_own_rank(page, r: int) -> None:
    press_slider(page, PARAM_RANKS.index(r) - PARAM_RANKS.index(8))
    wait_for_text(page, f"trainable params: {C_ATTN_PER_R * r:,} ||", timeout_ms=60_000)


def configure_run(page, r: int, steps: int) -> None:
    """Fine-tuning page: random-weight distilgpt2, short examples, small batches, rank r (nothing starts)."""
    page.locator('[data-testid="stSelectbox"]').first.click()
    page.get_by_role("option", name="distilgpt2-random (random weights)").click()
    settle(page, 180_000)
    press_slider(page, FORM_RANKS.index(r) - FORM_RANKS.index(8))
    for label, value in (("steps", steps), ("sequence length", 16), ("batch size", 2)):
        box = page.get_by_label(label, exact=True)
        box.fill(str(value))
        box.press("Tab")                     # commit the value; Enter would submit the form


def button(page, name: str):
    """A button of the page itself (the header has a "Stop" of its own, for a running script)."""
    return page.locator('[data-testid="stMain"]').get_by_role("button", name=name, exact=True)


def start(page) -> None:
    button(page, "Start training").click()


def stop(page) -> None:
    button(page, "Stop").click()
    wait_for_text(page, "status: stopped", timeout_ms=240_000)
    wait_for_text(page, "held-out BLEU (0–100)", timeout_ms=240_000)
    settle(page, 240_000)


def in_line(page) -> bool:
    return "in line" in page.inner_text('[data-testid="stMain"]')


# --- fixtures ---------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def room(tmp_path_factory):
    with settings_server(tmp_path_factory.mktemp("room"), ROOM_TOML) as server:
        yield server


# --- the room ---------------------------------------------------------------------------------------
def test_six_sessions_keep_their_own_state_and_queue_for_two_training_slots(room, browser):
    t0 = time.perf_counter()
    pid, report = room.proc.pid, {"sessions": SESSIONS, "training_slots": 2}
    contexts = [browser.new_context(viewport={"width": 1400, "height": 1000}) for _ in range(SESSIONS)]
    pages = [c.new_page() for c in contexts]

    def tour(page, r: int) -> None:
        """What a student does first: the home page, a look at fine-tuning, then the ledger at their own r."""
        page.goto(room.url)
        page.wait_for_selector('[data-testid="stSidebar"] a', timeout=180_000)
        settle(page, 180_000)
        go_to(page, "Live fine-tuning", "Live fine-tuning", timeout_ms=240_000)
        wait_for_text(page, "No run yet", timeout_ms=240_000)
        go_to(page, "Parameters: the ledger", "Parameters")
        set_own_rank(page, r)

    # 1. One idle session (it also loads the shared models and caches), then five more, one at a time.
    rss, anon = [], []
    for page, r in zip(pages, OWN_R, strict=True):
        tour(page, r)
        time.sleep(1)
        rss.append(rss_mb(pid))
        anon.append(anon_mb(pid))
    # delta / 5 as asked; the median step is robust to one-off releases (the server's RSS drops ~20 MB once,
    # about a minute after it starts, whatever the sessions do) and to a one-off growth alike.
    per_session = [(rss[-1] - rss[0]) / (SESSIONS - 1), statistics.median(b - a for a, b in itertools.pairwise(rss))]
    report |= {"rss_one_idle_session_mb": rss[0], "rss_six_idle_sessions_mb": rss[-1],
               "idle_rss_mb_per_extra_session": per_session[0], "idle_rss_mb_median_step": per_session[1],
               "rss_after_each_session_mb": [round(x, 1) for x in rss]}
    if None not in anon:
        report |= {"anon_after_each_session_mb": [round(x, 1) for x in anon],
                   "idle_anon_mb_per_extra_session": (anon[-1] - anon[0]) / (SESSIONS - 1)}
    report["seconds_to_six_idle_sessions"] = time.perf_counter() - t0

    # 2. No leaks: after every other session moved its slider, each still shows its own count.
    for page, r in zip(pages, OWN_R, strict=True):
        button(page, "Verify with PEFT").click()   # a rerun, checked against PEFT too
        wait_for_text(page, "Identical: same trainable count", timeout_ms=120_000)
        main = page.inner_text('[data-testid="stMain"]')
        assert f"trainable params: {C_ATTN_PER_R * r:,} ||" in main
        assert not [n for n in OWN_R if n != r and f"trainable params: {C_ATTN_PER_R * n:,} ||" in main]

    # 3. Two sessions train at once; a third waits as number 1 and gets the slot when one stops.
    a, b, c = pages[:3]
    ranks = {0: 4, 1: 16, 2: 8}
    for i, page in enumerate((a, b, c)):
        go_to(page, "Live fine-tuning", "Live fine-tuning", timeout_ms=240_000)
        configure_run(page, ranks[i], steps=2000)
    sampler = PeakSampler(pid)
    sampler.start()
    t_train = time.perf_counter()
    start(a)
    start(b)
    for page in (a, b):
        wait_for_text(page, "status: running", timeout_ms=240_000)
        step_at_least(page, 1)
    report["seconds_until_both_train"] = time.perf_counter() - t_train
    start(c)
    wait_for_text(c, "you are number 1 in line", timeout_ms=240_000)
    assert "(2 of 2 slots busy)" in c.inner_text('[data-testid="stMain"]')
    assert not in_line(a) and not in_line(b)
    t_stop = time.perf_counter()
    stop(a)
    step_at_least(c, 1)                                               # c got a's slot and trains
    wait_for_text(c, "status: running")
    c.wait_for_function("() => !document.body.innerText.includes('in line')", timeout=60_000)
    report["seconds_from_stop_to_next_in_line_training"] = time.perf_counter() - t_stop
    step_at_least(b, 2)                                               # b kept training all along
    for page in (b, c):                                               # pausing frees the CPU and the slots at once
        button(page, "Pause").click()
        wait_for_text(page, "status: paused")
    report["peak_rss_while_training_mb"] = sampler.stop()
    report["vm_hwm_mb"] = high_water_mb(pid)

    # 4. Each run is its own: rank, adapter size, status. a leaves the page and comes back to its run.
    a_step = metrics(a)["step"]
    go_to(a, "Parameters: the ledger", "Parameters")
    go_to(a, "Live fine-tuning", "Live fine-tuning", timeout_ms=240_000)
    wait_for_text(a, "held-out BLEU (0–100)")
    wait_for_text(a, "the adapter only fits this exact random base")    # the run's base, not the reset selectbox
    for page, r, status in ((a, 4, "stopped"), (b, 16, "paused"), (c, 8, "paused")):
        settle(page)
        shown = metrics(page)
        assert shown["trainable"] == f"{C_ATTN_PER_R * r:,}", (r, shown)
        assert f"status: {status}" in page.inner_text('[data-testid="stMain"]')
    assert metrics(a)["step"] == a_step

    # 5. Bad input on a page that holds results: a clear message, and the stopped run stays on screen.
    a.locator('[data-testid="stSelectbox"]').filter(has=a.get_by_text("data", exact=True)).click()
    a.get_by_role("option", name="upload a .jsonl").click()
    for name, data, message in BAD_UPLOADS:
        a.locator('[data-testid="stFileUploader"] input[type="file"]').set_input_files(
            files=[{"name": name, "mimeType": "application/octet-stream", "buffer": data}])
        a.wait_for_selector(f'[data-testid="stFileChipName"]:has-text("{name}")', timeout=30_000)
        start(a)
        a.wait_for_selector(f'[data-testid="stAlertContentError"]:has-text("{message}")', timeout=60_000)
        settle(a)
        assert metrics(a)["trainable"] == f"{C_ATTN_PER_R * 4:,}" and metrics(a)["step"] == a_step, name
    prompt = a.get_by_label("Try a prompt with the adapter on and off")
    prompt.fill("tell me more " * 400)                                 # 1,201 tokens, past distilgpt2's 1,024
    prompt.press("Tab")
    button(a, "Generate both ways").click()
    a.wait_for_selector('[data-testid="stAlertContentError"]:has-text("reads at most 1,024 positions")', timeout=60_000)
    settle(a)
    assert metrics(a)["trainable"] == f"{C_ATTN_PER_R * 4:,}"

    # 6. Nobody saw an exception, and the server is still up.
    SHOTS.mkdir(parents=True, exist_ok=True)
    for i, page in enumerate(pages):
        page.screenshot(path=str(SHOTS / f"room_{i}.png"), full_page=True)
        assert exceptions(page) == 0, f"session {i} shows an exception"
    assert room.proc.poll() is None and room.healthy()
    report["seconds_total"] = time.perf_counter() - t0

    print("\nroom report: " + json.dumps({k: round(v, 1) if isinstance(v, float) else v
                                          for k, v in report.items()}))
    if os.environ.get("ROOM_REPORT"):
        Path(os.environ["ROOM_REPORT"]).write_text(json.dumps(report, indent=1))
    for ctx in contexts:
        ctx.close()
    assert max(per_session) < IDLE_MB_GOAL, f"an idle session costs {max(per_session):.1f} MB (goal < {IDLE_MB_GOAL})"
    assert report["peak_rss_while_training_mb"] < PEAK_MB_BOUND
