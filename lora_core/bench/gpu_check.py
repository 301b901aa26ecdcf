"""`make gpu-check`: everything LoRA Lab says about a GPU, measured in one command of a few minutes.

    python -m lora_core.bench.gpu_check --out results/gpu              # on a CUDA machine
    python -m lora_core.bench.gpu_check --rehearse --out /tmp/gpu      # the same code on a CPU, every size tiny

Six parts, each in its own child process with its own time limit, so one that fails or hangs costs only itself:

    nf4             lora_core's NF4 codes, absmax and weights on the GPU against a float64 reference (gpu_parts.py)
    tests           every test marked `gpu` (pytest -m gpu over GPU_TEST_FILES)
    bench           the benchmark in bf16, batch 16 x seq 256: c_attn and all-linear at r = 8 and 64, the frozen
                    floor, ours, PEFT and full fine-tuning, LoRA and DoRA, eager
    bench-compiled  the same benchmark at r = 8 with torch.compile: the compiled floor, ours, ours-plain and PEFT
    bench-graphs    the r = 8 benchmark with whole-step CUDA graphs beside eager; apart from `bench`, because it
                    twice ended in an illegal memory access on an H200, which takes the whole process down
    finetune        the app's Trainer for a few hundred steps on SmolLM2's shapes (fp32, bf16 and NF4 base) and
                    Llama-3.2-1B's (bf16): steps/s, tokens/s, peak memory

Each part writes gpu_<part>.json into --out; gpu_check.json holds the summary and the provenance (command, commit,
GPU, torch and CUDA versions, package versions, time). It runs on whatever torch, transformers and PEFT the machine
has (a GPU machine may have no package index), imports neither streamlit nor plotly, and builds every model from a
shipped config with random weights. Without CUDA it stops at once, exit code 2, and writes nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from importlib import metadata
from pathlib import Path

import torch

from ..provenance import provenance
from ..settings_file import REPO_ROOT

# finetune last: it is the longest, and it reports each row as it ends, so whatever time is left still gives rows
PARTS = ("nf4", "tests", "bench", "bench-compiled", "bench-graphs", "finetune")
# seconds each part may take; the whole check also stops starting parts once --deadline-s is near
BUDGET_S = {"nf4": 60, "tests": 120, "bench": 120, "finetune": 210, "bench-compiled": 240, "bench-graphs": 120}
# the files holding tests marked `gpu` (tests/test_gpu_check.py checks that none is missing)
GPU_TEST_FILES = ("tests/test_gpu.py", "tests/test_device.py", "tests/test_bench.py", "tests/test_memory_measured.py")
PACKAGES = ("torch", "transformers", "peft", "accelerate", "safetensors", "numpy")
NO_CUDA = ("make gpu-check needs a CUDA GPU, and torch {torch} sees none (torch.cuda.is_available() is False). "
           "Nothing was run. On a machine without one, `--rehearse` runs the same check on the CPU at tiny sizes.")

_BENCH = ["--device", "cuda", "--dtype", "bf16", "--batch", "16", "--seq", "256", "--targets", "c_attn", "all-linear",
          "--warmup", "3", "--repeats", "15", "--runs", "3", "--json"]
_REHEARSE_BENCH = ["--device", "cpu", "--dtype", "fp32", "--batch", "2", "--seq", "16", "--targets", "c_attn",
                   "--warmup", "1", "--repeats", "2", "--runs", "1", "--threads", "1", "--json"]


def bench_args(part: str, rehearse: bool = False) -> list[str]:
    """The benchmark's command line for `bench`, `bench-compiled` or `bench-graphs`."""
    common = _REHEARSE_BENCH if rehearse else _BENCH
    if part == "bench":
        ranks = ["8"] if rehearse else ["8", "64"]
        return [*common, "--ranks", *ranks, "--variants", "frozen", "ours", "ours-plain", "peft", "full", "--adapters",
                "lora", "dora"]
    if part == "bench-compiled":
        return [*common, "--ranks", "8", "--compile", "--compile-budget", "120", "--variants", "frozen", "ours",
                "ours-plain", "peft", "--adapters", "lora"]
    if part == "bench-graphs":
        return [*common, "--ranks", "8", "--cuda-graphs", "--variants", "frozen", "ours", "peft", "--adapters", "lora"]
    raise ValueError(f"part={part!r} is not a benchmark part: use 'bench', 'bench-compiled' or 'bench-graphs'")


def versions() -> dict:
    """Installed versions of the packages the numbers depend on, CUDA's and the GPU's name."""
    out = {}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    out["cuda"] = torch.version.cuda
    out["gpu"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return out


def _env(rehearse: bool) -> dict:
    path = os.pathsep.join(p for p in (str(REPO_ROOT), os.environ.get("PYTHONPATH", "")) if p)
    # a rehearsal runs tests/test_gpu.py on the CPU (its device comes from LORA_GPU_TEST_DEVICE)
    return {**os.environ, "PYTHONPATH": path, "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1",
            **({"LORA_GPU_TEST_DEVICE": "cpu"} if rehearse else {})}


def _text(stream) -> str:
    return stream.decode(errors="replace") if isinstance(stream, bytes) else (stream or "")


def _child(argv: list[str], timeout: float, rehearse: bool) -> tuple[int | None, str, str]:
    """Run `python *argv` from the repository root: (exit code, or None past `timeout`; stdout; stderr's tail).

    Past its limit the child is killed and what it printed so far is kept: a part that prints each result as it
    goes (the fine-tuning rows) still reports those."""
    try:
        done = subprocess.run([sys.executable, *argv], cwd=REPO_ROOT, env=_env(rehearse), capture_output=True,
                              text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired as err:
        return None, _text(err.stdout), _text(err.stderr)[-4000:]
    return done.returncode, done.stdout, done.stderr[-4000:]


def junit_summary(path: Path) -> dict:
    """Counts and failures from pytest's JUnit XML."""
    cases = ET.parse(path).getroot().iter("testcase")
    out = {"passed": 0, "failed": 0, "skipped": 0, "failures": [], "skips": []}
    for case in cases:
        name = f"{case.get('classname')}::{case.get('name')}"
        bad = case.find("failure") if case.find("failure") is not None else case.find("error")
        skip = case.find("skipped")
        if bad is not None:
            out["failed"] += 1
            out["failures"].append({"test": name, "message": (bad.get("message") or "")[:500]})
        elif skip is not None:
            out["skipped"] += 1
            out["skips"].append({"test": name, "reason": (skip.get("message") or "")[:200]})
        else:
            out["passed"] += 1
    return out


def run_part(part: str, rehearse: bool, timeout: float) -> dict:
    """One part in a child process; its JSON-ready result (with "ok", "seconds" and, on failure, "error")."""
    t0 = time.perf_counter()
    if part == "tests":
        with tempfile.TemporaryDirectory() as tmp:
            xml = Path(tmp) / "junit.xml"
            code, out, err = _child(["-m", "pytest", "-q", "-m", "gpu", "-p", "no:cacheprovider",
                                     f"--junitxml={xml}", *GPU_TEST_FILES], timeout, rehearse)
            result = {"part": "tests", **(junit_summary(xml) if xml.exists() else {}), "exit_code": code,
                      "output_tail": out[-3000:]}
        result["ok"] = code == 0
    elif part in ("bench", "bench-compiled", "bench-graphs"):
        code, out, err = _child(["-m", "lora_core.bench", *bench_args(part, rehearse)], timeout, rehearse)
        lines = out.strip().splitlines()
        result = {"part": part, **(json.loads(lines[-1]) if code == 0 and lines else {}), "exit_code": code}
        result["ok"] = code == 0
    elif part in ("nf4", "finetune"):
        code, out, err = _child(["-m", "lora_core.bench.gpu_check", "--inner", part,
                                 *(["--rehearse"] if rehearse else [])], timeout, rehearse)
        lines = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
        done = [line for line in lines if "row" not in line]
        result = {**(done[-1] if code == 0 and done else {"part": part, "ok": False}), "exit_code": code}
        if not done:  # stopped early: the rows it finished
            result["rows"] = [line["row"] for line in lines if "row" in line]
    else:
        raise ValueError(f"part={part!r} is not allowed: choose from {', '.join(PARTS)}")
    result["seconds"] = time.perf_counter() - t0
    if code is None:
        result["error"] = f"stopped after its {timeout:.0f} s limit"
    elif code != 0:
        result["error"] = f"exit code {code}"
    if not result.get("ok"):
        result["stderr_tail"] = err
    return result


def _inner(part: str, rehearse: bool) -> dict:
    from . import gpu_parts  # the parts import the Trainer and the quantizer; the parent needs neither

    device = "cpu" if rehearse else "cuda"
    if part == "nf4":
        shapes = ((96, 64), (64, 192)) if rehearse else gpu_parts.NF4_SHAPES
        return gpu_parts.nf4_check(device, shapes, repeats=2 if rehearse else 20)
    def progress(row: dict) -> None:  # one line per finished row, so a part stopped at its limit still has them
        print(json.dumps({"row": row}), flush=True)
        print(f"  {row['model']} {row['precision']}: {row['steps']} steps, {row['steps_per_s']:.1f} steps/s "
              f"(setup {row['setup_s']:.0f} s, warm-up {row['warmup_s']:.0f} s)", file=sys.stderr, flush=True)

    return gpu_parts.finetune_rows(device, rehearse=rehearse, on_row=progress)


def _parse(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m lora_core.bench.gpu_check", description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default=str(REPO_ROOT / "results" / "gpu"), help="folder for the JSON files")
    p.add_argument("--parts", nargs="+", default=list(PARTS), choices=PARTS)
    p.add_argument("--deadline-s", type=float, default=480.0, help="seconds; no part runs past this")
    p.add_argument("--rehearse", action="store_true", help="no CUDA needed: every part on the CPU at tiny sizes")
    p.add_argument("--inner", choices=("nf4", "finetune"), help=argparse.SUPPRESS)  # a child process's part
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parse(argv)
    if args.inner:
        print(json.dumps(_inner(args.inner, args.rehearse)), flush=True)
        return 0
    if not args.rehearse and not torch.cuda.is_available():
        print(NO_CUDA.format(torch=torch.__version__), file=sys.stderr)
        return 2
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    summary = {"check": "lora_core.bench.gpu_check", "rehearsal": args.rehearse, "versions": versions(),
               "provenance": provenance("lora_core.bench.gpu_check", list(argv if argv is not None else sys.argv[1:]),
                                        "cpu" if args.rehearse else "cuda"),
               "parts": {}}
    for part in args.parts:
        left = args.deadline_s - (time.perf_counter() - start)
        if left < min(30.0, BUDGET_S[part]):
            summary["parts"][part] = {"ok": False, "error": f"not started: {left:.0f} s left of the deadline"}
            continue
        print(f"gpu-check: {part} (at most {min(BUDGET_S[part], left):.0f} s)...", file=sys.stderr, flush=True)
        result = {**run_part(part, args.rehearse, min(BUDGET_S[part], left)), "provenance": summary["provenance"]}
        (out / f"gpu_{part.replace('-', '_')}.json").write_text(json.dumps(result, indent=1))
        summary["parts"][part] = {k: result.get(k) for k in ("ok", "seconds", "error", "passed", "failed", "skipped")
                                  if result.get(k) is not None}
        print(f"gpu-check: {part} {'ok' if result.get('ok') else 'FAILED'} in {result['seconds']:.0f} s"
              + (f" ({result['error']})" if result.get("error") else ""), file=sys.stderr, flush=True)
    summary["seconds"] = time.perf_counter() - start
    summary["ok"] = all(p.get("ok") for p in summary["parts"].values())
    (out / "gpu_check.json").write_text(json.dumps(summary, indent=1))
    print(json.dumps(summary["parts"], indent=1))
    return 0 if summary["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
