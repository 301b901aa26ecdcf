"""The teacher's controls on the Room page (start or end a sweep, clear the board, export it), behind a token.

    gate = TeacherGate(teacher_token())   # lora_lab.toml's teacher_token, or $LORA_LAB_TEACHER_TOKEN
    gate.check(typed, client="10.0.0.7")  # ValueError unless right; wrong tries slow that address's next ones

No token configured: the controls are off for everyone. A wrong token makes the next try from the same network
address wait 1 s, then 2, 4, ... up to a minute, however many tabs or reloads it comes from, so guessing by
retrying quickly gets nowhere. The wait is per address, not server-wide, so a learner's wrong guesses never
lock the teacher out. The right token resets that address's wait. Tokens are compared in constant time.
The page passes Streamlit's `st.context.ip_address`: the connection's TCP peer, which a client cannot choose.
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
    """Checks typed tokens against `token`, with a growing wait per client address after each wrong one."""

    def __init__(self, token: str, first_wait_s: float = 1.0, max_wait_s: float = 60.0,
                 clock: Callable[[], float] = time.monotonic, max_clients: int = 4096):
        self.token, self.first_wait_s, self.max_wait_s, self.clock = token, first_wait_s, max_wait_s, clock
        self.max_clients = max_clients
        self._failures: dict[str, tuple[int, float]] = {}  # client -> (wrong tries in a row, when the next is heard)
        self._lock = threading.Lock()

    @property
    def enabled(self) -> bool:
        return bool(self.token)

    def wait_s(self, client: str = "") -> float:
        """Seconds until `client`'s next try is heard (0: now)."""
        return max(0.0, self._failures.get(client, (0, 0.0))[1] - self.clock())

    def check(self, typed: str, client: str = "") -> None:
        """Return if `typed` is the token; else a ValueError that says why and, after a wrong one, how long
        this client waits."""
        if not self.enabled:
            raise ValueError(f"teacher controls are off on this server: set teacher_token in lora_lab.toml or "
                             f"{TOKEN_ENV}, then restart it")
        with self._lock:
            wait = self.wait_s(client)
            if wait > 0:
                raise ValueError(f"teacher token: too soon after a wrong one, try again in {wait:.0f} s")
            if hmac.compare_digest(str(typed).strip().encode(), self.token.encode()):
                self._failures.pop(client, None)
                return
            failures = self._failures.pop(client, (0, 0.0))[0] + 1
            pause = min(self.max_wait_s, self.first_wait_s * 2 ** (failures - 1))
            self._failures[client] = (failures, self.clock() + pause)
            while len(self._failures) > self.max_clients:  # bounded: the longest-quiet client is forgotten first
                self._failures.pop(next(iter(self._failures)))
        raise ValueError(f"teacher token: that is not it; the next try is heard in {pause:.0f} s")
