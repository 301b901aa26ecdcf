"""Did the paper's finding hold here? Each verdict is computed from a result by a rule stated beside it.

    v = verdict(record.shipped("rank"))     # {"verdict": "held", "ours": "...", "rule": "..."}
    disagreements(shipped, live)            # where a learner's quick run tells a different story

Three verdicts, as the issue asks: "held", "held in direction but smaller" and "did not hold here". The rules were
written before the full runs and are the same for every scale; a difference counts only when it is larger than
the spread between seeds (two sample standard deviations of the difference), so seed noise never makes a verdict.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable

from .analysis import median_rank

HELD, SMALLER, NOT_HELD = "held", "held in direction but smaller", "did not hold here"
VERDICTS = (HELD, SMALLER, NOT_HELD)


def _gap(better: dict, worse: dict) -> tuple[float, float]:
    """(mean difference worse - better, two standard errors of it) for two per-seed spreads of a loss."""
    diff = worse["mean"] - better["mean"]
    noise = 2 * math.sqrt((better["std"] ** 2) / max(1, better["n"]) + (worse["std"] ** 2) / max(1, worse["n"]))
    return diff, noise


def _noise(noise: float, *spreads: dict) -> str:
    """How the seed noise reads in a sentence: one seed measures none, and the sentence must say so."""
    if all(s["n"] < 2 for s in spreads):
        return "one seed, so no seed noise was measured"
    return f"seed noise ±{noise:.3f}"


def _three(diff: float, noise: float, big: bool = True) -> str:
    if diff > noise and diff > 0 and big:
        return HELD
    return SMALLER if diff > 0 else NOT_HELD


def targets(results: dict) -> dict:
    rows = {row["label"]: row for row in results["configs"]}
    best_pair = min((rows["q, v"], rows["q, k, v, o"]), key=lambda row: row["test_loss"]["mean"])
    best_single = min((rows["q"], rows["k"]), key=lambda row: row["test_loss"]["mean"])
    diff, noise = _gap(best_pair["test_loss"], best_single["test_loss"])
    ranking = sorted(rows.values(), key=lambda row: row["test_loss"]["mean"])
    said = _noise(noise, best_pair["test_loss"], best_single["test_loss"])
    return {"verdict": _three(diff, noise),
            "ours": f"best of q,v / q,k,v,o ({best_pair['label']}) {best_pair['test_loss']['mean']:.3f} against "
                    f"best of q / k alone ({best_single['label']}) {best_single['test_loss']['mean']:.3f} held-out "
                    f"loss (difference {diff:+.3f}, {said}); by held-out loss, best first: "
                    + "; ".join(row["label"] for row in ranking),
            "rule": "held if spreading the budget over q,v or q,k,v,o beats q or k alone by more than the seed noise"}


def rank(results: dict) -> dict:
    rows = results["ranks"]
    best = min(rows, key=lambda row: row["test_loss"]["mean"])
    enough = next(row for row in rows if _gap(best["test_loss"], row["test_loss"])[0]
                  <= _gap(best["test_loss"], row["test_loss"])[1])
    big = next(row for row in rows if row["r"] == max(r["r"] for r in rows))
    diff, noise = _gap(big["test_loss"], enough["test_loss"])
    verdict = HELD if enough["r"] <= 8 else (SMALLER if enough["r"] < big["r"] else NOT_HELD)
    return {"verdict": verdict,
            "ours": f"r={enough['r']} is the smallest rank within seed noise of the best (r={best['r']}); r={big['r']} "
                    f"differs from r={enough['r']} by {diff:+.3f} held-out loss "
                    f"({_noise(noise, big['test_loss'], enough['test_loss'])})",
            "rule": "held if a rank of 8 or less is within seed noise of the best rank's held-out loss"}


def subspace(results: dict) -> dict:
    q = results["modules"]["q_proj"]
    top = q["r8_vs_r64"][0][0]
    beyond = statistics.fmean(q["r8_vs_r64"][i][i] for i in range(4, 8))
    baseline = statistics.fmean(q["baseline_r8_vs_r64"][i][i] for i in range(4, 8))
    verdict = HELD if top > 0.5 else (SMALLER if top > 2 * q["baseline_r8_vs_r64"][0][0] else NOT_HELD)
    return {"verdict": verdict,
            "ours": f"φ(1, 1) = {top:.2f} between the r=8 and r=64 q adapters of block {results['layer']} "
                    f"(random: {q['baseline_r8_vs_r64'][0][0]:.3f}); directions 5-8 average {beyond:.3f} "
                    f"(random {baseline:.3f})",
            "rule": "held if the top direction is shared with φ > 0.5; smaller if it is still above twice random"}


def amplification(results: dict) -> dict:
    by_r = {row["r"]: row["modules"]["q_proj"]["table7"] for row in results["ranks"]}
    small, large = by_r[min(by_r)], by_r[max(by_r)]
    # The factor grows with ‖ΔW‖, i.e. with how long training ran; the ratio of W's projection on ΔW's directions to
    # its projection on random ones does not (the paper's Table 7: 0.32 / 0.02 = 16 at r = 4).
    aligned = small["proj_delta_dirs"] / small["proj_random_dirs"]
    falls = small["factor"] > large["factor"]
    verdict = HELD if falls and aligned > 1 and small["factor"] >= 10 else (
        SMALLER if falls and aligned > 1 else NOT_HELD)
    return {"verdict": verdict,
            "ours": f"amplification {small['factor']:.2f} at r={small['r']} and {large['factor']:.2f} at "
                    f"r={large['r']} (q, block {results['layer']}; ‖ΔW‖_F = {small['delta_norm']:.2f} against the "
                    f"paper's 6.91); W's projection on ΔW's top directions is {aligned:.2f}× its projection on "
                    f"random ones (paper: 16×)",
            "rule": "held if the factor is ≥ 10 at small r, falls with r, and ΔW's directions hold more of W than "
                    "random ones; smaller if only the last two hold; the factor alone mostly measures how far "
                    "training moved ΔW"}


def intruders(results: dict) -> dict:
    def count(eps: str) -> dict[str, int]:
        return {label: sum(run["counts"][p]["by_epsilon"][eps] for p in run["counts"])
                for label, run in results["runs"].items()}

    at, loose = count("0.5"), count("0.9")
    lora, full = at["LoRA r=8"], at["full fine-tuning"]
    verdict = HELD if lora > max(1, 2 * full) else (SMALLER if lora > full else NOT_HELD)
    return {"verdict": verdict,
            "ours": f"intruders among the top 10 directions (ε = 0.5), q and v of all blocks: LoRA r=8 {lora}, "
                    f"LoRA r=64 {at['LoRA r=64']}, full fine-tuning {full}; at the looser ε = 0.9: "
                    f"{loose['LoRA r=8']}, {loose['LoRA r=64']} and {loose['full fine-tuning']}",
            "rule": "held if, at the paper's ε = 0.5, LoRA has more than twice full fine-tuning's intruders (and at "
                    "least 2); smaller if it has more"}


def forgetting(results: dict) -> dict:
    base = results["base"]
    lora, full = (results["curves"][k]["curve"][-1] for k in ("LoRA all-linear r=16", "full fine-tuning"))
    learns_less = lora["test_loss"] > full["test_loss"]
    forgets_less = lora["english_ppl"] - base["english_ppl"] < full["english_ppl"] - base["english_ppl"]
    median = median_rank(results["full_delta_ranks"])
    ratio = median / results["lora_r"]
    verdict = HELD if learns_less and forgets_less else (SMALLER if learns_less or forgets_less else NOT_HELD)
    return {"verdict": verdict,
            "ours": f"held-out loss LoRA {lora['test_loss']:.3f} vs full {full['test_loss']:.3f}; English "
                    f"perplexity {base['english_ppl']:.1f} before, LoRA {lora['english_ppl']:.1f}, full "
                    f"{full['english_ppl']:.1f}; full fine-tuning's ΔW needs a median rank of "
                    f"{median:g} for 90% of its energy, {ratio:.1f}× LoRA's r={results['lora_r']}",
            "rule": "held if LoRA both learns less (higher held-out loss) and forgets less (smaller rise in "
                    "English perplexity); smaller if only one"}


def learning_rate(results: dict) -> dict:
    ratio = results.get("best_ratio")
    att, all_ = (results["attention_vs_all"][k]["test_loss"] for k in ("attention only", "all-linear"))
    diff, noise = _gap(all_, att)
    if ratio is None:
        verdict = NOT_HELD
    else:
        verdict = HELD if 3 <= ratio <= 30 else (SMALLER if ratio > 1 else NOT_HELD)
    shown = "undefined (a sweep diverged everywhere)" if ratio is None else f"{ratio:.0f}× on the grid"
    if results.get("fitted_ratio"):
        shown += f" ({results['fitted_ratio']:.0f}× between the minima of parabolas through each best point)"
    return {"verdict": verdict,
            "ours": f"best LoRA rate / best full rate = {shown}; all-linear beats attention-only by {diff:+.3f} "
                    f"held-out loss ({_noise(noise, att, all_)})",
            "rule": "held if the ratio of best rates is between 3× and 30× (the post: about 10×); smaller if > 1"}


RULES: dict[str, Callable[[dict], dict]] = {
    "targets": targets, "rank": rank, "subspace": subspace, "amplification": amplification,
    "intruders": intruders, "forgetting": forgetting, "learning_rate": learning_rate}


def verdict(result: dict) -> dict:
    """{"verdict", "ours", "rule"} for a replay result (as written by record.write)."""
    name = result.get("name")
    if name not in RULES:
        raise ValueError(f"result name={name!r} is not allowed: use one of {', '.join(RULES)}")
    return RULES[name](result["results"])


def disagreements(shipped: dict, live: dict) -> list[str]:
    """Sentences saying where a live run's verdict differs from the shipped one's (empty when they agree)."""
    a, b = verdict(shipped), verdict(live)
    if a["verdict"] == b["verdict"]:
        return []
    return [f"The shipped {shipped['scale']} run says “{a['verdict']}”; your {live['scale']} run says "
            f"“{b['verdict']}” ({b['ours']})."]
