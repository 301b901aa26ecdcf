"""AppTest on the Interview page: the quiz accepts a right answer, explains a wrong one with its formula, draws
again, and its bank lists every question."""

from conftest import ROOT
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


# --- issue 11, items 7 and 12: the quiz's answers and its error boundary -------------------------------------------
def _counting_question(app_page) -> AppTest:
    at = app_page("interview")
    at.selectbox(key="interview:topic").set_value("counting").run()
    return at


def test_dividing_by_zero_is_explained_in_the_quiz_not_a_traceback(app_page):
    at = _counting_question(app_page)
    for text in ("1/0", "0/0", "1,2,3"):
        _answer(at, text)
        (err,) = at.error
        assert "Could not read a number" in err.value and "Something went wrong" not in err.value
    assert "groups of three digits" in at.error[0].value
    _answer(at, "1/0")
    assert "can't divide by zero" in at.error[0].value


def test_a_long_answer_is_bounded_and_echoed_shortened(app_page):
    from lora_core.teach.interview import quiz

    at = _counting_question(app_page)
    box = at.text_input(key=f"interview:answer:{at.session_state['interview:draws']}")
    assert box.proto.max_chars == quiz.MAX_ANSWER_CHARS
    _answer(at, "7" * 60 + "x" * 1900)
    (err,) = at.error
    assert "7" * 60 + "x" * 20 + "…" in err.value and "x" * 21 not in err.value


def test_a_bug_in_the_quiz_fragment_gets_the_pages_boundary(app_page, monkeypatch):
    from lora_core.teach.interview import quiz

    def broken(question, text):
        raise ZeroDivisionError(f"float division by zero in {ROOT}/lora_core/teach/interview/answers.py")

    at = _counting_question(app_page)
    monkeypatch.setattr(quiz, "check_answer", broken)
    _answer(at, "42")                                          # a raw traceback before: at.exception
    (err,) = at.error
    assert err.value.startswith("Something went wrong in the quiz.") and "Reference: " in err.value
    details = " ".join(t.value for t in at.text)
    assert "ZeroDivisionError: float division by zero in answers.py" in details and str(ROOT) not in details
    assert len(at.expander) > len(quiz.kinds())                # the rest of the page (the bank) still draws


# --- issue 12: the bank shows the corrected answers ------------------------------------------------------------------
def test_the_bank_shows_the_corrected_answers(app_page):
    at = app_page("interview")
    labels = [e.label for e in at.expander]
    for question in ("What do QLoRA's paged optimizers page, and when does it matter?",
                     "What are QLoRA's three ideas?",
                     "How does PEFT initialise lora_A, and is that what the LoRA paper says?"):
        assert question in labels, question
    shown = " ".join(m.value for m in at.markdown)
    assert "576 with SEQ_CLS" in shown and "not quietly lower quality" not in shown             # task_type
    assert "create_normal_map default, not a value the QLoRA paper gives" in shown              # NF4's offset
    assert "Quoted, not measured by LoRA Lab" in shown and "1.52" not in shown                  # speed
    assert "which is not α = r" in shown and "kaiming_uniform_" in shown                       # α, init
    assert "LoRA recovers a planted" in shown and "leaves the model unmerged" in shown          # rank, disable
