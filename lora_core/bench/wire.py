"""Bytes on the wire: what data-parallel training all-reduces each step, LoRA against full fine-tuning, measured.

    python -m lora_core.bench.wire --out results/distributed/wire.json     # 2 CPU processes, gloo, ~1-2 minutes

It launches itself under torchrun (`--processes`, default 2) and trains distilgpt2's shapes (random weights) with
the app's DistributedTrainer for a few steps per case: LoRA on c_attn at r = 8 and 64, LoRA on every linear layer
at r = 8, and full fine-tuning. DDP's communication hook counts the gradient bytes of every bucket it all-reduces
(training/distributed.py, WireCounter), so the numbers are what crossed, not a formula. Beside them: the formula
(4 bytes per trainable parameter), the seconds per step, and what a ring all-reduce sends per process on top
(2(N-1)/N times the payload). Timings on a shared 2-core VM are noisy; the bytes are exact.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

import torch

from ..config import LoraConfig
from ..inject import inject_lora
from ..provenance import provenance
from ..settings_file import REPO_ROOT
from ..training.distributed import local_launcher

# (name, LoRA targets and rank, or None for full fine-tuning)
CASES = (("LoRA c_attn r=8", (["c_attn"], 8)), ("LoRA c_attn r=64", (["c_attn"], 64)),
         ("LoRA all-linear r=8", ("all-linear", 8)), ("full fine-tuning", None))


def _worker(out: str, steps: int, batch: int, seq: int) -> None:
    """One process of the launch: every case in turn; rank 0 writes the rows."""
    from ..models import gpt2_tokenizer
    from ..training.data import load_dataset
    from ..training.distributed import DistributedTrainer
    from ..training.trainer import TrainConfig
    from .run import random_model

    torch.set_num_threads(1)
    rows = []
    for name, spec in CASES:
        model = random_model("distilgpt2", "cpu", torch.float32, seed=0)
        if spec is not None:
            targets, r = spec
            inject_lora(model, LoraConfig(r=r, lora_alpha=2 * r, target_modules=targets),
                        generator=torch.Generator().manual_seed(0))
        trainer = DistributedTrainer(model, gpt2_tokenizer(), load_dataset("recommendations"),
                                     TrainConfig(steps=steps + 1, batch_size=batch, seq_len=seq, lr=1e-4),
                                     full_finetune=spec is None)
        trainer.run(1)  # the first step builds DDP's buckets and AdamW's state: not timed, not counted
        first, first_calls = trainer.wire.bytes, trainer.wire.calls
        history = trainer.run(steps)
        trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
        rows.append({"case": name, "trainable": trainable, "total": sum(p.numel() for p in model.parameters()),
                     "allreduced_bytes_per_step": (trainer.wire.bytes - first) / steps,
                     "formula_bytes_per_step": 4 * trainable,
                     "buckets_per_step": (trainer.wire.calls - first_calls) / steps,
                     "seconds_per_step": statistics.median(m["seconds"] for m in history),
                     "first_step_bytes": first})
        del trainer, model
    if int(os.environ.get("RANK", "0")) == 0:
        Path(out).write_text(json.dumps(rows))


def measure(processes: int = 2, steps: int = 3, batch: int = 2, seq: int = 64, timeout: float = 900) -> dict:
    """Launch the workers with torchrun on 127.0.0.1 and return the JSON-ready result (without provenance)."""
    if processes < 2:
        raise ValueError(f"processes={processes} is not allowed: nothing crosses a wire with fewer than 2")
    with tempfile.TemporaryDirectory() as tmp:
        rows_file = Path(tmp) / "rows.json"
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1",
               "PYTHONPATH": os.pathsep.join(p for p in (str(REPO_ROOT), os.environ.get("PYTHONPATH", "")) if p)}
        cmd = [*local_launcher(processes), "-m", "lora_core.bench.wire", "--worker", str(rows_file),
               "--steps", str(steps), "--batch", str(batch), "--seq", str(seq)]
        done = subprocess.run(cmd, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=timeout)
        if done.returncode != 0:
            raise RuntimeError(f"the {processes}-process launch failed (exit code {done.returncode}):\n"
                               + done.stderr[-3000:])
        rows = json.loads(rows_file.read_text())
    ring = 2 * (processes - 1) / processes
    for row in rows:
        row["ring_bytes_sent_per_process"] = ring * row["allreduced_bytes_per_step"]
    full = next(r for r in rows if r["case"] == "full fine-tuning")
    for row in rows:
        row["x_fewer_than_full"] = full["allreduced_bytes_per_step"] / row["allreduced_bytes_per_step"]
    return {"processes": processes, "backend": "gloo", "model": "distilgpt2 shapes, random weights",
            "batch_per_process": batch, "seq_len": seq, "timed_steps": steps, "dtype": "fp32", "rows": rows}


SHIPPED = REPO_ROOT / "results" / "distributed" / "wire.json"


def shipped(path: str | os.PathLike = SHIPPED) -> dict | None:
    """The shipped measurement (results/distributed/wire.json), or None."""
    path = Path(path)
    return json.loads(path.read_text()) if path.is_file() else None


def table(result: dict) -> list[dict]:
    """One row per case, as the Speed page and lesson 14 show it (MB = 10^6 bytes)."""
    return [{"case": r["case"], "trainable": r["trainable"],
             "MB all-reduced per step": r["allreduced_bytes_per_step"] / 1e6,
             "= 4 B × trainable": r["allreduced_bytes_per_step"] == r["formula_bytes_per_step"],
             "× fewer than full": r["x_fewer_than_full"], "s per step": r["seconds_per_step"]}
            for r in result["rows"]]


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m lora_core.bench.wire", description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default=str(REPO_ROOT / "results" / "distributed" / "wire.json"))
    p.add_argument("--processes", type=int, default=2)
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--seq", type=int, default=64)
    p.add_argument("--worker", help=argparse.SUPPRESS)  # one process of the launch: where rank 0 writes
    args = p.parse_args(argv)
    if args.worker:
        _worker(args.worker, args.steps, args.batch, args.seq)
        return 0
    try:
        result = measure(args.processes, args.steps, args.batch, args.seq)
    except ValueError as err:
        p.error(str(err))
    result["provenance"] = provenance("lora_core.bench.wire", list(argv if argv is not None else sys.argv[1:]), "cpu")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1) + "\n")
    for row in result["rows"]:
        print(f"{row['case']:>22}: {row['allreduced_bytes_per_step'] / 1e6:10.3f} MB all-reduced per step "
              f"({row['x_fewer_than_full']:.0f}x fewer than full), {row['seconds_per_step']:.2f} s per step")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
