"""The seven replays, as data: each names its paper and a function that turns a Lab into JSON-ready results.

    for e in EXPERIMENTS: print(e.name, e.title)
    results = experiment("rank").run(Lab.open(QUICK))

Each function trains the runs it needs through `lab.run` (cached, so the rank sweep's adapters also serve the
subspace and amplification replays), then measures. No result is tuned toward the paper: the settings below were
fixed before the full runs, and the verdict on the page is computed from the numbers (`verdicts.py`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

from ..intruders import intruder_dimensions, reduce_intruder_dimension
from . import analysis
from .runs import Lab, Run, RunSpec, spread

MIDDLE = 15  # SmolLM2 has 30 blocks; the LoRA paper's Table 7 reads GPT-3's middle block (48 of 96)
RANKS = (1, 2, 4, 8, 16, 64)
QV = ("q_proj", "v_proj")
ATTENTION = ("q_proj", "k_proj", "v_proj", "o_proj")
MLP = ("gate_proj", "up_proj", "down_proj")
ALL_LINEAR = ATTENTION + MLP
LORA_LR, FULL_LR = 2e-3, 5e-5   # fixed before any full run: the live page's default, and a common full-FT rate
# One log-spaced grid in steps of 4x for both; LoRA sweeps its top four points and full fine-tuning its bottom four,
# so neither the grid nor the ratio of best points is built around the post's 10x. The quick scale keeps every other.
LR_GRID = (1.25e-5, 5e-5, 2e-4, 8e-4, 3.2e-3, 1.28e-2)
LORA_LRS, FULL_LRS = LR_GRID[2:], LR_GRID[:4]
EPSILONS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
LAMBDAS = (1.0, 0.75, 0.5, 0.25, 0.0)
# Table 5's configurations, each given the rank whose count comes nearest q alone at r = 8.
TARGET_SETS = (("q", ("q_proj",)), ("k", ("k_proj",)), ("v", ("v_proj",)), ("o", ("o_proj",)),
               ("q, v", QV), ("q, k, v, o", ATTENTION), ("MLP only", MLP), ("all-linear", ALL_LINEAR))


def layer_name(i: int, proj: str) -> str:
    """SmolLM2's (Llama's) module name of projection `proj` in block i."""
    group = "self_attn" if proj in ATTENTION else "mlp"
    return f"model.layers.{i}.{group}.{proj}"


def _metrics(runs: list[Run]) -> dict:
    finals = [r.summary["final"] for r in runs]
    return {key: spread([f[key] for f in finals]) for key in ("test_loss", "bleu", "english_ppl")} | {
        "per_seed": [{"seed": r.spec.seed, **r.summary["final"], "seconds": r.summary["seconds"],
                      "diverged": r.summary["diverged"]} for r in runs]}


def _seeded(lab: Lab, spec: RunSpec) -> list[Run]:
    return [lab.run(replace(spec, seed=s)) for s in lab.seeds()]


# --- 1. which weights, at a fixed budget -------------------------------------------------------------------
def targets(lab: Lab) -> dict:
    per_rank = {name: sum(lab.features(layer_name(i, t)) for i in range(lab.blocks) for t in ts)
                for name, ts in TARGET_SETS}            # trainable parameters per unit of r
    budget = 8 * per_rank["q"]
    rows = []
    for name, ts in TARGET_SETS:
        r = max(1, round(budget / per_rank[name]))
        runs = _seeded(lab, RunSpec(targets=ts, r=r, lr=LORA_LR))
        rows.append({"label": name, "targets": list(ts), "r": r, "trainable": runs[0].summary["trainable"],
                     "vs_budget": runs[0].summary["trainable"] / budget - 1.0, **_metrics(runs)})
    return {"budget": budget, "configs": rows}


# --- 2. the rank sweep -------------------------------------------------------------------------------------
def rank(lab: Lab) -> dict:
    rows = []
    for r in RANKS:
        runs = _seeded(lab, RunSpec(targets=QV, r=r, lr=LORA_LR))
        rows.append({"r": r, "trainable": runs[0].summary["trainable"], **_metrics(runs)})
    return {"targets": list(QV), "lora_alpha": 16, "ranks": rows}


# --- 3. subspace similarity --------------------------------------------------------------------------------
def subspace(lab: Lab) -> dict:
    r8, r64, r64b = (lab.run(RunSpec(targets=QV, r=r, lr=LORA_LR, seed=s)) for r, s in ((8, 0), (64, 0), (64, 1)))
    out = {"layer": MIDDLE, "modules": {}}
    for proj in QV:
        name = layer_name(MIDDLE, proj)
        A8, A64, A64b = (run.factors[name][1] for run in (r8, r64, r64b))
        n = A8.shape[1]
        out["modules"][proj] = {
            "in_features": n,
            "r8_vs_r64": analysis.phi_grid(A8, A64),
            "seed_vs_seed_r64": analysis.phi_grid(A64, A64b),
            "random_r8_vs_r64": analysis.phi_grid(analysis.random_factor((8, n), 1),
                                                  analysis.random_factor((64, n), 2)),
            "baseline_r8_vs_r64": analysis.phi_random_baseline(8, 64, n),
            "top1_by_layer": [analysis.phi_grid(r8.factors[layer_name(i, proj)][1],
                                                r64.factors[layer_name(i, proj)][1])[0][0] for i in range(lab.blocks)],
        }
    return out


# --- 4. the amplification factor ---------------------------------------------------------------------------
def amplification(lab: Lab) -> dict:
    out = {"layer": MIDDLE, "ranks": []}
    for r in (4, 64):
        run = lab.run(RunSpec(targets=QV, r=r, lr=LORA_LR))
        row = {"r": r, "modules": {}}
        for proj in QV:
            name = layer_name(MIDDLE, proj)
            W, dW = lab.weight(name), run.deltas[name]
            noise = analysis.random_factor(dW.shape, 3)
            random_delta = noise / noise.norm() * dW.norm()   # same norm, random directions
            row["modules"][proj] = {
                "table7": analysis.amplification(W, dW, r),
                "random_delta": analysis.amplification(W, random_delta, r),
                "overlap_with_W_top": analysis.direction_overlap(W, dW, min(r, 16)),
                "factor_by_layer": [analysis.amplification(lab.weight(layer_name(i, proj)),
                                                           run.deltas[layer_name(i, proj)], r)["factor"]
                                    for i in range(lab.blocks)],
            }
        out["ranks"].append(row)
    return out


# --- 5. intruder dimensions --------------------------------------------------------------------------------
def _intruder_counts(lab: Lab, run: Run) -> dict:
    """Intruders per threshold and per block. One SVD pair per layer: a direction is an intruder at ε exactly when
    its best cosine is below ε, so every threshold is read from the same best cosines."""
    counts = {}
    for proj in QV:
        names = [layer_name(i, proj) for i in range(lab.blocks)]
        reports = [intruder_dimensions(lab.weight(n), lab.weight(n) + run.deltas[n], 10, 0.5) for n in names]
        cosines = [c for rep in reports for c in rep.best_cosine]
        counts[proj] = {"by_epsilon": {str(eps): sum(c < eps for c in cosines) for eps in EPSILONS},
                        "by_layer": [len(rep.intruders) for rep in reports],
                        "best_cosine_middle": reports[MIDDLE].best_cosine}
    return counts


def intruders(lab: Lab) -> dict:
    lora = {r: lab.run(RunSpec(targets=QV, r=r, lr=LORA_LR)) for r in (8, 64)}
    full = lab.run(RunSpec(kind="full", lr=FULL_LR, curve=True))
    out = {"top_k": 10, "threshold_epsilon": 0.5, "layers": lab.blocks, "base": lab.base_scores(),
           "runs": {f"LoRA r={r}": {"label": run.summary["label"], "counts": _intruder_counts(lab, run)}
                    for r, run in lora.items()}}
    out["runs"]["full fine-tuning"] = {"label": full.summary["label"], "counts": _intruder_counts(lab, full)}
    reduction = []
    for lam in LAMBDAS:
        model = lab.rebuild(lora[8])
        reports = reduce_intruder_dimension(model, mitigation_lambda=lam)
        reduction.append({"lambda": lam, "intruders": sum(len(rep.intruders) for rep in reports.values()),
                          **lab.scores(model)})
    out["reduction"] = {"run": lora[8].summary["label"], "points": reduction}
    return out


# --- 6. learns less, forgets less --------------------------------------------------------------------------
def forgetting(lab: Lab) -> dict:
    specs = {"LoRA all-linear r=16": RunSpec(targets=ALL_LINEAR, r=16, lora_alpha=32, lr=LORA_LR, curve=True),
             "full fine-tuning": RunSpec(kind="full", lr=FULL_LR, curve=True)}
    runs = {label: lab.run(spec) for label, spec in specs.items()}
    full = runs["full fine-tuning"]
    ranks = {}
    for proj in ALL_LINEAR:
        profiles = [analysis.rank_profile(full.deltas[layer_name(i, proj)]) for i in range(lab.blocks)]
        ranks[proj] = {key: [p[key] for p in profiles] for key in ("rank_50", "rank_90", "rank_99", "effective_rank")}
        ranks[proj]["full_rank"] = profiles[0]["full_rank"]
        ranks[proj]["singular_values_middle"] = profiles[MIDDLE]["singular_values"]
    return {"base": lab.base_scores(),
            "curves": {label: {"label": run.summary["label"], "trainable": run.summary["trainable"],
                               "curve": run.summary["curve"], "train_loss": run.summary["train_loss"],
                               "seconds": run.summary["seconds"]} for label, run in runs.items()},
            "full_delta_ranks": ranks, "lora_r": 16}


# --- 7. learning rates -------------------------------------------------------------------------------------
def learning_rate(lab: Lab) -> dict:
    grid = slice(None) if lab.scale.name == "full" else slice(None, None, 2)
    lora = [lab.run(RunSpec(targets=ALL_LINEAR, r=8, lr=lr)) for lr in LORA_LRS[grid]]
    full = [lab.run(RunSpec(kind="full", lr=lr)) for lr in FULL_LRS[grid]]

    def sweep(runs: list[Run]) -> dict:
        points = [{"lr": run.spec.lr, **run.summary["final"], "diverged": run.summary["diverged"]} for run in runs]
        finite = [p for p in points if not p["diverged"]]
        best = min(finite, key=lambda p: p["test_loss"]) if finite else None
        fitted = analysis.parabola_minimum([p["lr"] for p in finite], [p["test_loss"] for p in finite])
        return {"points": points, "best_lr": best["lr"] if best else None, "fitted_best_lr": fitted}

    out = {"lora": {"label": "LoRA all-linear r=8", **sweep(lora)},
           "full": {"label": "full fine-tuning", **sweep(full)}}
    if out["lora"]["best_lr"] and out["full"]["best_lr"]:
        out["best_ratio"] = out["lora"]["best_lr"] / out["full"]["best_lr"]
    if out["lora"]["fitted_best_lr"] and out["full"]["fitted_best_lr"]:
        out["fitted_ratio"] = out["lora"]["fitted_best_lr"] / out["full"]["fitted_best_lr"]
    out["attention_vs_all"] = {
        label: {"targets": list(ts), "trainable": runs[0].summary["trainable"], **_metrics(runs)}
        for label, ts in (("attention only", ATTENTION), ("all-linear", ALL_LINEAR))
        for runs in [_seeded(lab, RunSpec(targets=ts, r=8, lr=LORA_LR))]}
    return out


@dataclass(frozen=True)
class Experiment:
    """One replay: its command-line name, its title, the paper it replays, and how to run it."""

    name: str
    title: str
    paper: str
    run: Callable[[Lab], dict]


EXPERIMENTS = (
    Experiment("targets", "Which weights to adapt at a fixed budget", "LoRA (Hu et al. 2021), Table 5", targets),
    Experiment("rank", "How much rank is enough", "LoRA (Hu et al. 2021), Tables 6 and 18", rank),
    Experiment("subspace", "Do r=8 and r=64 learn the same directions?", "LoRA (Hu et al. 2021), Figures 3 and 4",
               subspace),
    Experiment("amplification", "How ΔW relates to W: the amplification factor",
               "LoRA (Hu et al. 2021), Table 7 and Figure 8", amplification),
    Experiment("intruders", "Intruder dimensions, and shrinking them",
               "Shuttleworth et al. 2024 (arXiv 2410.21228)", intruders),
    Experiment("forgetting", "LoRA learns less and forgets less", "Biderman et al. 2024 (arXiv 2405.09673)",
               forgetting),
    Experiment("learning_rate", "Learning rates: LoRA against full fine-tuning",
               "LoRA Without Regret (Thinking Machines, 2025)", learning_rate),
)
NAMES = tuple(e.name for e in EXPERIMENTS)
# `run all` order: the rank sweep first, since its adapters also serve subspace and amplification.
ALL_ORDER = ("rank", "subspace", "amplification", "targets", "forgetting", "intruders", "learning_rate")


def experiment(name: str) -> Experiment:
    """The experiment called `name`; ValueError listing the names otherwise."""
    for e in EXPERIMENTS:
        if e.name == name:
            return e
    raise ValueError(f"experiment={name!r} is not allowed: use one of {', '.join(NAMES)}")

