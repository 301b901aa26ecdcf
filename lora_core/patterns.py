"""User regexes over module names, with a time bound: no pattern can hang target matching.

PEFT matches a string `target_modules` (and `layers_pattern`) with Python's `re`, which backtracks
without limit: `(.*)*X` over a model's ~100 module names runs for minutes, holding the GIL, so a
server answering other users stops answering (even SIGTERM). We match with the `regex` package
instead. Its default VERSION0 syntax is `re`'s, so a pattern means what it means in PEFT, and it
takes a timeout. One budget (MATCH_SECONDS) covers every name of one matching pass; a pattern
that needs more gets a ValueError naming the field, which a page shows inline.

    pattern = TimedPattern("target_modules", r".*\\.(q|v)_proj")
    hits = [n for n in names if pattern.fullmatch(n)]
"""

from __future__ import annotations

import re
import time

import regex

from .config import reject

MATCH_SECONDS = 1.0  # all names of one model: real patterns take well under a millisecond


class TimedPattern:
    """One user pattern, matched against many module names within one shared time budget."""

    def __init__(self, field: str, pattern: str, seconds: float = MATCH_SECONDS, shown: str | None = None):
        """`shown` is the value the user gave, when `pattern` wraps it (layers_pattern)."""
        self.field, self.pattern, self.seconds = field, pattern, seconds
        self.shown = pattern if shown is None else shown
        try:
            re.compile(pattern)  # PEFT's engine decides what is a valid pattern
            self.compiled = regex.compile(pattern, flags=regex.VERSION0)
        except (re.error, regex.error) as err:
            reject(field, self.shown, f"a valid regular expression ({err})")
        self.deadline = time.monotonic() + seconds

    def fullmatch(self, name: str) -> regex.Match | None:
        return self._run(self.compiled.fullmatch, name)

    def match(self, name: str) -> regex.Match | None:
        return self._run(self.compiled.match, name)

    def _run(self, method, name: str) -> regex.Match | None:
        left = self.deadline - time.monotonic()
        try:
            if left <= 0:
                raise TimeoutError
            # concurrent=True releases the GIL while matching, so other sessions' threads keep running
            return method(name, timeout=left, concurrent=True)
        except TimeoutError:
            reject(self.field, self.shown,
                   f"a pattern that matches module names in under {self.seconds:g} s; this one backtracks "
                   "without end (nested repeats such as (.*)* or (.*){1,32000}). Use a simpler pattern, "
                   r"e.g. '.*\.(q_proj|v_proj)', or a list of names")
