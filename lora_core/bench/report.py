"""Reading `lora_core.bench` results, and timing one LoRA layer at a time.

    rows = layer_benchmark(tokens=512)        # one layer per distilgpt2 shape, every forward path
    print(format_table(shipped_result("cpu")))  # the result shipped with LoRA Lab

The floor and the headline ratios (`floor_ratios`), tables, flat rows for figures, the shipped JSON
results and the quoted H100 reference numbers live here, so that pages and lessons can read results
without importing the timing machinery.
"""

from __future__ import annotations

import json
import os
import statistics
import time
from collections.abc import Sequence

import torch
import torch.nn as nn

from ..config import LoraConfig
from ..fused import FORWARD_PATHS
from ..inject import matched_modules
from ..layers import LoraLinear
from ..models.sources import build_on_meta
from ..settings_file import REPO_ROOT

MODES = ("eager", "compiled", "cudagraph")
DEFAULT_CASE = ("c_attn", 8)  # the headline ratios are for this (targets, r)
RESULTS_DIR = REPO_ROOT / "results" / "bench"  # shipped JSON results with provenance, one file per machine kind
RESULTS_PATH_HINT = "results/bench/"             # the same folder as a user types it, from the repository root


def _floor_runs(cases: list, runs: int) -> list[float]:
    """Per run: the fastest frozen step this run could make, compiled or not (cases[0] is the frozen case)."""
    frozen = cases[0]
    return [min(frozen.ms_runs[m][i] for m in frozen.ms_runs) for i in range(runs)]


def _best(case: object | None, runs: int, modes: Sequence[str] | None = None) -> list[float]:
    """Per run: the case's fastest mode (or the fastest of `modes`)."""
    if case is None:
        return []
    modes = [m for m in (modes or case.ms_runs) if m in case.ms_runs]
    return [min(case.ms_runs[m][i] for m in modes) for i in range(runs)] if modes else []


def _ratio(a: list[float], b: list[float]) -> list[float]:
    return [x / y for x, y in zip(a, b, strict=True)] if a and b else []


def floor_ratios(cases: list, runs: int) -> tuple[dict[str, list[float]], str | None, str | None]:
    """Fill each case's vs_frozen / vs_floor; return the per-run headline ratios and the modes they used.

    The floor is the fastest frozen step of each run, compiled or not. "ours" is our fastest step; PEFT is
    timed as users run it (eager). cases[0] must be the frozen case; every case has `runs` times per mode.
    The headline is plain LoRA's (one adapter) in DEFAULT_CASE; `adapter_ratios` has every adapter's.
    """
    frozen = cases[0]
    floor_runs = _floor_runs(cases, runs)
    for case in cases:
        for mode in case.ms:
            same = [a / b for a, b in zip(case.ms_runs[mode], frozen.ms_runs.get(mode, []), strict=False) if b]
            if same:
                case.vs_frozen[mode] = statistics.median(same)
            case.vs_floor[mode] = statistics.median(a / b for a, b in zip(case.ms_runs[mode], floor_runs, strict=True))

    by = {(c.variant, c.targets, c.r): c for c in cases if (c.adapter or "lora") == "lora"}
    ours, peft = by.get(("ours", *DEFAULT_CASE)), by.get(("peft", *DEFAULT_CASE))
    full = by.get(("full", None, None))
    ours_best, peft_eager = _best(ours, runs), _best(peft, runs, ["eager"])  # PEFT as users run it: eager
    headline = {
        "ours_vs_frozen": _ratio(ours_best, floor_runs),          # our best step against the floor
        "peft_vs_frozen": _ratio(peft_eager, floor_runs),
        "ours_vs_peft": _ratio(ours_best, peft_eager),
        "full_vs_frozen": _ratio(_best(full, runs), floor_runs),
        "ours_eager_vs_frozen_eager": _ratio(_best(ours, runs, ["eager"]), _best(frozen, runs, ["eager"])),
    }

    def fastest(case: object | None) -> str | None:
        return min(case.ms, key=case.ms.get) if case is not None and case.ms else None

    return headline, fastest(frozen), fastest(ours)


def adapter_ratios(cases: list, runs: int) -> list[dict]:
    """Per (adapter, targets, r) with an ours or a PEFT case: ours ÷ floor, PEFT ÷ floor and ours ÷ PEFT.

    The same rules as the headline (floor_ratios): the floor is the fastest frozen step of each run, ours is our
    fastest step, PEFT is eager. Each ratio is the median over runs of that run's own ratio, and the per-run
    ratios are kept beside it. Memory: trainable parameters, gradient + AdamW bytes and saved activation bytes.
    """
    floor_runs = _floor_runs(cases, runs)
    groups: dict[tuple, dict[str, object]] = {}
    for c in cases:
        if c.variant in ("ours", "peft"):
            groups.setdefault((c.adapter or "lora", c.targets, c.r), {})[c.variant] = c
    rows = []
    for (adapter, targets, r), pair in groups.items():
        ours, peft = pair.get("ours"), pair.get("peft")
        per_run = {"ours_vs_floor": _ratio(_best(ours, runs), floor_runs),
                   "peft_vs_floor": _ratio(_best(peft, runs, ["eager"]), floor_runs),
                   "ours_vs_peft": _ratio(_best(ours, runs), _best(peft, runs, ["eager"]))}
        row = {"adapter": adapter, "targets": targets, "r": r,
               "ours_case": ours.name if ours else None, "peft_case": peft.name if peft else None,
               **{k: statistics.median(v) if v else None for k, v in per_run.items()}, "per_run": per_run}
        for who, case in (("ours", ours), ("peft", peft)):
            row[f"{who}_trainable"] = case.trainable if case else None
            row[f"{who}_train_state_bytes"] = case.grad_bytes + case.state_bytes if case else None
            row[f"{who}_saved_bytes"] = case.saved_bytes if case else None
        rows.append(row)
    return rows


# Quoted from the issue that asked for this benchmark: measured ELSEWHERE, on an H100, and not
# reproduced here (distilgpt2 shapes, bf16, batch 16 × seq 256, AdamW; ms per step). Shown as reference.
REFERENCE_H100 = {
    "source": "quoted from the LoRA Lab issue; measured elsewhere on one H100, not reproduced by LoRA Lab",
    "setting": "distilgpt2 shapes, bf16, batch 16 × seq 256, AdamW",
    "rows": [
        {"case": "frozen (floor)", "variant": "frozen", "mode": "eager", "ms": 18.1},
        {"case": "frozen (floor)", "variant": "frozen", "mode": "compiled", "ms": 7.3},
        {"case": "PEFT c_attn r=8", "variant": "peft", "mode": "eager", "ms": 20.7},
        {"case": "PEFT c_attn+c_proj+c_fc r=8", "variant": "peft", "mode": "eager", "ms": 28.4},
        {"case": "hand LoRA c_attn r=8", "variant": "ours", "mode": "compiled", "ms": 7.7},
        {"case": "hand LoRA c_attn+c_proj+c_fc r=8", "variant": "ours", "mode": "compiled", "ms": 13.0},
        {"case": "full fine-tuning", "variant": "full", "mode": "compiled", "ms": 12.7},
    ],
}



# --- one layer at a time -----------------------------------------------------------------------------------
DISTILGPT2_LAYERS = {"c_attn": (768, 2304), "attn.c_proj": (768, 768), "mlp.c_fc": (768, 3072),
                     "mlp.c_proj": (3072, 768)}  # (in, out) of every Conv1D in a distilgpt2 block


def layer_benchmark(tokens: int = 512, r: int = 8, rounds: int = 60, threads: int | None = 1,
                    shapes: dict[str, tuple[int, int]] | None = None, peft: bool = True) -> list[dict]:
    """Forward + backward of one LoRA layer per shape, each forward path against the frozen layer.

    x requires grad (as in every block above the first), the upstream gradient is fixed, and the
    paths run interleaved for `rounds` rounds; each row holds median ms per path and the overhead
    over the frozen layer. GPT-2's Conv1D bases, fp32, CPU. The numbers behind docs/performance.md.
    """
    from transformers.pytorch_utils import Conv1D

    old_threads = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    rows = []
    try:
        for name, (n_in, n_out) in (shapes or DISTILGPT2_LAYERS).items():
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(0)
                base = Conv1D(n_out, n_in).requires_grad_(False)
                x = torch.randn(tokens, n_in, requires_grad=True)
                grad = torch.randn(tokens, n_out)
                layers: dict[str, nn.Module] = {"frozen": base}
                for path in FORWARD_PATHS:
                    layer = LoraLinear(base, LoraConfig(r=r, lora_alpha=16, init_lora_weights=False))
                    layer.forward_path = path
                    layers[path] = layer
                if peft:
                    layers["peft"] = _peft_layer(base, r)

            def step(module: nn.Module, x: torch.Tensor = x, grad: torch.Tensor = grad) -> None:
                module(x).backward(grad)
                x.grad = None
                for p in module.parameters():
                    p.grad = None

            times: dict[str, list[float]] = {k: [] for k in layers}
            for module in layers.values():
                step(module)
            items = list(layers.items())
            for k in range(rounds):
                shift = k % len(items)
                for key, module in items[shift:] + items[:shift]:
                    t0 = time.perf_counter()
                    step(module)
                    times[key].append((time.perf_counter() - t0) * 1e3)
            ms = {k: statistics.median(v) for k, v in times.items()}
            rows.append({"layer": name, "in": n_in, "out": n_out, "tokens": tokens, "r": r, "ms": ms,
                         "threads": torch.get_num_threads(),
                         "overhead_ms": {k: v - ms["frozen"] for k, v in ms.items() if k != "frozen"}})
    finally:
        torch.set_num_threads(old_threads)
    return rows


def _peft_layer(base: nn.Module, r: int) -> nn.Module:
    from peft import LoraConfig as PeftLoraConfig
    from peft import get_peft_model

    holder = nn.Module()
    holder.layer = base
    model = get_peft_model(holder, PeftLoraConfig(r=r, lora_alpha=16, target_modules=["layer"], fan_in_fan_out=True,
                                                  init_lora_weights=False))
    return model.base_model.model.layer


def format_layer_table(rows: list[dict]) -> str:
    keys = list(rows[0]["ms"])
    head = f"{'layer':<14}{'in→out':>12}" + "".join(f"{k + ' ms':>14}" for k in keys)
    lines = [f"one layer, forward + backward, {rows[0]['tokens']} tokens, r={rows[0]['r']}, "
             f"CPU, {rows[0]['threads']} thread(s)", head, "-" * len(head)]
    for row in rows:
        lines.append(f"{row['layer']:<14}{str(row['in']) + '→' + str(row['out']):>12}"
                     + "".join(f"{row['ms'][k]:>14.2f}" for k in keys))
        lines.append(f"{'  over frozen':<26}{'':>14}" + "".join(f"{row['overhead_ms'][k]:>+14.2f}" for k in keys[1:]))
    return "\n".join(lines)


# --- reading results -------------------------------------------------------------------------------
def format_table(result: dict) -> str:
    """The result as a plain-text table, one row per case, with × frozen per mode."""
    modes = modes_in(result)
    head = (f"LoRA step vs the frozen floor: {result['model']}, {result['device_name']}, {result['dtype']}, "
            f"batch {result['batch']} × seq {result['seq']}, torch {result['torch']}, "
            f"median of {result['repeats']} interleaved steps × {result['runs']} run(s)")
    cols = f"{'case':<34}{'trainable':>12}" + "".join(f"{m + ' ms':>15}{'× floor':>10}" for m in modes)
    if result["peak_memory"]:
        cols += "".join(f"{'peak MiB ' + m:>20}" for m in modes)
    lines = [head, cols, "-" * len(cols)]
    for c in result["cases"]:
        row = f"{c['name']:<34}{c['trainable']:>12,}"
        for m in modes:
            if m in c["ms"]:
                row += f"{c['ms'][m]:>15.1f}{c.get('vs_floor', c['vs_frozen']).get(m, float('nan')):>10.3f}"
            else:
                row += f"{'skipped':>15}{'':>10}"
        if result["peak_memory"]:
            row += "".join(f"{c['peak_mib'].get(m, float('nan')):>20.0f}" for m in modes)
        lines.append(row)
    fmt = lambda v: "n/a" if v is None else f"{v:.3f}×"
    floor = f" ({result['floor_mode']})" if result.get("floor_mode") else ""
    ours = f" ({result['ours_mode']})" if result.get("ours_mode") else ""
    lines.append(f"floor = the fastest frozen step{floor}. {result['default_case']}: ours{ours} vs floor "
                 f"{fmt(result['ours_vs_frozen'])}, PEFT (eager) vs floor {fmt(result['peft_vs_frozen'])}, "
                 f"ours vs PEFT {fmt(result['ours_vs_peft'])}; "
                 f"full fine-tuning vs floor {fmt(result['full_vs_frozen'])}")
    for row in comparison_rows(result):
        lines.append(f"{row['variant']}: ours vs floor {fmt(row['ours × floor'])}, PEFT (eager) vs floor "
                     f"{fmt(row['PEFT × floor'])}, ours vs PEFT {fmt(row['ours × PEFT'])}; saved activations "
                     f"{row['saved MiB (ours)']:.1f} MiB ours, {row['saved MiB (PEFT)']:.1f} MiB PEFT")
    notes: dict[tuple[str, str], list[str]] = {}
    for c in result["cases"]:
        for m, why in c["skipped"].items():
            notes.setdefault((m, why), []).append(c["name"])
    for (m, why), names in notes.items():
        who = "every case" if len(names) == len(result["cases"]) else ", ".join(names)
        lines.append(f"note: {m} not timed for {who}: {why}")
    return "\n".join(lines)


def case_rows(result: dict, mode: str = "eager") -> list[dict]:
    """Flat rows (case, variant, targets, r, ms, × frozen, trainable, state MiB) for tables and figures."""
    rows = []
    for c in result["cases"]:
        if mode not in c["ms"]:
            continue
        rows.append({"case": c["name"], "variant": c["variant"], "targets": c["targets"], "r": c["r"],
                     "adapter": c.get("adapter"), "saved_mib": c.get("saved_bytes", 0) / 2**20,
                     "ms": c["ms"][mode], "vs_frozen": c["vs_frozen"].get(mode),
                     "vs_floor": c.get("vs_floor", c["vs_frozen"]).get(mode), "trainable": c["trainable"],
                     "grad_mib": c["grad_bytes"] / 2**20, "state_mib": c["state_bytes"] / 2**20})
    return rows


def comparison_rows(result: dict) -> list[dict]:
    """One row per adapter (lora, dora, two-adapters) and setting: ours and PEFT against the floor and each other,
    from the same interleaved run, with what each holds (trainable parameters, gradients + AdamW, saved activations).

    Empty for a result written before adapters were compared. A ratio is None where its case was not timed, and a
    memory column NaN where its case is missing.
    """
    mib = lambda b: float("nan") if b is None else b / 2**20
    return [{"variant": f"{c['adapter']} {c['targets']} r={c['r']}", "ours × floor": c["ours_vs_floor"],
             "PEFT × floor": c["peft_vs_floor"], "ours × PEFT": c["ours_vs_peft"],
             "trainable (ours)": c["ours_trainable"], "trainable (PEFT)": c["peft_trainable"],
             "grads + AdamW MiB (ours)": mib(c["ours_train_state_bytes"]),
             "grads + AdamW MiB (PEFT)": mib(c["peft_train_state_bytes"]),
             "saved MiB (ours)": mib(c["ours_saved_bytes"]), "saved MiB (PEFT)": mib(c["peft_saved_bytes"])}
            for c in result.get("comparisons", [])]


def comparison_spread(result: dict) -> float | None:
    """The largest gap between two runs of one ratio in `comparisons`: how far this result's noise reaches."""
    gaps = [max(v) - min(v) for c in result.get("comparisons", []) for v in c["per_run"].values() if len(v) > 1]
    return max(gaps) if gaps else None


def comparison_markdown(result: dict) -> str:
    """`comparison_rows` as a Markdown table (ratios to 3 decimals, MiB to 1), for docs/performance.md."""
    rows = comparison_rows(result)
    if not rows:
        return ""
    keys = list(rows[0])
    lines = ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    for row in rows:
        lines.append("| " + " | ".join(_markdown_cell(k, row[k]) for k in keys) + " |")
    return "\n".join(lines)


def _markdown_cell(key: str, value: object) -> str:
    if value is None or value != value:  # not timed, or no such case (NaN)
        return "n/a"
    if isinstance(value, str):
        return value
    if isinstance(value, int):
        return f"{value:,}"
    return f"{value:.3f}" if "×" in key else f"{value:.1f}"


def load_result(path: str | os.PathLike) -> dict:
    """A result written by `python -m lora_core.bench --json > path` (the last line is the JSON)."""
    with open(path) as f:
        return json.loads(f.read().strip().splitlines()[-1])


def shipped_result(kind: str = "cpu") -> dict | None:
    """The result shipped in `results/bench/<kind>.json`, or None if there is none (e.g. "cuda")."""
    path = RESULTS_DIR / f"{kind}.json"
    return load_result(path) if path.is_file() else None


def reference_rows() -> list[dict]:
    """REFERENCE_H100's rows with × the floor of the same mode (eager vs eager, compiled vs compiled)."""
    floors = {r["mode"]: r["ms"] for r in REFERENCE_H100["rows"] if r["variant"] == "frozen"}
    return [{**r, "vs_frozen": r["ms"] / floors[r["mode"]]} for r in REFERENCE_H100["rows"]]


def reference_highlights() -> dict:
    """The two things the quoted H100 numbers show: eager PEFT's and compiled LoRA's cost over their floor
    (c_attn r=8, as fractions), and compiled LoRA on every linear layer against compiled full fine-tuning (ms)."""
    by_case = {(r["case"], r["mode"]): r for r in reference_rows()}
    return {"peft_eager_overhead": by_case["PEFT c_attn r=8", "eager"]["vs_frozen"] - 1,
            "hand_compiled_overhead": by_case["hand LoRA c_attn r=8", "compiled"]["vs_frozen"] - 1,
            "all_linear_compiled_ms": by_case["hand LoRA c_attn+c_proj+c_fc r=8", "compiled"]["ms"],
            "full_compiled_ms": by_case["full fine-tuning", "compiled"]["ms"]}


def quoted_all_linear_branches() -> dict:
    """The quoted all-linear case on distilgpt2's shapes: its targets, how many LoRA branches they make, and the
    thin matmuls those add to the forward (two per branch: A, then B). Counted, not typed: 24 branches, 48 matmuls."""
    case = next(r["case"] for r in REFERENCE_H100["rows"] if r["variant"] == "ours" and "+" in r["case"])
    targets = case.split()[2].split("+")           # "hand LoRA c_attn+c_proj+c_fc r=8" -> c_attn, c_proj, c_fc
    branches = len(matched_modules(build_on_meta("distilgpt2"), LoraConfig(target_modules=targets)))
    return {"case": case, "targets": targets, "branches": branches, "forward_matmuls": 2 * branches}


def modes_in(result: dict) -> list[str]:
    """The timing modes (of MODES, in order) that at least one case of `result` was timed in."""
    return [m for m in MODES if any(m in c["ms"] for c in result["cases"])]


def state_saving(result: dict) -> dict | None:
    """Gradients + AdamW moments (MiB) of full fine-tuning and of ours in the default case, and their ratio."""
    rows = case_rows(result)
    full = next((r for r in rows if r["variant"] == "full"), None)
    ours = next((r for r in rows if r["case"] == f"ours {result['default_case']}"), None)
    if full is None or ours is None:
        return None
    full_mib, ours_mib = full["grad_mib"] + full["state_mib"], ours["grad_mib"] + ours["state_mib"]
    return {"full_mib": full_mib, "ours_mib": ours_mib, "ratio": full_mib / ours_mib}


def markdown_table(result: dict) -> str:
    """The result as a Markdown table (ms per step and × the floor, per mode), for docs/performance.md."""
    modes = modes_in(result)
    head = "| case | trainable | " + " | ".join(f"{m} ms | {m} × floor" for m in modes) + " |"
    lines = [head, "|" + "---|" * (2 + 2 * len(modes))]
    for c in result["cases"]:
        cells = [f"{c['ms'][m]:.1f} | {c.get('vs_floor', c['vs_frozen']).get(m, float('nan')):.3f}"
                 if m in c["ms"] else "skipped | " for m in modes]
        lines.append(f"| {c['name']} | {c['trainable']:,} | " + " | ".join(cells) + " |")
    return "\n".join(lines)
