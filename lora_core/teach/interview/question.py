"""The records every part of the interview bank shares: a Question, the Verdict on an answer, and how a
numeric answer is written. Numeric tables (numeric.py), the conceptual bank (concepts.py) and the quiz
(quiz.py) all import this module, and it imports none of them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..evidence import Evidence

# Topics in the order a page lists them.
TOPICS = ("counting", "scaling", "init & dropout", "merging & serving", "architecture", "quantization", "memory",
          "speed", "theory", "variants")


@dataclass(frozen=True)
class Question:
    """One interview question, its computed answer, and how to explain it."""

    kind: str
    topic: str
    text: str
    expected: float | None = None   # the numeric answer (None: a conceptual question)
    unit: str = ""                  # "", "%", "GiB", "MiB", "bits", "×"
    rel_tol: float = 0.0            # 0: the answer must be exact (parameter counts)
    formula: str = ""               # how the answer is computed, numbers plugged in
    answer: str = ""                # a model answer in words
    hint: str = ""                  # the usual mistake, shown with a wrong answer
    key_ideas: tuple[tuple[str, tuple[str, ...]], ...] = ()  # conceptual: (idea, accepted words)
    params: dict = field(default_factory=dict, compare=False)  # what was drawn: model, shapes, r, ...
    evidence: Evidence | None = field(default=None, compare=False)

    @property
    def numeric(self) -> bool:
        return self.expected is not None

    @property
    def expected_text(self) -> str:
        return format_value(self.expected, self.unit) if self.numeric else self.answer


@dataclass(frozen=True)
class Verdict:
    """The result of checking an answer: accepted or not, the expected answer, and why."""

    correct: bool
    expected: str
    explanation: str


def format_value(value: float, unit: str = "") -> str:
    """How an expected answer is shown: exact counts with commas, the rest to 4 significant digits."""
    if unit == "%":
        return f"{value:.4f}%"
    if float(value).is_integer() and abs(value) >= 1 and unit == "":
        return f"{int(value):,}"
    return f"{value:.4g}" + ("×" if unit == "×" else f" {unit}" if unit else "")


def check_topic(topic: str, kind: str) -> None:
    """A bank entry's topic must be one a page lists: raise a ValueError naming the entry otherwise."""
    if topic not in TOPICS:
        raise ValueError(f"topic={topic!r} of question kind {kind!r} is not allowed: use one of {', '.join(TOPICS)}")


def by_kind(entries: tuple) -> dict:
    """A table's entries by kind: a ValueError for a repeated kind or a topic a page does not list."""
    out = {}
    for entry in entries:
        check_topic(entry.topic, entry.kind)
        if entry.kind in out:
            raise ValueError(f"kind={entry.kind!r} appears twice in the question bank: every kind must be unique")
        out[entry.kind] = entry
    return out
