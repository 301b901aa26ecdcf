"""The error boundary every page has (issue 11, items 7 and 12): app.py's try around the page, and
pages.common.guarded_fragment around each fragment, whose own reruns never pass through app.py.

Bad input (a ValueError) is shown inline; anything else is a bug: a short message with a reference, the
exception's type and message with server paths cut to file names, and the full traceback in the log only.
"""

import ast
import logging
import re
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from pages.common import without_paths

ROOT = Path(__file__).resolve().parents[1]


def _fragment_page(error: str) -> None:
    """A page with one guarded fragment that raises `error` when its button is pressed (an AppTest script)."""
    import streamlit as st

    from pages.common import guarded_fragment

    @guarded_fragment("the test fragment")
    def part() -> None:
        st.write("fragment drawn")
        if st.button("break"):
            raise {"ValueError": ValueError, "RuntimeError": RuntimeError}[error](
                "r=0 is not allowed in /srv/lab/.venv/lib/python3.11/site-packages/x/y.py")

    part()
    st.write("page after the fragment")


@pytest.mark.parametrize("error", ["ValueError", "RuntimeError"])
def test_a_fragment_error_stays_inside_the_page(error, caplog):
    at = AppTest.from_function(_fragment_page, args=(error,), default_timeout=60).run()
    at.button[0].click().run()
    assert not at.exception, at.exception                     # Streamlit's own traceback box before
    (err,) = at.error
    assert "page after the fragment" in [m.value for m in at.markdown]
    if error == "ValueError":                                  # bad input: its message, inline
        assert err.value == "r=0 is not allowed in /srv/lab/.venv/lib/python3.11/site-packages/x/y.py"
        return
    reference = re.search(r"Reference: ([0-9a-f]{8})\.", err.value).group(1)
    assert err.value.startswith("Something went wrong in the test fragment.")
    (details,) = at.text
    assert details.value == "RuntimeError: r=0 is not allowed in y.py"
    logged = [r for r in caplog.records if r.name == "lora_lab" and reference in r.getMessage()]
    assert logged and logged[0].exc_info is not None           # the traceback, with its paths, is in the log


def test_server_paths_are_cut_to_file_names():
    assert without_paths("No such file: '/work/main/lora_core/serve/uploads.py'") == "No such file: 'uploads.py'"
    assert without_paths(r"in C:\Users\ann\lab\lora_core\fused.py, line 3") == "in fused.py, line 3"
    kept = "16/64 and α/r, https://huggingface.co/docs/peft, /tmp alone"
    assert without_paths(kept) == kept


def test_no_page_calls_st_fragment_directly():
    """Every fragment goes through pages.common.guarded_fragment, so it has the page's boundary."""
    direct = []
    for path in sorted((ROOT / "pages").glob("*.py")):
        if path.name == "common.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Attribute) and node.attr == "fragment" and \
                    isinstance(node.value, ast.Name) and node.value.id == "st":
                direct.append(f"{path.name}:{node.lineno}")
    assert not direct, f"use pages.common.guarded_fragment instead of st.fragment: {direct}"


def test_the_log_line_carries_the_reference_shown(caplog):
    from pages.common import log_unexpected

    try:
        raise KeyError(f"{ROOT}/lora_core/config.py")
    except KeyError as err:
        with caplog.at_level(logging.ERROR, logger="lora_lab"):
            bug = log_unexpected(err, "a test")
    assert re.fullmatch(r"[0-9a-f]{8}", bug.reference) and str(ROOT) not in bug.summary
    assert bug.summary == "KeyError: 'config.py'"
    (record,) = [r for r in caplog.records if r.name == "lora_lab"]
    assert bug.reference in record.getMessage() and "a test" in record.getMessage() and record.exc_info


def test_a_message_quoting_a_regex_shows_it_as_typed_not_as_markdown(app_page):
    """'(.*)*X' in Markdown is '(.)X' with an italic middle; the page escapes what Markdown would act on."""
    from pages.common import as_text
    assert as_text(r"target_modules='(.*)*X' e.g. '.*\.q_proj' costs $5 `x` ~y~ lora_alpha") == \
        r"target_modules='(.\*)\*X' e.g. '.\*\\.q_proj' costs \$5 \`x\` \~y\~ lora_alpha"
    at = app_page("parameters")
    next(t for t in at.text_input if t.label.startswith("…or a regex")).set_value(r"(.*){1,32000}[0-9]").run()
    assert not at.exception
    shown = "\n".join(e.value for e in at.error)
    assert r"target_modules='(.\*){1,32000}[0-9]' is not allowed" in shown and "backtracks without end" in shown
