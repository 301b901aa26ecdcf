"""Finished LoRA runs on disk, so an interrupted replay resumes where it stopped instead of starting over.

    cache = RunCache("results/replay/.runs", scale, "cpu")
    cache.load(spec)          # (summary, factors) of a run finished earlier with the same code, or None
    cache.save(spec, summary, factors)

A full replay is hours of CPU; a session, a laptop lid or a cancelled job can stop it half way. Each finished
LoRA run is saved as safetensors, its factors with its summary as metadata (a few MB; ΔW is rebuilt from
them), under a key made of the run's spec, the scale, the device, the model and a hash of the source files that
decide a run's numbers, so a changed Trainer or task never serves a stale run. Full fine-tunes are not cached:
their ΔW is half a gigabyte.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from dataclasses import asdict
from pathlib import Path

from safetensors import safe_open
from safetensors.torch import save_file

_PACKAGE = Path(__file__).resolve().parents[1]
# The sources whose change can change a run's numbers.
DECIDING = ("research/runs.py", "research/e2e.py", "training/trainer.py", "training/metrics.py",
            "training/data.py", "layers.py", "fused.py", "inject.py", "config.py")


def code_version() -> str:
    """A short hash of the deciding sources: equal hashes, equal runs."""
    digest = hashlib.sha256()
    for name in DECIDING:
        digest.update(name.encode())
        digest.update((_PACKAGE / name).read_bytes())
    return digest.hexdigest()[:16]


class RunCache:
    """One folder of finished LoRA runs for one scale, device and code version."""

    def __init__(self, folder: str | os.PathLike, scale, device: str, model: str):
        self.folder = Path(folder)
        self._context = {"scale": asdict(scale), "device": device, "model": model, "code": code_version()}

    def _path(self, spec) -> Path:
        key = json.dumps({"spec": asdict(spec), **self._context}, sort_keys=True)
        return self.folder / f"{hashlib.sha256(key.encode()).hexdigest()[:24]}.safetensors"

    def load(self, spec) -> tuple[dict, dict] | None:
        """(summary, factors) of `spec` if a run with the same code finished earlier; None otherwise."""
        path = self._path(spec)
        if spec.kind != "lora" or not path.is_file():
            return None
        with safe_open(path, framework="pt") as f:   # tensors and a JSON string: nothing is unpickled
            summary = json.loads(f.metadata()["summary"])
            names = sorted({key.rsplit(".", 1)[0] for key in f.keys()})
            factors = {name: (f.get_tensor(f"{name}.B"), f.get_tensor(f"{name}.A")) for name in names}
        return summary, factors

    def save(self, spec, summary: dict, factors: dict) -> None:
        """Keep a finished LoRA run (atomically: a reader never sees half a file)."""
        if spec.kind != "lora":
            return
        self.folder.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.folder, suffix=".tmp")
        os.close(fd)
        tensors = {f"{name}.{which}": t.contiguous() for name, (B, A) in factors.items()
                   for which, t in (("B", B), ("A", A))}
        save_file(tensors, tmp, metadata={"summary": json.dumps(summary)})
        os.replace(tmp, self._path(spec))
