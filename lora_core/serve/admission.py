"""Training admission for a shared server: a bounded number of runs step at once; the rest queue.

One `TrainingSlots` object lives for the whole server (the app keeps it in `st.cache_resource`; it
is the one shared object that is meant to change). Each session asks for a slot every time it
wants to take a step; the answer is 0 (go) or its place in the queue (1 = next). A holder that
stops asking, because its tab was closed or its run paused, loses the slot after
`heartbeat_seconds`, or at once when it calls `release`.
"""

from __future__ import annotations

import threading
import time


class TrainingSlots:
    """A first-come, first-served queue in front of `capacity` training slots (thread-safe)."""

    def __init__(self, capacity: int, heartbeat_seconds: float = 30.0):
        if isinstance(capacity, bool) or not isinstance(capacity, int) or capacity < 1:
            raise ValueError(f"capacity={capacity!r} is not allowed: use an integer >= 1")
        self.capacity, self.heartbeat_seconds = capacity, heartbeat_seconds
        self._lock = threading.Lock()
        self._holders: dict[str, float] = {}   # session id -> last heartbeat
        self._waiting: dict[str, float] = {}   # session id -> last time it asked (insertion = arrival order)

    def _expire(self, now: float) -> None:
        for table in (self._holders, self._waiting):
            for sid in [s for s, seen in table.items() if now - seen > self.heartbeat_seconds]:
                del table[sid]

    def request(self, session_id: str) -> int:
        """0 if `session_id` holds (or now gets) a slot, else its 1-based place in the queue."""
        now = time.monotonic()
        with self._lock:
            self._expire(now)
            if session_id in self._holders:
                self._holders[session_id] = now
                return 0
            self._waiting.setdefault(session_id, now)
            self._waiting[session_id] = now
            order = list(self._waiting)
            free = self.capacity - len(self._holders)
            if order.index(session_id) < free:
                del self._waiting[session_id]
                self._holders[session_id] = now
                return 0
            return order.index(session_id) - free + 1

    def release(self, session_id: str) -> None:
        """Give the slot (or the place in the queue) back."""
        with self._lock:
            self._holders.pop(session_id, None)
            self._waiting.pop(session_id, None)

    def snapshot(self) -> dict[str, int]:
        """{"running": n, "waiting": n} right now (after expiring silent sessions)."""
        with self._lock:
            self._expire(time.monotonic())
            return {"running": len(self._holders), "waiting": len(self._waiting), "capacity": self.capacity}
