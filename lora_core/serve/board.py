"""The room's board: finished runs that a workshop's learners chose to share, on disk, surviving a restart.

    board = Board(folder, max_results=1000)
    entry, key = board.share(run_id="r-3f2a", nickname="ada", knobs={...}, metrics={...})
    board.entries()                # what is on the board, oldest first
    board.withdraw(entry.id, key)  # only with the key `share` handed back: no identity is stored

The board is a log, board.jsonl: one line per shared result, {"share": {...}}. A share goes out as one line,
written in one os.write on a file opened with O_APPEND, under an exclusive flock, then fsync: many sessions
(threads of one server, or several server processes on one folder) never interleave or lose a line. A server
killed mid-write leaves at most a partial last line: the reader skips it with a warning (as any line that does
not parse, or parses to the wrong shape), and the next share starts on a new line. Withdrawing or clearing
rewrites the file without those results (a temporary file renamed into place, under the same lock), so a
withdrawn result leaves the disk too. Reading replays the log, so a restart finds the board complete.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import hmac
import json
import math
import os
import secrets
import tempfile
import threading
import time
import unicodedata
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

# What a shared run records: the knobs a learner turned and what the run measured (the Room page plots any
# metric against any knob). Values are numbers or short strings; nothing else is stored.
KNOBS = ("model", "r", "lora_alpha", "scaling", "targets", "init", "base_precision", "lr", "seed")
METRICS = ("train_loss", "heldout_loss", "bleu", "ppl_general", "steps", "tokens_per_s", "wall_s")
MAX_NICKNAME = 24
MAX_TEXT = 80
LOG_NAME = "board.jsonl"


@dataclass(frozen=True)
class Entry:
    """One shared result as the board shows it."""

    id: str
    time: float
    run_id: str
    nickname: str
    knobs: dict
    metrics: dict


def check_nickname(nickname: object) -> str:
    """The nickname as stored: 1 to MAX_NICKNAME printable characters, spaces trimmed. Shown as text, never
    markup, wherever it appears."""
    if not isinstance(nickname, str):
        raise ValueError(f"nickname={nickname!r} is not allowed: use text, 1 to {MAX_NICKNAME} characters")
    name = nickname.strip()
    if not 1 <= len(name) <= MAX_NICKNAME or any(unicodedata.category(c)[0] == "C" for c in name):
        raise ValueError(f"nickname={nickname!r} is not allowed: use 1 to {MAX_NICKNAME} printable characters")
    return name


def _check_values(kind: str, allowed: tuple[str, ...], values: object) -> dict:
    if not isinstance(values, dict) or set(values) - set(allowed):
        extra = sorted(set(values) - set(allowed)) if isinstance(values, dict) else values
        raise ValueError(f"{kind}={extra!r} is not allowed: the keys are {', '.join(allowed)}")
    for key, value in values.items():
        number = isinstance(value, (int, float)) and not isinstance(value, bool)
        if value is None or (number and math.isfinite(value)) or (isinstance(value, str) and len(value) <= MAX_TEXT):
            continue
        raise ValueError(f"{kind}[{key!r}]={value!r} is not allowed: use a finite number, None or text of at most "
                         f"{MAX_TEXT} characters")
    return dict(values)


def _is_event(event: object) -> bool:
    """{"share": a whole record} (or an older log's {"withdraw": an id}), with every field of the right type:
    a line that parses to anything else is skipped like a torn one."""
    if not isinstance(event, dict) or len(event) != 1:
        return False
    if "withdraw" in event:
        return isinstance(event["withdraw"], str)
    record = event.get("share")
    if not isinstance(record, dict):
        return False
    texts = all(isinstance(record.get(k), str) for k in ("id", "run_id", "nickname", "key_sha256"))
    when = record.get("time")
    return (texts and isinstance(when, (int, float)) and not isinstance(when, bool) and math.isfinite(when)
            and isinstance(record.get("knobs"), dict) and isinstance(record.get("metrics"), dict))


@contextlib.contextmanager
def folder_lock(path: Path, thread_lock: threading.Lock) -> Iterator[None]:
    """Hold `thread_lock` (this process's threads), then an exclusive flock on `path` (other processes wait).

    The folder is made on first use. A folder the server cannot write (or a full disk, inside the block) is a
    setting to fix: a ValueError naming board_dir, which the pages show inline."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with thread_lock:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                yield
            finally:
                os.close(fd)  # closing the file releases the flock
    except OSError as err:
        raise ValueError(f"board_dir={str(path.parent)!r} cannot be written ({err.strerror or err}): the room's "
                         "board and sweep need a folder this server may write (board_dir in lora_lab.toml)") from err


class Board:
    """The board in `folder` (created if missing); at most `max_results` results on it at once."""

    def __init__(self, folder: str | os.PathLike, max_results: int = 1000):
        if isinstance(max_results, bool) or not isinstance(max_results, int) or max_results < 1:
            raise ValueError(f"max_results={max_results!r} is not allowed: use an integer >= 1")
        self.folder = Path(folder)  # created by the first write: reading a board nobody wrote is an empty board
        self.path = self.folder / LOG_NAME
        self.max_results = max_results
        self._lock = threading.Lock()  # flock orders processes; this orders the threads of one process

    # --- the log -------------------------------------------------------------------------------------------
    def _events(self) -> list[dict]:
        """Every well-formed event in order; a line that does not parse is skipped with a warning."""
        if not self.path.is_file():
            return []
        events = []
        for number, line in enumerate(self.path.read_bytes().splitlines(), start=1):
            try:
                event = json.loads(line)
                if not _is_event(event):
                    raise ValueError("not a board event")
            except (ValueError, UnicodeDecodeError):
                warnings.warn(f"{self.path}: line {number} is not a board event and was skipped", stacklevel=3)
                continue
            events.append(event)
        return events

    def _append(self, event: dict) -> None:
        """One line at the end of the log (called under the lock). After a torn last line, a newline first, so
        the torn line stays alone and this one parses."""
        line = (json.dumps(event, ensure_ascii=False, separators=(",", ":")) + "\n").encode()
        fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            size = os.fstat(fd).st_size
            if size and os.pread(fd, 1, size - 1) != b"\n":
                line = b"\n" + line
            while line:  # one write of the whole line, at the end of the file (a short write goes on)
                line = line[os.write(fd, line):]
            os.fsync(fd)
        finally:
            os.close(fd)

    def _rewrite(self, records: list[dict]) -> None:
        """The log holding exactly `records` (called under the lock): a temporary file, fsync, then rename."""
        fd, tmp = tempfile.mkstemp(prefix=".board.", dir=self.folder)
        try:
            with os.fdopen(fd, "wb") as f:
                for record in records:
                    f.write((json.dumps({"share": record}, ensure_ascii=False, separators=(",", ":")) + "\n").encode())
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def _locked(self) -> contextlib.AbstractContextManager[None]:
        return folder_lock(self.folder / "board.lock", self._lock)

    @staticmethod
    def _replay(events: list[dict]) -> dict[str, dict]:
        shared: dict[str, dict] = {}
        for event in events:
            if "share" in event:
                shared[event["share"]["id"]] = event["share"]
            else:
                shared.pop(event["withdraw"], None)
        return shared

    # --- what learners and pages call ---------------------------------------------------------------------
    def entries(self) -> list[Entry]:
        """The results on the board now, oldest first."""
        return [Entry(**{k: rec[k] for k in ("id", "time", "run_id", "nickname", "knobs", "metrics")})
                for rec in self._replay(self._events()).values()]

    def share(self, run_id: str, nickname: str, knobs: dict, metrics: dict) -> tuple[Entry, str]:
        """Put one finished run on the board; returns (its entry, the key that withdraws it). One entry per run."""
        if not isinstance(run_id, str) or not 1 <= len(run_id) <= MAX_TEXT:
            raise ValueError(f"run_id={run_id!r} is not allowed: use the run's id, 1 to {MAX_TEXT} characters")
        name = check_nickname(nickname)
        knobs, metrics = _check_values("knobs", KNOBS, knobs), _check_values("metrics", METRICS, metrics)
        key = secrets.token_urlsafe(16)
        record = {"id": secrets.token_hex(6), "time": time.time(), "run_id": run_id, "nickname": name,
                  "knobs": knobs, "metrics": metrics, "key_sha256": hashlib.sha256(key.encode()).hexdigest()}
        with self._locked():  # the checks read the log as it is under the lock: no two shares slip past them
            shared = self._replay(self._events())
            if any(rec["run_id"] == run_id for rec in shared.values()):
                raise ValueError(f"run_id={run_id!r} is already on the board: a run is shared once "
                                 "(withdraw it first to share it again)")
            if len(shared) >= self.max_results:
                raise ValueError(f"the board holds its limit of {self.max_results} results (max_board_results): "
                                 "the teacher can export and clear it")
            self._append({"share": record})
        return Entry(**{k: record[k] for k in ("id", "time", "run_id", "nickname", "knobs", "metrics")}), key

    def withdraw(self, entry_id: str, key: str) -> None:
        """Take a result off the board; `key` is the one `share` returned for it."""
        with self._locked():
            shared = self._replay(self._events())
            record = shared.get(entry_id)
            if record is None:
                raise ValueError(f"entry_id={entry_id!r} is not on the board")
            given = hashlib.sha256(str(key).encode()).hexdigest()
            if not hmac.compare_digest(given, record["key_sha256"]):
                raise ValueError("key does not match: only the session that shared a result can withdraw it")
            self._rewrite([rec for rec in shared.values() if rec["id"] != entry_id])

    def clear(self) -> int:
        """Take every result off the board and the disk (the teacher's control); returns how many there were."""
        with self._locked():
            shared = self._replay(self._events())
            self._rewrite([])
        return len(shared)

    def export_rows(self) -> list[dict]:
        """One flat row per result (for CSV and JSON): nickname, knobs and metrics side by side."""
        return [{"id": e.id, "time": e.time, "run_id": e.run_id, "nickname": e.nickname, **e.knobs, **e.metrics}
                for e in self.entries()]
