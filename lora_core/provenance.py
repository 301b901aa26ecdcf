"""What a shipped result says about itself: the command that made it, the commit, the device and the time.

The benchmark (results/bench/) and the research replays (results/replay/) stamp every JSON with this, so a reader
can rerun the exact command on the exact code and see whether the numbers hold.
"""

from __future__ import annotations

import os
import shlex
import subprocess
from collections.abc import Sequence
from datetime import UTC, datetime

import torch

from .device import describe_device, pick_device
from .settings_file import REPO_ROOT


def provenance(module: str, argv: Sequence[str], device: str | None = None) -> dict:
    """{command, commit, uncommitted_changes, device, torch, time} for `python -m module *argv`."""
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True,
                                timeout=10, check=True).stdout.strip()
        dirty = bool(subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO_ROOT,
                                    capture_output=True, text=True, timeout=10, check=True).stdout.strip())
    except (OSError, subprocess.SubprocessError):  # not a git checkout (an installed wheel), or no git
        commit, dirty = None, None
    if told := os.environ.get("LORA_LAB_COMMIT"):
        # A tree copied to another machine (a GPU machine, say) may carry no .git or a stale one: the sender says
        # which commit it sent, and that wins; whether the copy was changed since is then unknown.
        commit, dirty = told, None
    return {"command": shlex.join(["python", "-m", module, *argv]), "commit": commit,
            "uncommitted_changes": dirty, "device": describe_device(pick_device(device)),
            "torch": torch.__version__, "time": datetime.now(UTC).isoformat(timespec="seconds")}
