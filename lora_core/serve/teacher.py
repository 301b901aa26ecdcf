"""The teacher's controls on the Room page (start or end a sweep, clear the board, export it), behind a token.

    gate = TeacherGate(teacher_token())   # lora_lab.toml's teacher_token, or $LORA_LAB_TEACHER_TOKEN
    gate.check(typed)                     # ValueError unless right; wrong tokens slow every later try

No token configured: the controls are off for everyone. A wrong token makes the next try wait, server-wide,
1 s, then 2, 4, ... up to a minute, so guessing by retrying quickly (from one tab or thirty) gets nowhere; the
right token resets the wait. Tokens are compared in constant time.
"""

from __future__ import annotations

import hmac
import os
import threading
import time
from collections.abc import Callable

TOKEN_ENV = "LORA_LAB_TEACHER_TOKEN"


def teacher_token(settings_token: str = "") -> str:
    """The token in force: $LORA_LAB_TEACHER_TOKEN, else the settings file's teacher_token; "" means none."""
    return os.environ.get(TOKEN_ENV, "").strip() or (settings_token or "").strip()


class TeacherGate:
    """Checks typed tokens against `token`, with a growing wait after each wrong one."""

    def __init__(self, token: str, first_wait_s: float = 1.0, max_wait_s: float = 60.0,
                 clock: Callable[[], float] = time.monotonic):
        self.token, self.first_wait_s, self.max_wait_s, self.clock = token, first_wait_s, max_wait_s, clock
        self._failures, self._next_try = 0, 0.0
        self._lock = threading.Lock()

    @property
    def enabled(self) -> bool:
        return bool(self.token)

    def wait_s(self) -> float:
        """Seconds until the next try is heard (0: now)."""
        return max(0.0, self._next_try - self.clock())

    def check(self, typed: str) -> None:
        """Return if `typed` is the token; else a ValueError that says why and, after a wrong one, how long to wait."""
        if not self.enabled:
            raise ValueError(f"teacher controls are off on this server: set teacher_token in lora_lab.toml or "
                             f"{TOKEN_ENV}, then restart it")
        with self._lock:
            wait = self.wait_s()
            if wait > 0:
                raise ValueError(f"teacher token: too soon after a wrong one, try again in {wait:.0f} s")
            if hmac.compare_digest(str(typed).encode(), self.token.encode()):
                self._failures, self._next_try = 0, 0.0
                return
            self._failures += 1
            pause = min(self.max_wait_s, self.first_wait_s * 2 ** (self._failures - 1))
            self._next_try = self.clock() + pause
        raise ValueError(f"teacher token: that is not it; the next try is heard in {pause:.0f} s")
