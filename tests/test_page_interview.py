"""AppTest on the Interview page: the quiz accepts a right answer, explains a wrong one with its formula, draws
again, and its bank lists every question."""

from streamlit.testing.v1 import AppTest


def _answer(at: AppTest, text: str) -> AppTest:
    draws = at.session_state["interview:draws"]
    at.text_input(key=f"interview:answer:{draws}").set_value(text)
    next(b for b in at.button if b.label == "Check").click()
    at.run()
    assert not at.exception, at.exception
    return at


def test_a_right_answer_is_accepted(app_page):
    at = app_page("interview")
    at.selectbox(key="interview:topic").set_value("counting").run()
    q = at.session_state["interview:q"]
    assert q.topic == "counting" and q.numeric
    _answer(at, q.expected_text)
    assert at.success and at.success[0].value.startswith("Accepted") and not at.error


def test_a_wrong_answer_is_explained_with_the_formula(app_page):
    at = app_page("interview")
    at.selectbox(key="interview:topic").set_value("counting").run()
    q = at.session_state["interview:q"]
    _answer(at, "1")
    (err,) = at.error
    assert "Not quite" in err.value and q.formula in err.value and q.expected_text in err.value


def test_new_question_draws_again_and_a_concept_is_explained(app_page):
    at = app_page("interview")
    at.selectbox(key="interview:topic").set_value("variants").run()
    first = at.session_state["interview:q"]
    next(b for b in at.button if b.label == "New question").click().run()
    assert not at.exception and at.session_state["interview:draws"] > 1
    q = at.session_state["interview:q"]
    assert q.topic == "variants" and not q.numeric and first.topic == "variants"
    _answer(at, "no idea")
    assert "Missing" in at.error[0].value


def test_the_bank_lists_every_question(app_page):
    at = app_page("interview")
    from lora_core.teach.interview import quiz

    labels = [e.label for e in at.expander]
    assert len(labels) == len(quiz.kinds()) >= 30
