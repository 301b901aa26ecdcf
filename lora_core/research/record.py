"""Replay results on disk: written with provenance, read back for the page and the lesson.

    path = write(result, out_dir)              # out_dir/NAME.json
    shipped("rank")                            # results/replay/rank.json, the full run shipped with LoRA Lab
    disagreements(shipped("rank"), live)       # where a learner's quick run and the shipped result differ

A result is {"name", "title", "paper", "scale", "command", "commit", "uncommitted_changes", "device", "torch",
"time", "seconds", "seeds", "settings", "results"}: everything a page needs to draw, and nothing hand-edited.
`seeds` are the scale's seeds, over which a replay repeats the runs it compares (targets, rank, the attention
against all-linear comparison); a replay that reads single runs (forgetting, intruders, amplification, the
learning-rate sweep) uses seed 0, and the subspace replay seeds 0 and 1.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from pathlib import Path

from ..settings_file import REPO_ROOT

RESULTS_DIR = REPO_ROOT / "results" / "replay"
REQUIRED = ("name", "title", "paper", "scale", "command", "commit", "device", "seconds", "seeds", "results")


def _clean(value):
    """JSON has no NaN or infinity: write them as null (a diverged run's loss, an undefined ratio)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    return value


def write(result: dict, out_dir: str | os.PathLike) -> Path:
    """Write `result` to out_dir/NAME.json atomically (a reader never sees half a file)."""
    check(result)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{result['name']}.json"
    fd, tmp = tempfile.mkstemp(dir=out, prefix=f".{result['name']}.", suffix=".tmp")
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        json.dump(_clean(result), f, indent=1, allow_nan=False)
        f.write("\n")
    os.replace(tmp, path)
    return path


def check(result: dict) -> None:
    """ValueError naming the first missing field, if `result` is not a complete replay result."""
    if not isinstance(result, dict):
        raise ValueError(f"result={type(result).__name__} is not allowed: a replay result is a dict")
    missing = [key for key in REQUIRED if key not in result]
    if missing:
        raise ValueError(f"result is missing {', '.join(missing)}: a replay result needs {', '.join(REQUIRED)}")


def load(path: str | os.PathLike) -> dict:
    """Read one result file, checked."""
    result = json.loads(Path(path).read_text(encoding="utf-8"))
    check(result)
    return result


def shipped(name: str, results_dir: str | os.PathLike | None = None) -> dict | None:
    """The shipped full result of experiment `name` (in RESULTS_DIR unless `results_dir`), or None when it has not
    been run and committed yet."""
    path = Path(results_dir if results_dir is not None else RESULTS_DIR) / f"{name}.json"
    return load(path) if path.is_file() else None
