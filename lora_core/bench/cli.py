"""`python -m lora_core.bench`: the benchmark's command line, and the app's live button.

run.py measures; this module parses arguments, stamps a result with its provenance (command, commit,
device, time) and prints it as a table or one JSON line. `live_benchmark` runs the same command in a
child process, so a benchmark never changes the thread count or the RNG of a shared server.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

from ..provenance import provenance as stamp
from . import run
from .report import (
    comparison_markdown,
    format_layer_table,
    format_table,
    layer_benchmark,
    load_result,
    markdown_table,
)
from .run import DTYPES, LIVE, VARIANTS, BenchConfig, run_benchmark
from .variants import ADAPTERS, TARGETS


def live_benchmark(batch: int = LIVE.batch, seq: int = LIVE.seq, repeats: int = LIVE.repeats,
                   timeout_s: float = 600.0) -> dict:
    """The app's live button: LIVE's small setting at this batch, seq and repeats, timed in a child process.

    A benchmark sets the thread count and seeds its random model, both process-wide in torch. On a shared
    server that would slow or reseed every other learner's session, so the timing runs in its own
    `python -m lora_core.bench --json` process and only the JSON result comes back.
    """
    cfg = replace(LIVE, batch=batch, seq=seq, repeats=repeats)  # checked here: a bad value is a ValueError now
    argv = [sys.executable, "-m", "lora_core.bench", "--json", "--batch", str(cfg.batch), "--seq", str(cfg.seq),
            "--repeats", str(cfg.repeats), "--warmup", str(cfg.warmup), "--runs", str(cfg.runs),
            "--targets", *cfg.targets, "--ranks", *map(str, cfg.ranks), "--variants", *cfg.variants,
            "--adapters", *cfg.adapters,
            *(["--threads", str(cfg.threads)] if cfg.threads is not None else [])]
    repo = str(Path(__file__).resolve().parents[2])  # the folder holding lora_core, installed or not
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (repo, os.environ.get("PYTHONPATH", "")) if p)}
    done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout_s, env=env, check=False)
    if done.returncode != 0 or not done.stdout.strip():
        raise RuntimeError(f"the benchmark process failed (exit code {done.returncode}): {done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


# --- command line -----------------------------------------------------------------------------------
def _parse(argv: Sequence[str] | None) -> tuple[BenchConfig, argparse.Namespace]:
    p = argparse.ArgumentParser(prog="python -m lora_core.bench", description=run.__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--model", default="distilgpt2",
                   help="a shipped config name or a folder with config.json (random weights; default distilgpt2)")
    p.add_argument("--dtype", default="fp32", choices=sorted(DTYPES))
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--seq", type=int, default=64)
    p.add_argument("--repeats", type=int, default=7, help="timed steps per variant and run")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--runs", type=int, default=1, help="repeat the whole measurement; medians across runs")
    p.add_argument("--targets", nargs="+", default=["c_attn", "all-linear"], choices=sorted(TARGETS))
    p.add_argument("--ranks", nargs="+", type=int, default=[8, 64])
    p.add_argument("--variants", nargs="+", default=["frozen", "ours", "peft", "full"], choices=list(VARIANTS),
                   help="ours-addmm / ours-plain: lora_core with its slower forward paths, for comparison")
    p.add_argument("--adapters", nargs="+", default=["lora"], choices=list(ADAPTERS),
                   help="what ours and peft train: one LoRA adapter, one DoRA adapter, two LoRA adapters both active")
    p.add_argument("--layers", action="store_true",
                   help="instead: time one LoRA layer per distilgpt2 shape, each forward path against the frozen layer")
    p.add_argument("--compile", action="store_true", help="also time torch.compile'd variants")
    p.add_argument("--cuda-graphs", action="store_true", help="also time whole-step CUDA graphs (CUDA only)")
    p.add_argument("--compile-budget", type=float, default=240.0, help="seconds; stop compiling past this")
    p.add_argument("--rounds", type=int, default=60, help="--layers: interleaved rounds per shape")
    p.add_argument("--threads", type=int, default=None, help="CPU threads (default: torch's choice)")
    p.add_argument("--json", action="store_true", help="print one JSON line instead of the table")
    p.add_argument("--markdown", metavar="RESULT_JSON", help="print a saved --json result as a Markdown table")
    a = p.parse_args(argv)
    cfg = BenchConfig(device=a.device, dtype=a.dtype, batch=a.batch, seq=a.seq, repeats=a.repeats, warmup=a.warmup,
                      runs=a.runs, targets=tuple(a.targets), ranks=tuple(a.ranks), compile=a.compile,
                      cuda_graphs=a.cuda_graphs, compile_budget_s=a.compile_budget, variants=tuple(a.variants),
                      adapters=tuple(a.adapters), threads=a.threads)
    return cfg, a


def main(argv: Sequence[str] | None = None) -> int:
    cfg, args = _parse(argv)
    if args.markdown:
        result = load_result(args.markdown)
        print(markdown_table(result))
        if comparisons := comparison_markdown(result):  # results with DoRA / two adapters: ours, PEFT, floor
            print("\n" + comparisons)
        return 0
    if args.layers:
        rows = layer_benchmark(tokens=cfg.batch * cfg.seq, r=cfg.ranks[0], rounds=args.rounds, threads=cfg.threads,
                               peft="peft" in cfg.variants)
        print(json.dumps(rows) if args.json else format_layer_table(rows), flush=True)
        return 0
    result = run_benchmark(cfg, args.model, log=lambda msg: print(msg, file=sys.stderr, flush=True))
    result["provenance"] = provenance(argv if argv is not None else sys.argv[1:])
    print(json.dumps(result) if args.json else format_table(result), flush=True)
    return 0


def provenance(argv: Sequence[str]) -> dict:
    """What a shipped benchmark result says about itself (lora_core.provenance)."""
    return stamp("lora_core.bench", argv)

