"""`python -m lora_core.replay`: list the replays, or run one (or all) and write DIR/NAME.json.

    python -m lora_core.replay list
    python -m lora_core.replay run rank --quick                 # a few minutes on a 2-core CPU
    python -m lora_core.replay run all --out results/replay     # the full versions, shipped with LoRA Lab

`run` with several names (or all) keeps one Lab, so runs that several replays share (the rank sweep's adapters)
are trained once; each result is written as soon as its replay finishes. `run_replay` is the same thing as a
function, for the page and the lesson.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from ..provenance import provenance
from . import record
from .experiments import ALL_ORDER, EXPERIMENTS, NAMES, experiment
from .runs import FULL, QUICK, Lab

DEFAULT_OUT = "replay-results"


def run_replay(name: str, lab: Lab, argv: Sequence[str] = ()) -> dict:
    """Run experiment `name` on `lab` and return its result with provenance (not yet written)."""
    e = experiment(name)
    start, hits_before = time.perf_counter(), lab.cache_hits
    results = e.run(lab)
    seconds = time.perf_counter() - start
    scale = lab.scale
    command = list(argv) or ["run", name, *(["--quick"] if scale.name == "quick" else [])]
    return {"name": e.name, "title": e.title, "paper": e.paper, "scale": scale.name,
            **provenance("lora_core.replay", command, lab.device),
            "seconds": seconds, "seeds": lab.seeds(), "runs_from_cache": lab.cache_hits - hits_before,
            "settings": {"model": "SmolLM2-135M-Instruct", "task": "E2E-style data-to-text (lora_core.research.e2e)",
                         "steps": scale.steps, "curve_steps": scale.curve_steps, "batch_size": scale.batch_size,
                         "seq_len": scale.seq_len, "test_loss_pairs": scale.n_loss, "bleu_inputs": scale.n_bleu,
                         "references_per_input": len(lab.task.references[0]), "optimizer": "AdamW",
                         "schedule": "10% linear warmup, cosine to 10%", "grad_clip": 1.0},
            "results": results}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m lora_core.replay",
                                     description="Replay LoRA papers' findings on SmolLM2-135M-Instruct.")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("list", help="list the experiments")
    run = sub.add_parser("run", help="run experiments (or all) and write DIR/NAME.json for each")
    run.add_argument("names", nargs="+", choices=[*NAMES, "all"], metavar="NAME",
                     help=f"one or more of {', '.join(NAMES)}, or all")
    run.add_argument("--quick", action="store_true", help="the reduced version (a few minutes on a laptop CPU)")
    run.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    run.add_argument("--out", default=DEFAULT_OUT, help=f"output folder (default: {DEFAULT_OUT})")
    run.add_argument("--no-cache", action="store_true",
                     help="train every run afresh (default: finished LoRA runs are kept in OUT/.runs, so a stopped "
                          "replay resumes)")
    return parser


def main(argv: Sequence[str] | None = None, log: Callable[[str], None] = print) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = _parser().parse_args(argv)
    if args.command == "list":
        width = max(map(len, NAMES))
        for e in EXPERIMENTS:
            log(f"{e.name:<{width}}  {e.title}  [{e.paper}]")
        return 0
    cache = None if args.no_cache else str(Path(args.out) / ".runs")
    lab = Lab.open(QUICK if args.quick else FULL, device=args.device, log=log, cache_dir=cache)
    names = ALL_ORDER if "all" in args.names else list(dict.fromkeys(args.names))
    # each result records the command that makes it alone
    options = [*(["--quick"] if args.quick else []), *(["--device", args.device] if args.device != "cpu" else []),
               "--out", args.out]
    for name in names:
        log(f"{name}: running ({lab.scale.name})...")
        result = run_replay(name, lab, ["run", name, *options])
        log(f"{name}: {result['seconds']:.0f} s -> {record.write(result, args.out)}")
    return 0
