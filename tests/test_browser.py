"""A real browser against `streamlit run app.py`: every page renders, charts draw, a slider moves numbers.

Uses Debian's chromium (`apt-get install chromium`) through Playwright; `make test` installs both.
"""

import pytest
from browser_util import SHOTS, needs_chromium, streamlit_server
from browser_util import settle as _settle

PAGES = {"": "LoRA Lab", "parameters": "Parameters", "anatomy": "Anatomy", "rank_svd": "Rank and SVD",
         "scaling": "Scaling", "qlora": "QLoRA", "memory": "Memory", "speed": "Speed",
         "replays": "Research replays", "merging": "Merging studio", "variants": "Variants"}
# Pages that may draw no chart until asked.
TEXT_ONLY = {"interview": "Interview prep", "claims": "Claims check", "adapters": "Load an adapter",
             "room": "Room"}

# Live fine-tuning is driven end to end by test_training_in_the_browser_survives_a_page_switch and test_room*.py.
TRAINED = {"finetune"}


def test_the_walk_covers_the_page_registry():
    """A page added to pages/common.PAGES must be added here too, or the browser never opens it."""
    from pages.common import PAGES as REGISTRY
    registered = {p.path.removeprefix("pages/").removesuffix(".py") for p in REGISTRY}
    walked = {path or "home" for path in PAGES} | set(TEXT_ONLY) | TRAINED
    assert registered == walked, (f"not walked: {sorted(registered - walked)}; "
                                  f"not registered: {sorted(walked - registered)}")


pytestmark = needs_chromium


@pytest.fixture(scope="module")
def server(browser):
    with streamlit_server() as srv:
        yield srv.url


def test_a_shared_page_link_on_a_fresh_server_gets_the_whole_app(browser):
    """A teacher starts the server and shares /finetune: the first visitor must get app.py's sidebar.

    Without pages/__init__.py, Streamlit's older `pages/` folder mode runs the page file alone (no links).
    """
    with streamlit_server() as srv:
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.goto(f"{srv.url}/finetune")
        page.wait_for_selector('[data-testid="stSidebar"] a', timeout=120_000)
        _settle(page)
        links = page.locator('[data-testid="stSidebar"] a').all_inner_texts()
        assert any("Live fine-tuning" in t for t in links) and any("Speed" in t for t in links)
        assert page.locator("h1").first.inner_text() == "Live fine-tuning"
        assert page.locator('[data-testid="stException"]').count() == 0
        page.close()


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
    steps.press("Tab")                                           # Enter would submit the form by itself
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
