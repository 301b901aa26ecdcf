"""What `make gpu-check` found, read back from results/gpu/ for the Speed page and docs/performance.md.

Each run of the check is one folder, results/gpu/run<N>/, holding gpu_check.json (summary and provenance) and one
gpu_<part>.json per part it ran. A later run may rerun only some parts, so each part is read from the newest run
that has it.

    shipped_gpu("bench_compiled")   # the newest results/gpu/run*/gpu_bench_compiled.json, or None
    goal_rows(result)               # the issue's three GPU goals against what was measured, per target set
    part_status()                   # every part of every shipped run: passed, failed, and why
    finetune_table()                # the newest fine-tuning rows: steps/s, tokens/s, peak memory per base precision

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


def runs() -> list[tuple[str, dict]]:
    """(folder name, gpu_check.json) for every shipped run, oldest first by the time in its provenance."""
    found = [(d.name, json.loads((d / "gpu_check.json").read_text()))
             for d in GPU_RESULTS_DIR.glob("run*") if (d / "gpu_check.json").is_file()]
    return sorted(found, key=lambda run: run[1]["provenance"]["time"])


def shipped_gpu(part: str) -> dict | None:
    """gpu_<part>.json ("check", "tests", "bench", "bench_compiled", "bench_graphs", "finetune", "nf4") from the
    newest run that has it, with "run" (folder, commit, time) added; None when no run has it."""
    for name, summary in reversed(runs()):
        path = GPU_RESULTS_DIR / name / f"gpu_{part}.json"
        if path.is_file():
            stamp = summary["provenance"]
            return {**json.loads(path.read_text()),
                    "run": {"folder": name, "commit": stamp["commit"][:7], "time": stamp["time"]}}
    return None


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
    """One row per part of every shipped run, oldest run first: passed or not, seconds, and why not."""
    return [{"run": name, "commit": summary["provenance"]["commit"][:7], "part": part, "ok": bool(p.get("ok")),
             "seconds": p.get("seconds"),
             "note": p.get("error") or ("" if p.get("ok") else "its own check failed: gpu_<part>.json says which")}
            for name, summary in runs() for part, p in summary["parts"].items()]


def finetune_table() -> list[dict]:
    """The newest shipped fine-tuning rows, as the Speed page and the docs show them (numbers unrounded)."""
    result = shipped_gpu("finetune")
    if result is None:
        return []
    return [{"model": row["model"], "base": row["precision"], "targets": ",".join(row["targets"]), "r": row["r"],
             "batch × seq": f"{row['batch']} × {row['seq_len']}", "steps": row["steps"],
             "steps/s": row["steps_per_s"], "tokens/s (non-padding)": row["tokens_per_s"],
             "base weights MiB": row["base_weight_bytes"] / 2**20, "peak MiB": row["peak_mib"],
             "loss first → last": f"{row['first_loss']:.2f} → {row['last_loss']:.2f}"} for row in result["rows"]]
