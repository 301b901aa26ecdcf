"""A real browser against `streamlit run app.py`: every page renders, charts draw, a slider moves numbers.

Uses Debian's chromium (`apt-get install chromium`) through Playwright; `make test` installs both.
"""

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = os.environ.get("LORA_LAB_CHROMIUM", "/usr/bin/chromium")
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync"]
PAGES = {"": "LoRA Lab", "parameters": "Parameters", "anatomy": "Anatomy", "rank_svd": "Rank and SVD",
         "scaling": "Scaling", "qlora": "QLoRA"}
TEXT_ONLY = {"interview": "Interview prep", "claims": "Claims check"}  # may draw no chart until asked
SHOTS = Path(os.environ.get("LORA_LAB_SCREENSHOTS", "/tmp/lora_lab_screens"))

pytestmark = pytest.mark.skipif(not shutil.which(CHROMIUM), reason=f"no chromium at {CHROMIUM}")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server():
    port = _free_port()
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "streamlit", "run", "app.py", "--server.address", "127.0.0.1",
                             "--server.port", str(port), "--server.headless", "true"],
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 60
    while time.time() < deadline:
        try:
            if urllib.request.urlopen(f"{url}/_stcore/health", timeout=1).read() == b"ok":
                break
        except OSError:
            time.sleep(0.3)
    else:
        proc.kill()
        pytest.fail("streamlit did not become healthy in 60 s:\n" + proc.stdout.read().decode()[-2000:])
    yield url
    proc.terminate()  # a run still stepping can keep the server busy for a while on a loaded machine
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield b
        b.close()


def _settle(page, timeout_ms: int = 90_000) -> None:
    """Wait until the script finished running (no 'Running…' status) and the page has content."""
    page.wait_for_selector('[data-testid="stMain"]', timeout=timeout_ms)
    page.wait_for_selector('[data-testid="stApp"][data-test-script-state="notRunning"]', timeout=timeout_ms)


@pytest.mark.parametrize("path,title", PAGES.items(), ids=[p or "home" for p in PAGES])
def test_every_page_renders_with_charts_and_no_exception(server, browser, path, title):
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.goto(f"{server}/{path}")
    page.wait_for_selector(".js-plotly-plot .main-svg", timeout=90_000)
    _settle(page)
    assert title in page.inner_text('[data-testid="stMain"]')
    assert page.locator('[data-testid="stException"]').count() == 0
    assert page.locator(".js-plotly-plot").count() >= 1
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / f"{path or 'home'}.png"), full_page=True)
    page.close()


@pytest.mark.parametrize("path,title", TEXT_ONLY.items())
def test_text_pages_render_without_exception(server, browser, path, title):
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.goto(f"{server}/{path}")
    page.wait_for_selector(f"h1:has-text('{title}')", timeout=120_000)
    _settle(page, timeout_ms=180_000)
    assert page.locator('[data-testid="stException"]').count() == 0
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / f"{path}.png"), full_page=True)
    page.close()


def test_moving_the_rank_slider_changes_the_count(server, browser):
    page = browser.new_page()
    page.goto(server)
    page.wait_for_selector('[data-testid="stCode"]', timeout=90_000)
    _settle(page)
    code = page.locator('[data-testid="stCode"]').first
    assert "trainable params: 147,456" in code.inner_text()
    thumb = page.locator('[data-testid="stSlider"] input[type="range"]').first
    thumb.focus()
    thumb.press("ArrowRight")                                    # r: 8 → 16
    page.wait_for_function("() => document.body.innerText.includes('trainable params: 294,912')", timeout=30_000)
    assert page.locator('[data-testid="stException"]').count() == 0
    page.close()


def test_training_in_the_browser_survives_a_page_switch(server, browser):
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.goto(f"{server}/finetune")
    page.wait_for_selector("text=No run yet", timeout=90_000)
    page.locator('[data-testid="stSelectbox"]').first.click()
    page.get_by_role("option", name="distilgpt2-random (random weights)").click()
    _settle(page)
    steps = page.get_by_label("steps")
    steps.fill("3")
    steps.press("Enter")
    page.get_by_role("button", name="Start training").click()
    page.wait_for_selector("text=held-out BLEU (0–100)", timeout=180_000)   # the run finished and was scored
    _settle(page)
    assert page.locator('[data-testid="stException"]').count() == 0
    assert page.locator(".js-plotly-plot").count() >= 2                       # loss and perplexity charts
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / "finetune.png"), full_page=True)
    page.locator('[data-testid="stSidebar"] a', has_text="Rank and SVD").click()  # same session
    page.wait_for_selector("text=distilgpt2-random r=8 (3 steps)", timeout=90_000)
    assert page.locator('[data-testid="stException"]').count() == 0
    page.close()
