"""The tables beside the replays' figures: the paper's quoted numbers, ours (mean ± std over seeds), and how a
result was made. Display only: rows are picked and formatted from a result, nothing is measured here.

    st.dataframe(quote_rows(papers.quotes_for("rank")))
    st.dataframe(measured_rows(record.shipped("rank")))
    st.dataframe(provenance_rows(record.shipped("rank")))
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Iterable


def spread_text(spread: dict, digits: int = 3) -> str:
    """"1.234 ± 0.012" for a per-seed spread ({"mean", "std", "n"}); "n/a" when no seed finished."""
    if spread.get("mean") is None:
        return "n/a"
    return f"{spread['mean']:.{digits}f} ± {(spread.get('std') or 0.0):.{digits}f}"


def _number(value, digits: int = 3) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def quote_rows(quotes: Iterable) -> list[dict]:
    """One row per quoted table or figure (papers.Quote): where, setting, the printed numbers, the finding."""
    return [{"where": q.where, "setting": q.setting,
             "numbers": "; ".join(f"{label}: {value}" for label, value in q.numbers.items()) or "(qualitative)",
             "unit": q.unit, "finding": q.finding} for q in quotes]


def _scores(row: dict) -> dict:
    return {"held-out loss": spread_text(row["test_loss"]), "BLEU": spread_text(row["bleu"], 1),
            "English perplexity": spread_text(row["english_ppl"], 2), "seeds": row["test_loss"]["n"]}


def _targets(res: dict) -> list[dict]:
    return [{"adapted": row["label"], "r": row["r"], "trainable": row["trainable"],
             "vs budget": f"{100 * row['vs_budget']:+.1f}%", **_scores(row)} for row in res["configs"]]


def _rank(res: dict) -> list[dict]:
    return [{"r": row["r"], "trainable": row["trainable"], **_scores(row)} for row in res["ranks"]]


def _subspace(res: dict) -> list[dict]:
    rows = []
    for proj, m in res["modules"].items():
        rows.append({"module": proj, "φ(1,1) r=8 vs r=64": _number(m["r8_vs_r64"][0][0]),
                     "φ(1,1) random": _number(m["baseline_r8_vs_r64"][0][0], 4),
                     "φ(1,1) seed vs seed, r=64": _number(m["seed_vs_seed_r64"][0][0]),
                     "φ(1,1) r=8 vs r=64, mean over blocks": _number(statistics.fmean(m["top1_by_layer"]))})
    return rows


def _amplification(res: dict) -> list[dict]:
    rows = []
    for row in res["ranks"]:
        for proj, m in row["modules"].items():
            t = m["table7"]
            rows.append({"r": row["r"], "module": proj, "‖ΔW‖_F": _number(t["delta_norm"]),
                         "‖W‖_F": _number(t["W_norm"], 2), "‖UᵀWV‖_F, ΔW's": _number(t["proj_delta_dirs"]),
                         "‖UᵀWV‖_F, W's": _number(t["proj_W_dirs"], 2),
                         "‖UᵀWV‖_F, random": _number(t["proj_random_dirs"]), "factor": _number(t["factor"], 2),
                         "factor, random ΔW of the same norm": _number(m["random_delta"]["factor"], 2)})
    return rows


def _intruders(res: dict) -> list[dict]:
    eps = str(res["threshold_epsilon"])
    return [{"run": label,
             **{f"{proj} intruders (ε = {eps})": c["by_epsilon"][eps] for proj, c in run["counts"].items()},
             "total": sum(c["by_epsilon"][eps] for c in run["counts"].values())}
            for label, run in res["runs"].items()]


def reduction_rows(res: dict) -> list[dict]:
    """The intruder replay's λ sweep: intruders left and the three scores at each λ."""
    return [{"λ": p["lambda"], "intruders left": p["intruders"], "held-out loss": _number(p["test_loss"]),
             "BLEU": _number(p["bleu"], 1), "English perplexity": _number(p["english_ppl"], 2)}
            for p in res["reduction"]["points"]]


def _forgetting(res: dict) -> list[dict]:
    base = res["base"]
    rows = [{"model": "base (before training)", "trainable": 0, "steps": 0, "held-out loss": _number(base["test_loss"]),
             "BLEU": _number(base["bleu"], 1), "English perplexity": _number(base["english_ppl"], 2)}]
    for label, run in res["curves"].items():
        end = run["curve"][-1]
        rows.append({"model": label, "trainable": run["trainable"], "steps": end["step"],
                     "held-out loss": _number(end["test_loss"]), "BLEU": _number(end["bleu"], 1),
                     "English perplexity": _number(end["english_ppl"], 2)})
    return rows


def _learning_rate(res: dict) -> list[dict]:
    rows = []
    for key in ("lora", "full"):
        sweep = res[key]
        for p in sweep["points"]:
            rows.append({"method": sweep["label"], "learning rate": f"{p['lr']:.1e}",
                         "best": "best" if p["lr"] == sweep["best_lr"] else "",
                         "held-out loss": _number(p["test_loss"]), "BLEU": _number(p["bleu"], 1),
                         "English perplexity": _number(p["english_ppl"], 2),
                         "note": f"diverged: {p['diverged']}" if p["diverged"] else "seed 0"})
    for label, row in res["attention_vs_all"].items():
        scores = {k: v for k, v in _scores(row).items() if k != "seeds"}
        rows.append({"method": f"LoRA r=8, {label}", "learning rate": "", "best": "", **scores,
                     "note": f"mean ± std, {row['test_loss']['n']} seeds"})
    return rows


MEASURED: dict[str, Callable[[dict], list[dict]]] = {
    "targets": _targets, "rank": _rank, "subspace": _subspace, "amplification": _amplification,
    "intruders": _intruders, "forgetting": _forgetting, "learning_rate": _learning_rate}


def measured_rows(result: dict) -> list[dict]:
    """Our numbers for a replay result, one row per configuration (mean ± std over seeds where seeds vary)."""
    name = result.get("name")
    if name not in MEASURED:
        raise ValueError(f"result name={name!r} is not allowed: use one of {', '.join(MEASURED)}")
    return MEASURED[name](result["results"])


def provenance_rows(result: dict) -> list[dict]:
    """How a result was made: command, commit, device, torch, time, seconds, scale, seeds, then every setting."""
    commit = str(result.get("commit") or "unknown")
    if result.get("uncommitted_changes"):
        commit += " (with uncommitted changes)"
    rows = [("command", result["command"]), ("commit", commit), ("device", result["device"]),
            ("torch", result.get("torch", "unknown")), ("finished at", result.get("time", "unknown")),
            ("took", f"{result['seconds']:.0f} s"), ("scale", result["scale"]),
            ("seeds (where a replay repeats a run; single runs use seed 0)", ", ".join(map(str, result["seeds"])))]
    rows += [(key, value) for key, value in (result.get("settings") or {}).items()]
    return [{"what": key, "value": str(value)} for key, value in rows]
