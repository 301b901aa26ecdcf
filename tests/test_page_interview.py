"""AppTest on pages/interview.py and pages/claims.py by themselves: the quiz checks answers, the bank and the
claims check render every row without an exception."""

from pathlib import Path

from streamlit.testing.v1 import AppTest

PAGES = Path(__file__).resolve().parents[1] / "pages"
TIMEOUT = 300  # the first run computes the bank and the claims evidence (cached afterwards)


def _run(page: str) -> AppTest:
    at = AppTest.from_file(str(PAGES / page), default_timeout=TIMEOUT)
    at.run()
    assert not at.exception, at.exception
    return at


def _answer(at: AppTest, text: str) -> AppTest:
    draws = at.session_state["interview:draws"]
    at.text_input(key=f"interview:answer:{draws}").set_value(text)
    next(b for b in at.button if b.label == "Check").click()
    at.run()
    assert not at.exception, at.exception
    return at


def test_a_right_answer_is_accepted():
    at = _run("interview.py")
    at.selectbox(key="interview:topic").set_value("counting").run()
    q = at.session_state["interview:q"]
    assert q.topic == "counting" and q.numeric
    _answer(at, q.expected_text)
    assert at.success and at.success[0].value.startswith("Accepted") and not at.error


def test_a_wrong_answer_is_explained_with_the_formula():
    at = _run("interview.py")
    at.selectbox(key="interview:topic").set_value("counting").run()
    q = at.session_state["interview:q"]
    _answer(at, "1")
    (err,) = at.error
    assert "Not quite" in err.value and q.formula in err.value and q.expected_text in err.value


def test_new_question_draws_again_and_a_concept_is_explained():
    at = _run("interview.py")
    at.selectbox(key="interview:topic").set_value("variants").run()
    first = at.session_state["interview:q"]
    next(b for b in at.button if b.label == "New question").click().run()
    assert not at.exception and at.session_state["interview:draws"] > 1
    q = at.session_state["interview:q"]
    assert q.topic == "variants" and not q.numeric and first.topic == "variants"
    _answer(at, "no idea")
    assert "Missing" in at.error[0].value


def test_the_bank_lists_every_question():
    at = _run("interview.py")
    from lora_core import interview

    labels = [e.label for e in at.expander]
    assert len(labels) == len(interview.kinds()) >= 30


def test_claims_page_renders_all_23_rows():
    at = _run("claims.py")
    assert len(at.expander) == 23
    summary = at.dataframe[0].value
    assert len(summary) == 23 and list(summary["#"]) == list(range(1, 24))
    verdicts = {m.label: m.value for m in at.metric}
    assert sum(int(v) for k, v in verdicts.items() if k[0] in "✓~✗?") == 23
    assert not at.error
