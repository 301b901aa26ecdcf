"""The Room page's core: what a finished run puts on the board, the teacher's sweep as a form preset, the board as
points and spreads for any metric against any knob, the shipped replay and the paper beside them, and exports.

    entry, key = share_run(board, run, run_id, "ada")        # a done or stopped LiveRun, one entry per run
    preset = form_preset(sweeps.assign(session), candidates, ranks)   # {"r": 4, "seed": 1}: the form's defaults
    data = plot_data(board.entries(), "r", "heldout_loss", own_ids={entry.id})
    ref = reference("r", "heldout_loss")                      # the rank replay's means and the paper's Table 18

Nothing here knows about Streamlit: pages/room.py and pages/finetune.py call these and draw.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import math
from collections.abc import Iterable
from datetime import UTC, datetime

from ..config import ALL_LINEAR, MAX_LORA_ALPHA
from ..research import record
from ..research.papers import quotes_for
from ..training.live import LiveRun
from ..training.run_setup import INIT_CHOICES, PRECISIONS
from .board import KNOBS, METRICS, Board, Entry

SCALING = {False: "α/r", True: "α/√r"}          # the board's names for use_rslora off and on
LAST_STEPS = 5                                  # the final training loss: the mean of the last few steps' losses
SHAREABLE = ("done", "stopped")
NUMERIC_KNOBS = ("r", "lora_alpha", "lr", "seed")
# How each metric reads, for axis titles and the table: (title, lower is better).
METRIC_TITLES = {"train_loss": ("final training loss (nats/token)", True),
                 "heldout_loss": ("held-out loss (nats/token)", True), "bleu": ("held-out BLEU (0–100)", False),
                 "ppl_general": ("perplexity, general English", True), "steps": ("steps", False),
                 "tokens_per_s": ("tokens/s", False), "wall_s": ("training time (s)", True)}
KNOB_TITLES = {"model": "model", "r": "r", "lora_alpha": "lora_alpha", "scaling": "scaling rule",
               "targets": "target modules", "init": "init_lora_weights", "base_precision": "base precision",
               "lr": "learning rate", "seed": "seed"}
# The shipped research replays a knob has, and their names for the board's metrics.
REPLAY_OF = {"r": "rank", "targets": "targets"}
REPLAY_METRIC = {"heldout_loss": "test_loss", "bleu": "bleu", "ppl_general": "english_ppl"}


# --- a finished run, as the board stores it -------------------------------------------------------------------
def run_knobs(run: LiveRun) -> dict:
    """The knobs the learner turned, in the board's names (targets as 'q_proj,v_proj' or 'all-linear')."""
    cfg, train = run.lora_config, run.train_config
    targets = cfg.target_modules
    return {"model": run.base_name, "r": cfg.r, "lora_alpha": float(cfg.lora_alpha),
            "scaling": SCALING[bool(cfg.use_rslora)],
            "targets": targets if isinstance(targets, str) else ",".join(targets),
            "init": str(cfg.init_lora_weights), "base_precision": run.base_precision, "lr": float(train.lr),
            "seed": int(train.seed)}


def run_metrics(run: LiveRun) -> dict:
    """What the run measured: held-out loss, BLEU and general-English perplexity after training, the final
    training loss (mean of the last LAST_STEPS steps), steps, and tokens/s and seconds over the training steps."""
    history, after = run.history, run.after
    if not history or "bleu" not in after:
        raise ValueError(f"status={run.status!r} at step {run.step}: the run has no measured result to share "
                         "(it needs at least one step and a held-out split)")
    seconds = sum(h["seconds"] for h in history)
    measured = {"train_loss": sum(h["loss"] for h in history[-LAST_STEPS:]) / len(history[-LAST_STEPS:]),
                "heldout_loss": float(after["heldout_loss"]), "bleu": float(after["bleu"]),
                "ppl_general": float(after["ppl_general"]), "steps": run.step,
                "tokens_per_s": sum(h["tokens"] for h in history) / seconds, "wall_s": seconds}
    # An overflowing perplexity (a stopped run far from home) is stored as unknown: the board holds finite numbers
    return {k: v if math.isfinite(v) else None for k, v in measured.items()}


def board_run_id(run_id: str) -> str:
    """The id the board keeps for a run: a hash, so the exported board never holds the run's own (reload) id."""
    return hashlib.sha256(run_id.encode()).hexdigest()[:16]


def share_run(board: Board, run: LiveRun, run_id: str, nickname: str) -> tuple[Entry, str]:
    """Put a done or stopped run on the board under `nickname`; returns (entry, the key that withdraws it)."""
    if run.status not in SHAREABLE:
        raise ValueError(f"status={run.status!r} cannot be shared: only a run that is {' or '.join(SHAREABLE)}")
    return board.share(board_run_id(run_id), nickname, run_knobs(run), run_metrics(run))


def withdraw_run(board: Board, entry_id: str, key: str) -> bool:
    """Take a shared result off the board: True if it was there, False if it was gone already (the teacher
    cleared the board). Any other failure (a folder the server cannot write) is a ValueError and the key stays
    good, so the learner can try again."""
    if all(e.id != entry_id for e in board.entries()):
        return False
    board.withdraw(entry_id, key)
    return True


# --- the teacher's sweep, as the Fine-tuning form's defaults ----------------------------------------------------
def form_preset(assignment: dict | None, candidates: list[str], ranks: list[int]) -> dict:
    """The form's defaults for a session's sweep cell, in RunRequest's names ({"r": 4, "seed": 1}), plus "note"
    (what to tell the learner). A value this server or model cannot take is left out and the note says why."""
    if assignment is None:
        return {}
    knob, value, seed = assignment["knob"], assignment["value"], assignment["seed"]
    cell = f"The teacher's sweep '{assignment['sweep']}' gives you {KNOB_TITLES[knob]} = {value} (seed {seed})"
    field, problem = _form_field(knob, value, candidates, ranks)
    if problem:
        return {"seed": seed, "note": f"{cell}, but {problem}: pick the nearest you can"}
    return {**field, "seed": seed, "note": f"{cell}; the other settings are the defaults everyone shares"}


def _form_field(knob: str, value: object, candidates: list[str], ranks: list[int]) -> tuple[dict, str]:
    if knob == "r":
        return ({"r": value}, "") if value in ranks else ({}, f"this server's form offers r in {ranks}")
    if knob == "targets":
        names = [ALL_LINEAR] if value == ALL_LINEAR else str(value).split(",")
        missing = [n for n in names if n not in [*candidates, ALL_LINEAR]]
        return ({"target_modules": names}, "") if not missing else ({}, f"this model has no {', '.join(missing)}")
    if knob == "scaling":
        flags = {v: k for k, v in SCALING.items()}
        return ({"use_rslora": flags[value]}, "") if value in flags else ({}, f"scaling is one of {list(flags)}")
    if knob == "init":
        inits = {str(v): v for v in INIT_CHOICES}
        return ({"init_lora_weights": inits[value]}, "") if value in inits else ({}, f"init is one of {list(inits)}")
    if knob == "base_precision":
        return ({"precision": value}, "") if value in PRECISIONS else ({}, f"precision is one of {PRECISIONS}")
    if knob == "lora_alpha" and isinstance(value, (int, float)) and not 0 < value <= MAX_LORA_ALPHA:
        return {}, f"the form takes lora_alpha in (0, {MAX_LORA_ALPHA:g}]"
    if knob in ("lora_alpha", "lr") and isinstance(value, (int, float)) and value > 0:
        return {knob: float(value)}, ""
    return {}, f"{knob}={value!r} is not a value the form takes"


def parse_values(knob: str, text: str) -> list:
    """A teacher's own sweep values, typed as '4, 16' or 'q_proj,v_proj; all-linear': numbers for numeric knobs,
    text for the others (';' separates values when one has commas in it)."""
    parts = [p.strip() for p in (text.split(";") if ";" in text else text.split(",")) if p.strip()]
    fixed = {"scaling": list(SCALING.values()), "init": [str(v) for v in INIT_CHOICES], "base_precision": PRECISIONS}
    if knob in fixed and any(p not in fixed[knob] for p in parts):
        raise ValueError(f"values={text!r} is not allowed: {knob} takes {', '.join(fixed[knob])}")
    if knob == "targets":  # as LoraConfig stores them: names stripped, once each, sorted ('all-linear' alone)
        return list(dict.fromkeys(_targets_text(p) for p in parts))
    if knob not in NUMERIC_KNOBS:
        return parts
    try:
        values = [float(p) for p in parts]
    except ValueError:
        raise ValueError(f"values={text!r} is not allowed: {knob} takes numbers, e.g. '4, 16'") from None
    if knob == "r" and not all(v.is_integer() and v >= 1 for v in values):
        raise ValueError(f"values={text!r} is not allowed: r takes whole numbers >= 1, e.g. '4, 16'")
    return [int(v) if knob in ("r", "seed") else v for v in values]


def _targets_text(value: str) -> str:
    names = sorted({n.strip() for n in value.split(",") if n.strip()})
    return ALL_LINEAR if ALL_LINEAR in names else ",".join(names)


# --- the board as a figure ---------------------------------------------------------------------------------------
def _x_order(values: Iterable, knob: str, order: list | None) -> list:
    seen = list(dict.fromkeys(values))
    if order:
        return [v for v in order if v in seen] + [v for v in seen if v not in order]
    if knob in NUMERIC_KNOBS:
        return sorted(seen, key=float)
    return sorted(seen, key=str)


def config_label(knobs: dict, varying: list[str]) -> str:
    """A configuration by the knobs that differ on the board ('all runs' when none does)."""
    return ", ".join(f"{KNOB_TITLES[k]}={knobs.get(k)}" for k in varying) or "all runs"


def plot_data(entries: list[Entry], knob: str, metric: str, own_ids: Iterable[str] = (),
              order: list | None = None) -> dict:
    """Every result as a point (x = the knob, y = the metric, own results marked), and per configuration (all
    knobs but the seed) at each x: n, mean, min and max, the spread across its runs.

    Runs whose other knobs differ are separate groups, labelled by the knobs that differ on the board."""
    if knob not in KNOBS:
        raise ValueError(f"knob={knob!r} is not allowed: choose one of {', '.join(KNOBS)}")
    if metric not in METRICS:
        raise ValueError(f"metric={metric!r} is not allowed: choose one of {', '.join(METRICS)}")
    own = set(own_ids)
    usable = [e for e in entries if isinstance(e.metrics.get(metric), (int, float))
              and isinstance(e.knobs.get(knob), (int, float, str))]  # a result missing either is not drawn
    others = [k for k in KNOBS if k not in (knob, "seed")]
    varying = [k for k in others if len({json.dumps(e.knobs.get(k)) for e in usable}) > 1]
    points = [{"x": e.knobs[knob], "y": float(e.metrics[metric]), "nickname": e.nickname, "own": e.id in own,
               "seed": e.knobs.get("seed"), "config": config_label(e.knobs, varying)} for e in usable]
    groups: dict[tuple, list[float]] = {}
    for p in points:
        groups.setdefault((p["config"], json.dumps(p["x"])), []).append(p["y"])
    xs = _x_order((p["x"] for p in points), knob, order)
    spread = [{"config": config, "x": json.loads(x), "n": len(ys), "mean": sum(ys) / len(ys), "min": min(ys),
               "max": max(ys)} for (config, x), ys in groups.items()]
    spread.sort(key=lambda g: (g["config"], xs.index(g["x"])))
    title, lower_better = METRIC_TITLES[metric]
    return {"knob": knob, "metric": metric, "x_title": KNOB_TITLES[knob], "y_title": title,
            "lower_is_better": lower_better, "x_order": xs, "points": points, "groups": spread,
            "log_x": knob in ("r", "lr") and all(float(x) > 0 for x in xs)}


def reference(knob: str, metric: str, results_dir: str | None = None) -> dict | None:
    """The shipped research replay for this knob and metric (mean, min and max over its seeds per x), and the
    paper's own numbers where its table has this metric per x; None when no replay measured it."""
    name, key = REPLAY_OF.get(knob), REPLAY_METRIC.get(metric)
    shipped = record.shipped(name, results_dir) if name and key else None
    if shipped is None:
        return None
    results, settings = shipped["results"], shipped["settings"]
    if name == "rank":
        rows = [(row["r"], row[key]) for row in results["ranks"]]
        where = f"q_proj,v_proj, lora_alpha={results['lora_alpha']}"
    else:
        rows = [(ALL_LINEAR if row["label"] == ALL_LINEAR else ",".join(row["targets"]), row[key])
                for row in results["configs"]]
        where = f"one parameter budget ({results['budget']:,}), so r differs per target set"
    replay = {"x": [x for x, _ in rows], "mean": [s["mean"] for _, s in rows], "min": [s["min"] for _, s in rows],
              "max": [s["max"] for _, s in rows],
              "label": f"shipped replay: {settings['model']}, E2E-style data, {settings['steps']} steps, "
                       f"{len(shipped['seeds'])} seeds, {where}",
              "command": shipped["command"]}
    return {"title": shipped["title"], "replay": replay, "paper": _paper(name, metric),
            "findings": [f"{q.source.split(',')[0]}, {q.where}: {q.finding}" for q in quotes_for(name)]}


def _paper(replay: str, metric: str) -> dict | None:
    """The paper's numbers per rank for this metric (the LoRA paper's Table 18, GPT-2 Medium on E2E), if any."""
    if replay != "rank" or metric not in ("heldout_loss", "bleu"):
        return None
    word = "loss" if metric == "heldout_loss" else "BLEU"
    quote = next(q for q in quotes_for("rank") if q.where.startswith("Table 18") and word in q.unit)
    return {"x": [int(k.removeprefix("r=")) for k in quote.numbers], "y": list(quote.numbers.values()),
            "label": f"{quote.source.split(',')[0]}, {quote.where}: {quote.setting}", "unit": quote.unit}


def board_summary(entries: list[Entry], own_ids: Iterable[str] = ()) -> dict:
    """The counts above the board: results, distinct nicknames, and how many are this session's."""
    own = set(own_ids)
    return {"results": len(entries), "nicknames": len({e.nickname for e in entries}),
            "yours": sum(e.id in own for e in entries)}


# --- the table, the sweep's progress, exports ----------------------------------------------------------------------
def board_rows(entries: list[Entry], own_ids: Iterable[str] = ()) -> list[dict]:
    """The board as table rows, newest first: who, the knobs, the metrics, and whether it is yours."""
    own = set(own_ids)
    rows = [{"nickname": e.nickname, "yours": e.id in own, **{k: e.knobs.get(k) for k in KNOBS},
             **{k: e.metrics.get(k) for k in METRICS},
             "shared": datetime.fromtimestamp(e.time, UTC).strftime("%H:%M:%S UTC")} for e in entries]
    return rows[::-1]


def sweep_cells(sweep: dict | None, entries: list[Entry]) -> list[dict]:
    """Per cell of the running sweep: its value, the sessions it was handed to, and the results shared for it."""
    if sweep is None:
        return []
    since = [e for e in entries if e.time >= sweep["started"]]
    return [{"cell": i, sweep["knob"]: value, "handed out": taken,
             "results": sum(1 for e in since if e.knobs.get(sweep["knob"]) == value)}
            for i, (value, taken) in enumerate(zip(sweep["values"], sweep["taken"], strict=True))]


EXPORT_COLUMNS = ("id", "time", "run_id", "nickname", *KNOBS, *METRICS)


def export_csv(board: Board) -> str:
    """The board as CSV, one row per result (knob and metric columns in the board's names)."""
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=EXPORT_COLUMNS, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in board.export_rows():
        writer.writerow({k: _cell(v) for k, v in row.items()})
    return out.getvalue()


def _cell(value: object) -> object:
    """A CSV cell: text a spreadsheet would run as a formula (=, +, -, @, tab, CR first) gets a leading quote."""
    if value is None:
        return ""
    if isinstance(value, str) and value[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + value
    return value


def export_json(board: Board, sweep: dict | None = None) -> str:
    """The board as JSON: when it was exported, the running sweep, and every result."""
    rows = [{k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in row.items()}
            for row in board.export_rows()]
    return json.dumps({"exported": datetime.now(UTC).isoformat(timespec="seconds"), "sweep": sweep,
                       "results": rows}, ensure_ascii=False, indent=1)
