"""AppTest on app.py, the router: the sidebar names the model and device and lists the page registry, Home links
every page of the registry, and every page opens through app.py's navigation without an exception."""

from pathlib import Path

import pytest
from conftest import PAGE_FILES

from pages.common import HOME, PAGES


def test_sidebar_names_the_model_and_device(app_page):
    at = app_page("home")
    text = " ".join(c.value for c in at.sidebar.caption)
    assert "Device:" in text and "Model:" in text


def test_home_links_every_page_of_the_registry(app_page):
    at = app_page("home")
    linked = [link.proto.page for link in at.main.get("page_link")]
    assert linked == [Path(p.path).stem for p in PAGES if p.path != HOME]      # every page, in teaching order
    assert {"adapters", "speed"} <= set(linked)                                 # the two Home used to miss


def test_the_sidebar_lists_the_registry(app_page):
    at = app_page("home")
    assert [link.proto.label for link in at.sidebar.get("page_link")] == [p.title for p in PAGES]


def test_the_sidebar_share_is_the_ledgers(app_page):
    at = app_page("home")
    text = " ".join(c.value for c in at.sidebar.caption)
    assert "24,576 numbers train beside a frozen W of 1,769,472 (1.39%)" in text   # 8·(768+2304) / (768·2304)


def test_the_page_fixture_takes_the_registrys_names(app_page):
    assert list(PAGE_FILES) == [Path(p.path).stem for p in PAGES] and PAGE_FILES["home"] == HOME
    with pytest.raises(ValueError, match=r"name='parameters.py' is not allowed: use one of home, parameters, "):
        app_page("parameters.py")


@pytest.mark.slow
def test_every_page_renders_through_the_app(app_page):
    """Each registered page, opened through app.py's navigation as a browser does, draws without an exception
    and with app.py's sidebar around it."""
    at = app_page("home")
    for page in PAGES:
        at.switch_page(page.path).run()
        assert not at.exception, (page.path, at.exception)
        assert not any("Something went wrong" in e.value for e in at.error), page.path   # app.py's guard
        assert [link.proto.label for link in at.sidebar.get("page_link")] == [p.title for p in PAGES], page.path
