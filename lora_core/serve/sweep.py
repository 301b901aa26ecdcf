"""A teacher's sweep: one knob's values handed to the room's learners one cell at a time, so that the board fills
a whole figure (loss against r, q,v against all-linear) instead of 30 copies of the default.

    sweeps = Sweeps(folder)
    sweeps.start("rank")            # a preset of SWEEPS, or start("my sweep", knob="r", values=[4, 16])
    sweeps.assign(session_key)      # {"sweep": ..., "knob": "r", "value": 1, "cell": 0, "seed": 0}
    sweeps.end()

A cell goes to a new session only once every cell has as many learners as it: the first N sessions take N
different cells with seed 0, the next N take each cell again with seed 1, and so on, so repeats of a cell are
different seeds and the board shows their spread. A session asking again keeps its cell. The knobs are the
board's (serve/board.py KNOBS). The state is sweep.json in the board's folder, written whole and renamed into
place under a lock, so a restart keeps it.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import tempfile
import threading
import time
import warnings
from pathlib import Path

from .board import KNOBS as BOARD_KNOBS
from .board import folder_lock

# The presets follow the research replays' sweeps (lora_core/research/experiments.py: RANKS, and the two ends of
# TARGET_SETS) and the Scaling page's question; tests/test_board.py checks the rank values against RANKS.
SWEEPS = {
    "rank": ("r", (1, 2, 4, 8, 16, 64)),
    "targets": ("targets", ("q_proj,v_proj", "all-linear")),
    "scaling": ("scaling", ("α/r", "α/√r")),
}
# What a sweep may vary: the board's knobs but the model (a room shares one base) and the seed (a cell's repeats).
KNOBS = tuple(k for k in BOARD_KNOBS if k not in ("model", "seed"))


class Sweeps:
    """The sweep state of one board folder: at most one sweep running at a time."""

    def __init__(self, folder: str | os.PathLike):
        self.folder = Path(folder)  # created by the first start
        self.path = self.folder / "sweep.json"
        self._lock = threading.Lock()

    def _read(self) -> dict | None:
        """The sweep on disk; a file that does not parse or has the wrong shape (hand-edited, or from an older
        version) is no sweep, with a warning: the Fine-tuning page must open whatever the file holds."""
        if not self.path.is_file():
            return None
        try:
            state = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError, UnicodeDecodeError):
            state = None  # a torn file cannot happen (rename); an unreadable or hand-broken one can
        if _is_state(state):
            return state
        warnings.warn(f"{self.path} is not a sweep LoRA Lab wrote and was ignored: start a new sweep", stacklevel=3)
        return None

    def _write(self, state: dict | None) -> None:
        if state is None:
            self.path.unlink(missing_ok=True)
            return
        fd, tmp = tempfile.mkstemp(prefix=".sweep.", dir=self.folder)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(state, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)

    def current(self) -> dict | None:
        """The running sweep: name, knob, values, and how many sessions took each cell; None when none runs."""
        state = self._read()
        if state is None:
            return None
        return {k: state[k] for k in ("id", "name", "knob", "values", "started")} | {"taken": _taken(state)}

    def start(self, name: str, knob: str | None = None, values: list | tuple | None = None) -> dict:
        """Start sweep `name`: a preset of SWEEPS, or your own `knob` and `values`. Replaces a running one."""
        if knob is None and values is None:
            if name not in SWEEPS:
                raise ValueError(f"name={name!r} is not a preset sweep: choose {', '.join(SWEEPS)}, or give a knob "
                                 "and its values")
            knob, values = SWEEPS[name]
        if knob not in KNOBS:
            raise ValueError(f"knob={knob!r} is not allowed: choose one of {', '.join(KNOBS)}")
        values = list(values or ())
        if not 2 <= len(values) <= 32 or len(set(map(json.dumps, values))) != len(values):
            raise ValueError(f"values={values!r} is not allowed: give 2 to 32 different values")
        state = {"id": secrets.token_hex(4), "name": str(name)[:40], "knob": knob, "values": values,
                 "started": time.time(), "assigned": {}}
        with self._locked():
            self._write(state)
        return self.current()

    def end(self) -> None:
        if self.folder.is_dir():
            with self._locked():
                self._write(None)

    def _locked(self) -> contextlib.AbstractContextManager[None]:
        return folder_lock(self.folder / "sweep.lock", self._lock)  # OSError there: a ValueError naming board_dir

    def assign(self, session_key: str) -> dict | None:
        """This session's cell of the running sweep (None when none runs): its own if it has one, else the
        least-taken cell, the first such in order, with seed = how many sessions took that cell before."""
        if not self.path.is_file():
            return None  # no sweep: no lock, no folder
        with self._locked():
            state = self._read()
            if state is None:
                return None
            mine = state["assigned"].get(session_key)
            if mine is None:
                taken = _taken(state)
                cell = taken.index(min(taken))
                mine = state["assigned"][session_key] = {"cell": cell, "seed": taken[cell]}
                self._write(state)
        return {"sweep": state["name"], "sweep_id": state["id"], "knob": state["knob"],
                "value": state["values"][mine["cell"]], "cell": mine["cell"], "seed": mine["seed"]}


def _is_state(state: object) -> bool:
    """What start() writes: a knob of KNOBS, 2 to 32 values, and each session's {"cell", "seed"} in range."""
    if not isinstance(state, dict) or state.get("knob") not in KNOBS:
        return False
    values, assigned = state.get("values"), state.get("assigned")
    if not isinstance(values, list) or not 2 <= len(values) <= 32 or not isinstance(assigned, dict):
        return False
    if not all(isinstance(state.get(k), t) for k, t in (("id", str), ("name", str), ("started", (int, float)))):
        return False
    return all(isinstance(mine, dict) and isinstance(mine.get("cell"), int) and 0 <= mine["cell"] < len(values)
               and isinstance(mine.get("seed"), int) for mine in assigned.values())


def _taken(state: dict) -> list[int]:
    counts = [0] * len(state["values"])
    for mine in state["assigned"].values():
        counts[mine["cell"]] += 1
    return counts
