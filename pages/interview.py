"""Interview prep: a quiz with randomised numbers, and the whole LoRA question bank with computed answers.

Questions, answers and checks come from lora_core.teach.interview (its numeric and conceptual tables); their
evidence is measured by lora_core.teach. The quiz is a fragment, so answering reruns only the quiz; it has
the page's error boundary (pages.common.guarded_fragment), as every fragment does.
"""

import random

import streamlit as st

from lora_core.teach.interview import quiz
from pages.common import as_text, guarded_fragment
from pages.evidence_view import show_evidence

ANY = "any topic"


@st.cache_resource(show_spinner="Computing the answers (once per server)…")
def bank() -> list[quiz.Question]:
    """Every question once, answers computed (shared and read-only)."""
    return quiz.question_bank(seed=0)


@st.cache_resource(show_spinner=False, max_entries=64)
def evidence(kind: str, _question: quiz.Question):
    """The evidence behind a conceptual answer, computed once per kind (read-only)."""
    return quiz.evidence_for(_question)


def show_question_evidence(q: quiz.Question, key: str) -> None:
    """The evidence behind `q`'s answer; `key` makes its elements unique on the page."""
    if q.numeric:
        show_evidence(q.evidence, key, f"numeric:{q.text}")
    else:
        show_evidence(evidence(q.kind, q), key, f"concept:{q.kind}")


st.title("Interview prep")
st.markdown("The questions a strong interviewer asks about LoRA, QLoRA and PEFT. Numeric questions draw a real "
            "model, its shapes and a rank at random, and `lora_core` computes the answer; conceptual ones come with "
            "a model answer whose numbers are measured live, and with the evidence behind it.")

# --- 1. quiz ----------------------------------------------------------------------------------------------
st.header("1. Quiz")


@guarded_fragment("the quiz")
def quiz_fragment() -> None:
    """One question at a time: a fragment, so answering reruns only this part of the page."""
    c1, c2 = st.columns([3, 1])
    topic = c1.selectbox("topic", [ANY, *quiz.topics()], key="interview:topic")
    c2.write("")  # aligns the button with the select box
    fresh = c2.button("New question", type="primary", width="stretch")
    state = st.session_state
    if fresh or "interview:q" not in state or state.get("interview:q_topic") != topic:
        state["interview:draws"] = state.get("interview:draws", 0) + 1
        rng = random.Random(state["interview:draws"])   # a new draw per click, reproducible per session
        state["interview:q"] = quiz.random_question(None if topic == ANY else topic, rng)
        state["interview:q_topic"] = topic
        state.pop("interview:verdict", None)
    q: quiz.Question = state["interview:q"]
    st.markdown(f"**{q.topic}** · {q.text}")
    with st.form("interview:answer", clear_on_submit=False, border=False):
        placeholder = "a number, e.g. 147,456 or 0.18%" if q.numeric else "a sentence or two"
        text = st.text_input("your answer", key=f"interview:answer:{state['interview:draws']}",
                             placeholder=placeholder, max_chars=quiz.MAX_ANSWER_CHARS)
        if st.form_submit_button("Check"):
            state["interview:verdict"] = quiz.check_answer(q, text)
    verdict = state.get("interview:verdict")
    if verdict is not None:
        if verdict.correct:
            st.success(as_text(f"Accepted. {verdict.explanation}"), icon="✅")
        else:
            st.error(as_text(verdict.explanation), icon="❌")
        show_question_evidence(q, f"quiz:{state['interview:draws']}")


quiz_fragment()

# --- 2. the bank --------------------------------------------------------------------------------------------
st.header("2. The question bank")
st.caption("Numeric questions here are drawn once with a fixed seed; the quiz draws new numbers every time.")
questions = bank()
for topic in quiz.topics():
    st.subheader(topic.capitalize())
    for i, q in enumerate(q for q in questions if q.topic == topic):
        with st.expander(q.text):
            if q.numeric:
                st.markdown(f"**Answer: {q.expected_text}**")
                st.markdown(f"{q.formula}.")
            else:
                st.markdown(q.answer)
                st.caption("Key ideas: " + "; ".join(idea for idea, _ in q.key_ideas))
            show_question_evidence(q, f"bank:{q.kind}:{i}")
