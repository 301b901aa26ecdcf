"""Checking a learner's answer: numbers read leniently, concepts checked for their key ideas.

A number may be written '147,456', '147 456', '0.18%', '1.5k', '16/64', '≈ 2.83' or '3.6 GiB'. Parameter
counts are compared exactly, everything else with the question's relative tolerance or at the precision
typed; a wrong answer gets the formula back with the numbers plugged in. A conceptual answer is
accepted when it names every key idea (a lenient check, meant for self-study, not for grading).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from .question import Question, Verdict

_NUMBER = re.compile(r"^([-+]?(?:\d+\.?\d*|\.\d+)(?:e[-+]?\d+)?)(?:/((?:\d+\.?\d*|\.\d+)))?(k|m|b|bn)?$")
_SUFFIX = {"k": 1e3, "m": 1e6, "b": 1e9, "bn": 1e9}
_UNIT_WORDS = ("gib", "mib", "gb", "mb", "bits", "bit", "params", "parameters", "x", "×")


@dataclass(frozen=True)
class ParsedNumber:
    value: float
    percent: bool    # the text had a '%'
    decimals: int    # digits after the decimal point, as typed
    significant: int


def parse_number(text: str) -> ParsedNumber | None:
    """Read '147,456', '147 456', '0.18%', '1.5k', '16/64', '≈ 2.83' or '3.6 GiB'; None if it is not a number."""
    t = str(text).strip().lower().replace("\u2009", "").replace("\u202f", "").replace("_", "")
    t = re.sub(r"^(about|approx\.?|approximately|~|≈)\s*", "", t)
    percent = "%" in t
    t = t.replace("%", "").replace(",", "").replace(" ", "").replace("'", "")
    for word in _UNIT_WORDS:
        if t.endswith(word) and len(t) > len(word):
            t = t[: -len(word)]
            break
    m = _NUMBER.match(t)
    if not m:
        return None
    num, den, suffix = m.groups()
    value = float(num) / (float(den) if den else 1.0) * _SUFFIX.get(suffix or "", 1.0)
    if not math.isfinite(value):
        return None
    mantissa = num.split("e")[0].lstrip("+-")
    decimals = len(mantissa.split(".")[1]) if "." in mantissa and not den and not suffix else 0
    significant = len(mantissa.replace(".", "").lstrip("0")) or 1
    return ParsedNumber(value, percent, decimals, significant)


def _close(got: ParsedNumber, value: float, q: Question) -> bool:
    if q.rel_tol == 0:
        return got.value == q.expected
    if math.isclose(value, q.expected, rel_tol=q.rel_tol, abs_tol=1e-12):
        return True
    # A rounded answer is right if the expected value rounds to it at the precision typed (≥ 2 digits).
    return got.significant >= 2 and abs(value - q.expected) <= 0.5 * 10 ** -got.decimals


def check_answer(question: Question, text: str) -> Verdict:
    """Accept or explain. Numbers are read leniently; a conceptual answer is checked for its key ideas."""
    if not question.numeric:
        return _check_concept(question, text)
    expected = question.expected_text
    got = parse_number(text)
    if got is None:
        return Verdict(False, expected, f"Could not read a number from {text!r}. Write it like 147456, "
                                        f"147,456, 0.18%, 1.5M or 16/64. The answer: {question.formula}.")
    # Without a '%', a percentage question also accepts the fraction (0.0018 for 0.18%).
    candidates = [got.value] if got.percent or question.unit != "%" else [got.value, 100 * got.value]
    if any(_close(got, c, question) for c in candidates):
        return Verdict(True, expected, f"Correct. {question.formula}.")
    hint = f" {question.hint}" if question.hint else ""
    return Verdict(False, expected, f"Not quite: the answer is {expected}. {question.formula}.{hint}")


def _check_concept(question: Question, text: str) -> Verdict:
    said = str(text).lower()
    missing = [idea for idea, words in question.key_ideas if not any(w in said for w in words)]
    if not said.strip():
        missing = [idea for idea, _ in question.key_ideas]
    if not missing:
        return Verdict(True, question.answer, "Your answer names every key idea. The model answer: " + question.answer)
    return Verdict(False, question.answer, f"Missing: {'; '.join(missing)}. The model answer: {question.answer}")
