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

# One way to split any text (no nested or adjacent repeats of \d), so a long failing answer is read in linear time.
_NUMBER = re.compile(r"^([-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:e[-+]?\d+)?)(?:/(\d+(?:\.\d*)?|\.\d+))?(k|m|b|bn)?$")
_SUFFIX = {"k": 1e3, "m": 1e6, "b": 1e9, "bn": 1e9}
_UNIT_WORDS = ("gib", "mib", "gb", "mb", "bits", "bit", "params", "parameters", "x", "×")
_UNIT = re.compile(r"(?<=[\d.%kmbn])\s*(?:" + "|".join(re.escape(w) for w in _UNIT_WORDS) + r")$")
# Digits joined by a thousands separator (',', ' ', "'", '_', a thin space): the integer part of a number.
_SEPARATED = re.compile(r"(?<![\d.])\d+(?:[, '_\u2009\u202f]\d+)+")
# A valid grouping: 1 to 3 digits, then groups of exactly 3, one separator throughout (147,456 or 12 345 678).
_GROUPED = re.compile(r"\d{1,3}(?P<sep>[, '_\u2009\u202f])\d{3}(?:(?P=sep)\d{3})*")
ECHO_CHARS = 80          # how much of a learner's answer is quoted back in a message
MAX_ANSWER_CHARS = 2000  # the quiz's answer box: a sentence or two, or a number, with room to spare
MAX_NUMBER_CHARS = 64    # a number longer than this, once its unit and separators are gone, is not an answer
FORMATS = "147456, 147,456, 0.18%, 1.5M or 16/64"


@dataclass(frozen=True)
class ParsedNumber:
    value: float
    percent: bool    # the text had a '%'
    decimals: int    # digits after the decimal point, as typed
    significant: int


def echo(text: str) -> str:
    """The learner's answer quoted in a message: at most ECHO_CHARS characters, then '…'."""
    text = str(text).strip()
    return repr(text if len(text) <= ECHO_CHARS else text[:ECHO_CHARS] + "…")


def read_number(text: str) -> ParsedNumber:
    """Read '147,456', '147 456', '0.18%', '1.5k', '16/64', '≈ 2.83' or '3.6 GiB'.

    Anything else is a ValueError that quotes the answer (shortened) and says why in a learner's words:
    a division by zero, a number too large for a float, or separators that are not thousands groups
    ('1,2,3' is not 123: a comma counts only between groups of three digits, as in 1,234).
    """
    shown = echo(text)
    t = str(text).strip().lower()
    t = re.sub(r"^(about|approx\.?|approximately|~|≈)\s*", "", t)
    percent = "%" in t
    t = _UNIT.sub("", t.replace("%", "").strip()).strip()
    for run in _SEPARATED.findall(t):
        if not _GROUPED.fullmatch(run):
            raise ValueError(f"{shown} is not a number: a comma or space goes only between groups of three "
                             f"digits, as in 1,234 or 12,345,678. Write it like {FORMATS}")
    t = _SEPARATED.sub(lambda m: re.sub(r"\D", "", m.group(0)), t).replace(" ", "")
    if len(t) > MAX_NUMBER_CHARS:
        raise ValueError(f"{shown} is too long to be a number here (at most {MAX_NUMBER_CHARS} characters). "
                         f"Write it like {FORMATS}")
    m = _NUMBER.match(t)
    if not m:
        raise ValueError(f"{shown} is not a number. Write it like {FORMATS}")
    num, den, suffix = m.groups()
    if den is not None and float(den) == 0:
        raise ValueError(f"{shown} has a zero denominator: you can't divide by zero. Write the number itself, like "
                         f"{FORMATS}")
    value = float(num) / (float(den) if den else 1.0) * _SUFFIX.get(suffix or "", 1.0)
    if not math.isfinite(value):
        raise ValueError(f"{shown} is too large to be a number here (over about 1.8e308). Write it like {FORMATS}")
    mantissa = num.split("e")[0].lstrip("+-")
    decimals = len(mantissa.split(".")[1]) if "." in mantissa and not den and not suffix else 0
    significant = len(mantissa.replace(".", "").lstrip("0")) or 1
    return ParsedNumber(value, percent, decimals, significant)


def parse_number(text: str) -> ParsedNumber | None:
    """`read_number`, or None if `text` is not a number (read_number's ValueError says why)."""
    try:
        return read_number(text)
    except ValueError:
        return None


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
    try:
        got = read_number(text)
    except ValueError as err:  # the reason, in a learner's words: shown instead of a verdict on the number
        return Verdict(False, expected, f"Could not read a number: {err}. The answer: {question.formula}.")
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
