"""A learner's quick replay, run live from the page in its own process.

    job = LiveReplay.start("rank")      # python -m lora_core.replay run rank --quick --out <temp dir>
    job.status()                        # "running", "done" or "failed"
    job.progress()                      # the runs finished so far, one line each
    job.result()                        # the JSON result once done

A replay trains several models and takes minutes. In the server's own process it would hold the GIL, load a
second copy of the model and draw from torch's process-wide state; as a child process it shares nothing with
other learners' sessions, the page polls it from a fragment, and cancelling it is a kill.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from . import record
from .experiments import experiment

_REPO = str(Path(__file__).resolve().parents[2])  # the folder holding lora_core, installed or not


class LiveReplay:
    """One quick replay running in a child process, writing into its own temporary folder."""

    def __init__(self, name: str, folder: Path, process: subprocess.Popen):
        self.name, self.folder, self.process = name, folder, process

    @classmethod
    def start(cls, name: str, device: str = "cpu") -> LiveReplay:
        """Start `python -m lora_core.replay run NAME --quick` (ValueError for an unknown name)."""
        experiment(name)  # checks the name before anything starts
        folder = Path(tempfile.mkdtemp(prefix=f"lora-lab-replay-{name}-"))
        env = {**os.environ, "HF_HUB_OFFLINE": os.environ.get("HF_HUB_OFFLINE", "1"),
               "PYTHONPATH": os.pathsep.join(p for p in (_REPO, os.environ.get("PYTHONPATH", "")) if p)}
        log = open(folder / "log.txt", "w", encoding="utf-8")
        argv = [sys.executable, "-m", "lora_core.replay", "run", name, "--quick", "--device", device,
                "--out", str(folder)]
        process = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=_REPO)
        log.close()  # the child holds its own descriptor
        return cls(name, folder, process)

    def status(self) -> str:
        """"running", "done" (the result file exists) or "failed"."""
        code = self.process.poll()
        if code is None:
            return "running"
        return "done" if code == 0 and (self.folder / f"{self.name}.json").is_file() else "failed"

    def progress(self) -> list[str]:
        """The child's log lines that report a finished run (what the page shows while it waits)."""
        path = self.folder / "log.txt"
        lines = path.read_text(encoding="utf-8", errors="replace").splitlines() if path.is_file() else []
        return [line.strip() for line in lines if line.startswith("  ")]

    def error(self) -> str:
        """The last lines of the child's output, for a failed run."""
        path = self.folder / "log.txt"
        if not path.is_file():
            return ""
        return "\n".join(path.read_text(encoding="utf-8", errors="replace").splitlines()[-15:])

    def result(self) -> dict | None:
        """The finished result, or None while it runs (or if it failed)."""
        return record.load(self.folder / f"{self.name}.json") if self.status() == "done" else None

    def cancel(self) -> None:
        """Stop the child (if it still runs) and delete its folder."""
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)
        shutil.rmtree(self.folder, ignore_errors=True)
