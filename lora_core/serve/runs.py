"""Training runs that outlive a browser tab: a reload finds its run again, an abandoned run is let go.

A Streamlit reload is a new session with an empty session state, so a run kept only there is lost
mid-training. The server keeps each run here under an unguessable id that the page also puts in its
URL (?run=…). A new session that brings that id claims the run, but only once the session that owned
it has gone (a copied link cannot take a run from an open tab). A run whose owner has gone and that
nobody claims within `grace_seconds` is dropped, so its memory comes back.

One `RunRegistry` lives for the whole server (st.cache_resource, like TrainingSlots; it changes by
design and is thread-safe). The registry never imports streamlit: the page passes in whether a
session is still connected.
"""

from __future__ import annotations

import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

RELOAD_GRACE_SECONDS = 120.0  # how long a run whose tab closed waits to be found again by a reload


@dataclass
class _Entry:
    run: Any
    owner: str                       # the Streamlit session that drives it
    orphaned_at: float | None = None  # when its owner was first seen gone


class RunRegistry:
    """run id → run, with the session that owns it (thread-safe)."""

    def __init__(self, grace_seconds: float = RELOAD_GRACE_SECONDS, max_runs: int = 64):
        self.grace_seconds, self.max_runs = grace_seconds, max_runs
        self._lock = threading.Lock()
        self._entries: dict[str, _Entry] = {}

    def register(self, run: Any, owner: str) -> str:
        """Keep `run` for session `owner`; returns its id (32 hex characters, for the page's URL)."""
        with self._lock:
            if len(self._entries) >= self.max_runs:
                raise ValueError(f"runs={len(self._entries)} is the most this server keeps at once "
                                 f"({self.max_runs}): try again when a run has ended")
            run_id = secrets.token_hex(16)
            self._entries[run_id] = _Entry(run, owner)
            return run_id

    def claim(self, run_id: str, owner: str, alive: Callable[[str], bool], wait_seconds: float = 0.0) -> Any | None:
        """The run under `run_id`, now owned by `owner`; None if it is gone or its owner is still open.

        `wait_seconds`: a reloading tab's new session can start before the server has seen the old one
        close, so the claim waits that long for the old owner to go.
        """
        deadline = time.monotonic() + wait_seconds
        while True:
            with self._lock:
                entry = self._entries.get(run_id)
                if entry is None:
                    return None
                if entry.owner == owner or not alive(entry.owner):
                    entry.owner, entry.orphaned_at = owner, None
                    return entry.run
            if time.monotonic() >= deadline:
                return None  # another open tab drives it: a shared link must not take it over
            time.sleep(0.1)

    def forget(self, run_id: str) -> None:
        with self._lock:
            self._entries.pop(run_id, None)

    def sweep(self, alive: Callable[[str], bool], now: float | None = None) -> list[str]:
        """Note runs whose owner has gone; drop those unclaimed for `grace_seconds`.

        Returns the ids of every run whose owner has gone (its training slot can be freed at once:
        nobody steps an orphan).
        """
        now = time.monotonic() if now is None else now
        with self._lock:
            orphans = []
            for run_id, entry in list(self._entries.items()):
                if alive(entry.owner):
                    entry.orphaned_at = None
                    continue
                orphans.append(run_id)
                entry.orphaned_at = entry.orphaned_at if entry.orphaned_at is not None else now
                if now - entry.orphaned_at > self.grace_seconds:
                    del self._entries[run_id]
            return orphans

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)
