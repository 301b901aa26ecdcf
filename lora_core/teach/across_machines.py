"""Lesson 14's library side: launching the fine-tuning CLI on several processes, and what each way of spreading
a LoRA run over N processes keeps per process and sends per step.

    run = launch_finetune(2, ["--model", "smollm2-135m", "--steps", "3"], out)   # torchrun, gloo, 127.0.0.1
    plan = scale_plan(base=134_515_008, adapter=460_800, processes=8)            # DDP against FSDP / ZeRO-3

The plan is arithmetic on the counts, labelled as such: bytes per process for the frozen base, the trainable
weights, their gradients and AdamW's two moments, and bytes moved per optimizer step by each collective. DDP
all-reduces the gradients (the ring sends 2(N-1)/N of them per process). FSDP and ZeRO-3 shard every weight,
so each process all-gathers the layers it computes, in the forward and again in the backward (the frozen base
included: that is the price of not holding it whole), then reduce-scatters the trainable gradients.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from ..settings_file import REPO_ROOT
from ..training.distributed import local_launcher


def launch_finetune(processes: int, args: list[str], out: str | os.PathLike, timeout: float = 900) -> dict:
    """`python -m lora_core.finetune *args --out out`, under torchrun with `processes` processes (1: no torchrun).

    Returns the run's metrics.json. A failed run raises RuntimeError with the tail of what it printed."""
    if processes < 1:
        raise ValueError(f"processes={processes} is not allowed: use 1 (one plain process) or more")
    launcher = [sys.executable] if processes == 1 else local_launcher(processes)
    cmd = [*launcher, "-m", "lora_core.finetune", *args, "--out", str(out)]
    env = {**os.environ, "HF_HUB_OFFLINE": os.environ.get("HF_HUB_OFFLINE", "1"), "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join(p for p in (str(REPO_ROOT), os.environ.get("PYTHONPATH", "")) if p)}
    done = subprocess.run(cmd, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    if done.returncode != 0:
        raise RuntimeError(f"the {processes}-process run failed (exit code {done.returncode}):\n{done.stderr[-3000:]}")
    return json.loads((Path(out) / "metrics.json").read_text())


@dataclass(frozen=True)
class ScaleRow:
    """One strategy's bytes: held per process, and moved per optimizer step per process."""

    strategy: str
    base_per_process: float      # the frozen weights each process stores
    trainable_state: float       # trainable weights + gradients + AdamW's m and v, per process
    sent_per_step: float         # bytes one process sends per optimizer step
    what_crosses: str


def scale_plan(base: int, adapter: int, processes: int, base_bytes: float = 2.0,
               trainable_bytes: float = 4.0) -> list[ScaleRow]:
    """DDP and FSDP / ZeRO-3, for LoRA (`adapter` parameters train on a frozen base of `base`) and for full
    fine-tuning of the same base. The frozen base is stored at `base_bytes` per weight (2: bf16; about 0.5: NF4's
    codes) and what trains at `trainable_bytes` (4: fp32), with fp32 gradients and AdamW's two fp32 moments."""
    for name, value in (("base", base), ("adapter", adapter), ("processes", processes)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name}={value!r} is not allowed: use an integer >= 1")
    n = processes
    ring = 2 * (n - 1) / n                   # all-reduce: a reduce-scatter then an all-gather
    gather = (n - 1) / n                     # one all-gather (or one reduce-scatter) of a tensor
    state, full_state = adapter * (trainable_bytes + 4 + 8), base * (trainable_bytes + 4 + 8)  # w + grad + m, v
    return [
        ScaleRow("LoRA, DDP", base * base_bytes, state, ring * adapter * 4, "the adapter's gradients (all-reduce)"),
        ScaleRow("LoRA, FSDP / ZeRO-3", base * base_bytes / n, state / n,
                 2 * gather * (base * base_bytes + adapter * trainable_bytes) + gather * adapter * 4,
                 "every weight gathered twice (forward, backward), the adapter's gradients reduce-scattered"),
        ScaleRow("full fine-tuning, DDP", 0.0, full_state, ring * base * 4, "every weight's gradient (all-reduce)"),
        ScaleRow("full fine-tuning, FSDP / ZeRO-3", 0.0, full_state / n,
                 2 * gather * base * trainable_bytes + gather * base * 4,
                 "every weight gathered twice, every gradient reduce-scattered"),
    ]
