"""Interview prep: the question bank, randomised numeric questions, and answer checking.

    from lora_core.teach.interview import quiz
    q = quiz.make_question("model_trainable", rng=7)   # a random model, targets and r
    print(q.text)
    v = quiz.check_answer(q, "147,456")                 # Verdict(correct, expected, explanation)
    quiz.question_bank()                                # every question, answers computed

The bank is two tables: numeric.NUMERIC (what to draw, the question, how lora_core computes the
answer) and concepts.CONCEPTS (a model answer with live numbers, the key ideas, the evidence). This
module only looks entries up and draws them; answers.py reads and checks what a learner typed.
"""

from __future__ import annotations

import random

from ..evidence import Evidence
from .answers import MAX_ANSWER_CHARS, ParsedNumber, check_answer, echo, parse_number, read_number
from .concepts import CONCEPTS
from .numeric import NUMERIC, NUMERIC_BY_KIND
from .question import TOPICS, Question, Verdict, format_value

__all__ = ["MAX_ANSWER_CHARS", "TOPICS", "ParsedNumber", "Question", "Verdict", "check_answer", "echo", "evidence_for",
           "format_value", "kinds", "make_question", "parse_number", "question_bank", "random_question", "read_number",
           "topics"]

# Every kind and its topic, numeric ones first, in table order.
_TOPIC_OF = {q.kind: q.topic for q in NUMERIC} | {c.kind: c.topic for c in CONCEPTS.values()}
if len(_TOPIC_OF) != len(NUMERIC) + len(CONCEPTS):
    raise ValueError("a question kind is both numeric and conceptual: every kind must be unique")


def kinds(topic: str | None = None) -> list[str]:
    """Question kinds, numeric first; only those of `topic` if given."""
    return [k for k, t in _TOPIC_OF.items() if topic is None or t == topic]


def topics() -> list[str]:
    """Every topic that has a question, in TOPICS order."""
    used = set(_TOPIC_OF.values())
    return [t for t in TOPICS if t in used]


def _rng(rng: random.Random | int | None) -> random.Random:
    """The caller's Random, or a new one seeded with `rng`: never the global random module."""
    return rng if isinstance(rng, random.Random) else random.Random(rng)


def make_question(kind: str, rng: random.Random | int | None = None) -> Question:
    """A question of `kind`. Numeric kinds draw a model, shapes and r from `rng` (a Random or a seed)."""
    if kind in NUMERIC_BY_KIND:
        return NUMERIC_BY_KIND[kind].question(_rng(rng))
    if kind in CONCEPTS:
        return CONCEPTS[kind].question()
    raise ValueError(f"kind={kind!r} is not allowed: use one of {', '.join(kinds())}")


def random_question(topic: str | None = None, rng: random.Random | int | None = None) -> Question:
    """A question of a random kind (within `topic` if given)."""
    rng = _rng(rng)
    pool = kinds(topic)
    if not pool:
        raise ValueError(f"topic={topic!r} is not allowed: use one of {', '.join(topics())}")
    return make_question(rng.choice(pool), rng)


def question_bank(seed: int = 0) -> list[Question]:
    """Every kind once, numeric ones drawn with `seed`: the full bank with computed answers."""
    rng = random.Random(seed)
    return [make_question(k, rng) for k in kinds()]


def evidence_for(question: Question) -> Evidence | None:
    """The live evidence behind an answer (computed on first use, then cached by lora_core)."""
    if question.evidence is not None:
        return question.evidence
    concept = CONCEPTS.get(question.kind)
    return None if concept is None else concept.evidence()
