"""What `make gpu-check` found, read back from results/gpu/ for the Speed page and docs/performance.md.

    shipped_gpu("bench_compiled")   # results/gpu/gpu_bench_compiled.json, or None
    goal_rows(result)               # the issue's three GPU goals against what was measured, per target set
    part_status()                   # which parts of the last shipped check passed, failed or were not run

The goals are the ones the GPU issue set for a bf16 step at batch 16 x seq 256 on distilgpt2's shapes: our compiled
LoRA step at most 1.03x the compiled frozen floor for c_attn r=8 and 1.15x for all-linear r=8, and at most 0.4x
PEFT's eager step. They are for the report, never asserted.
"""

from __future__ import annotations

import json

from ..settings_file import REPO_ROOT

GPU_RESULTS_DIR = REPO_ROOT / "results" / "gpu"
FLOOR_GOALS = {"c_attn": 1.03, "all-linear": 1.15}   # ours (compiled) / frozen floor (compiled), at r = 8
PEFT_EAGER_GOAL = 0.4                                 # ours (compiled) / PEFT (eager)


def shipped_gpu(part: str) -> dict | None:
    """results/gpu/gpu_<part>.json ("check", "tests", "bench", "bench_compiled", "finetune", "nf4"), or None."""
    path = GPU_RESULTS_DIR / f"gpu_{part}.json"
    return json.loads(path.read_text()) if path.is_file() else None


def _case(result: dict, name: str) -> dict | None:
    return next((c for c in result.get("cases", []) if c["name"] == name), None)


def goal_rows(result: dict, r: int = 8) -> list[dict]:
    """Per target set: our compiled step, the compiled floor, PEFT eager and compiled, and the ratios to the goals."""
    floor = _case(result, "frozen (floor)")
    rows = []
    for targets, goal in FLOOR_GOALS.items():
        ours, peft = _case(result, f"ours {targets} r={r}"), _case(result, f"peft {targets} r={r}")
        if floor is None or ours is None or "compiled" not in ours["ms"] or "compiled" not in floor["ms"]:
            continue
        ours_ms, floor_ms = ours["ms"]["compiled"], floor["ms"]["compiled"]
        peft_eager = peft["ms"].get("eager") if peft else None
        # the benchmark's own ratio: the median over runs of each run's ratio (medians of ms where it has none)
        ratio = (ours.get("vs_floor") or {}).get("compiled") or ours_ms / floor_ms
        rows.append({
            "case": f"{targets} r={r}", "floor compiled ms": floor_ms, "ours compiled ms": ours_ms,
            "ours eager ms": ours["ms"].get("eager"), "PEFT eager ms": peft_eager,
            "PEFT compiled ms": peft["ms"].get("compiled") if peft else None,
            "ours ÷ floor": ratio, "goal ÷ floor": goal,
            "ours ÷ PEFT eager": ours_ms / peft_eager if peft_eager else None, "goal ÷ PEFT eager": PEFT_EAGER_GOAL,
            "met": ratio <= goal and (peft_eager is None or ours_ms / peft_eager <= PEFT_EAGER_GOAL),
        })
    return rows


def goals_markdown(result: dict) -> str:
    """`goal_rows` as a Markdown table for docs/performance.md (ms to 2 decimals, ratios to 3)."""
    rows = goal_rows(result)
    if not rows:
        return ""
    keys = [k for k in rows[0] if k != "met"] + ["met"]
    cell = lambda k, v: ("n/a" if v is None else v if isinstance(v, str) else ("yes" if v else "no")
                         if isinstance(v, bool) else f"{v:.3f}" if "÷" in k else f"{v:.2f}")
    lines = ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    lines += ["| " + " | ".join(cell(k, row[k]) for k in keys) + " |" for row in rows]
    return "\n".join(lines)


def part_status() -> list[dict]:
    """One row per part of the shipped check: ok or not, seconds, and why not, from gpu_check.json."""
    summary = shipped_gpu("check")
    if summary is None:
        return []
    return [{"part": name, "ok": bool(p.get("ok")), "seconds": p.get("seconds"), "note": p.get("error", "")}
            for name, p in summary["parts"].items()]
