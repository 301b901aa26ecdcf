"""What the browser tests share: a `streamlit run app.py` server, Debian's chromium, and small page helpers.

Uses Debian's chromium (`apt-get install chromium`) through Playwright (never `playwright install`);
`make test` installs both. Tests that import this skip themselves when chromium is missing.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = os.environ.get("LORA_LAB_CHROMIUM", "/usr/bin/chromium")
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync"]
SHOTS = Path(os.environ.get("LORA_LAB_SCREENSHOTS", "/tmp/lora_lab_screens"))
EXCEPTION = '[data-testid="stException"]'

needs_chromium = pytest.mark.skipif(not shutil.which(CHROMIUM), reason=f"no chromium at {CHROMIUM}")


@dataclass
class Server:
    url: str
    proc: subprocess.Popen
    lines: list[str] = field(default_factory=list)  # the server's output so far (read on a thread, so the
                                                     # pipe never fills up and blocks the server's logging)

    def log(self) -> str:
        return "".join(self.lines)

    def _read(self) -> None:
        for line in iter(self.proc.stdout.readline, b""):
            self.lines.append(line.decode(errors="replace"))

    def healthy(self) -> bool:
        try:
            return urllib.request.urlopen(f"{self.url}/_stcore/health", timeout=5).read() == b"ok"
        except OSError:
            return False


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def streamlit_server(env: dict[str, str] | None = None, timeout_s: float = 60) -> Iterator[Server]:
    """`streamlit run app.py` on a free local port, healthy before it is yielded; stopped afterwards.

    The file watcher is off: other work in the checkout must not make the app ask to rerun mid-test.
    """
    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-m", "streamlit", "run", "app.py", "--server.address", "127.0.0.1",
                             "--server.port", str(port), "--server.headless", "true",
                             "--server.fileWatcherType", "none"],
                            cwd=ROOT, env={**os.environ, "HF_HUB_OFFLINE": "1", **(env or {})},
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    server = Server(f"http://127.0.0.1:{port}", proc)
    threading.Thread(target=server._read, daemon=True).start()
    deadline = time.time() + timeout_s
    while not server.healthy():
        if time.time() > deadline or proc.poll() is not None:
            proc.kill()
            pytest.fail(f"streamlit did not become healthy in {timeout_s:.0f} s:\n" + server.log()[-2000:])
        time.sleep(0.3)
    try:
        yield server
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:  # a busy script thread can hold shutdown up: do not hang the run
            proc.kill()
            proc.wait(timeout=10)


@contextmanager
def settings_server(folder: Path, toml: str) -> Iterator[Server]:
    """`streamlit_server` under a settings file holding `toml` (written into `folder`), e.g. a small room."""
    settings = folder / "lora_lab.toml"
    settings.write_text(toml)
    with streamlit_server(env={"LORA_LAB_SETTINGS": str(settings)}) as server:
        yield server


@contextmanager
def chromium() -> Iterator:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            yield browser
        finally:
            browser.close()


def settle(page, timeout_ms: int = 90_000) -> None:
    """Wait until the script finished running (no 'Running…' status) and the page has content."""
    page.wait_for_selector('[data-testid="stMain"]', timeout=timeout_ms)
    page.wait_for_selector('[data-testid="stApp"][data-test-script-state="notRunning"]', timeout=timeout_ms)


def go_to(page, link_text: str, heading: str, timeout_ms: int = 120_000) -> None:
    """Follow one of app.py's sidebar links (same session) and wait for the page's title."""
    page.locator('[data-testid="stSidebar"] a', has_text=link_text).click()
    page.wait_for_selector(f"h1:has-text('{heading}')", timeout=timeout_ms)
    settle(page, timeout_ms)


def metrics(page) -> dict[str, str]:
    """{label: value} of every st.metric on the page right now."""
    return page.evaluate("""() => Object.fromEntries([...document.querySelectorAll('[data-testid="stMetric"]')]
        .map(m => [m.querySelector('[data-testid="stMetricLabel"]')?.innerText.trim(),
                   m.querySelector('[data-testid="stMetricValue"]')?.innerText.trim()]))""")


def wait_for_text(page, text: str, timeout_ms: int = 120_000) -> None:
    page.wait_for_function("t => document.body.innerText.includes(t)", arg=text, timeout=timeout_ms)


def exceptions(page) -> int:
    return page.locator(EXCEPTION).count()
