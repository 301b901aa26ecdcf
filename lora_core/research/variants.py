"""The Variants study: DoRA's Figure 2, LoRA+ and LoRA-FA, OLoRA and PiSSA, and what each costs, on SmolLM2.

    python -m lora_core.research.variants run --out results/variants            # the full study (see FULL)
    python -m lora_core.research.variants run --quick --out /tmp/variants       # 4 steps per run: checks the code

    result = shipped()                       # results/variants/variants.json, or None before the study has run
    verdict(result)                          # {"verdict", "ours", "rule"}: DoRA's Figure 2, held or not
    live_check(base, tok, "dora", steps=3)   # the page's live part: the step-0 check and ΔM/ΔD of a short run

Four parts, on the replays' model, task and runner conventions (runs.py, experiments.py: SmolLM2-135M-Instruct, the
E2E-style task, held-out loss; LoRA at lr 2e-3 on q and v, r = 8, α = 16; full fine-tuning at 5e-5), each variant
with the same data order, seed and number of steps:

1. `decomposition`: full fine-tuning, LoRA and DoRA with checkpoints; ΔM and ΔD of every q and v matrix at every
   checkpoint; the slope and correlation of ΔM against ΔD per method (DoRA, Liu et al. 2024, arXiv 2402.09353,
   §3.2 and §4.1: FT -0.62 and DoRA -0.31 against LoRA +0.83), and a verdict by the rule in `verdict`.
2. `optimizers`: LoRA+ (ratio 16) and LoRA-FA against plain LoRA: curves and held-out loss, LoRA's seed spread beside.
3. `inits`: OLoRA and PiSSA against the default init, at step 0 (logits, residual, ‖ΔW‖) and after training.
4. `cost`: step time and counted bytes per variant, measured here; the benchmark's DoRA rows where
   results/bench/cpu_variants.json holds them (`bench_variant_rows`).

Every learning rate below was fixed before the full run and is not tuned toward any paper.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from ..provenance import provenance
from ..settings_file import REPO_ROOT
from . import record
from .e2e import make_task
from .runs import spread
from .variants_runs import FULL, LABELS, QUICK, Scale, Study, VariantSpec, fit
from .verdicts import HELD, NOT_HELD, SMALLER

NAME = "variants"
RESULTS_DIR = REPO_ROOT / "results" / "variants"
BENCH_VARIANTS = REPO_ROOT / "results" / "bench" / "cpu_variants.json"
LORA_LR, FULL_LR = 2e-3, 5e-5             # the replays' rates (experiments.py)
# LoRA+ at ratio 16 two ways: A at LoRA's rate (B 16x faster), or B at LoRA's rate (A 16x slower).
LORAPLUS_LRS = (LORA_LR, LORA_LR / 16)
# LoRA-FA at LoRA's rate, and at the rate of PEFT's LoRA-FA example (Llama-3-8B, r = 16: examples/lorafa_finetune).
LORAFA_LRS = (LORA_LR, 7e-5)
DECOMPOSED = ("full", "lora", "dora")
PAPER_SIGNS = {"full": -1, "lora": 1, "dora": -1}

PAPERS = (
    {"method": "DoRA", "source": "Liu et al. 2024, DoRA: Weight-Decomposed Low-Rank Adaptation, arXiv 2402.09353",
     "where": "§3.2 'Weight Decomposition Analysis', Figure 2 and §4.1",
     "setting": "VL-BART on four image-text tasks, query matrices of 6 layers at 3 intermediate steps and the last",
     "numbers": {"correlation ΔM vs ΔD, full fine-tuning": -0.62, "correlation, LoRA": 0.83,
                 "correlation, DoRA": -0.31},
     "finding": "LoRA changes magnitude and direction in proportion (positive slope); full fine-tuning and DoRA "
                "show a negative slope: large direction changes come with small magnitude changes, or the reverse.",
     "checked": "read in a stored text of arXiv 2402.09353 (search index file 52022625658): 'both FT and DoRA "
                "exhibit negative correlation values of -0.62 and -0.31, respectively. In contrast, LoRA shows a "
                "positive correlation with a value of 0.83'. Figure 2's axes span ΔD 0.014-0.022 and ΔM 0.05-0.09 "
                "(FT), ΔD 0.10-0.16 and ΔM 0.25-0.45 (LoRA), ΔD 0.16-0.32 and ΔM 0.7-1.4 (DoRA)."},
    {"method": "LoRA+", "source": "Hayou, Ghosh, Yu 2024, LoRA+, arXiv 2402.12354", "where": "abstract",
     "setting": "models of large width; B's learning rate a well-chosen multiple of A's",
     "numbers": {"performance": "1-2% improvements", "finetuning speed": "up to ~2x"},
     "finding": "one learning rate for A and B is suboptimal at large width; B should learn faster.",
     "checked": "the abstract, read in stored copies of arXiv 2402.12354's abstract page."},
    {"method": "LoRA-FA", "source": "Zhang et al. 2023, LoRA-FA, arXiv 2308.03303", "where": "abstract",
     "setting": "RoBERTa, T5, LLaMA; A frozen, only B trained",
     "numbers": {"overall memory": "up to 1.4x less than LoRA"},
     "finding": "freezing A removes the full-rank input activations from memory, with accuracy close to LoRA's.",
     "checked": "the abstract, read in stored copies of arXiv 2308.03303's abstract page. PEFT's example trains "
                "Llama-3-8B at lr 7e-5 and notes LoRA-FA 'may converge slower than LoRA' and needs an lr search."},
    {"method": "OLoRA", "source": "Büyükakyüz 2024, OLoRA, arXiv 2406.01775", "where": "abstract",
     "setting": "LLMs; A and B from the thin QR of W, trained against the residual",
     "numbers": {}, "finding": "orthonormal initialisation 'significantly accelerates the convergence'.",
     "checked": "the abstract, read in a stored copy (trylon.ai's page of the paper); no number to quote."},
    {"method": "PiSSA", "source": "Meng, Wang, Zhang 2024, PiSSA, arXiv 2404.02948", "where": "abstract",
     "setting": "LLMs; A and B from W's top-r singular directions, trained against the residual",
     "numbers": {}, "finding": "starting from W's principal components converges faster than LoRA's zero start.",
     "checked": "kept in words only: the abstract's numbers were not read in a stored copy here."},
)


# --- 1. DoRA's Figure 2 --------------------------------------------------------------------------------------------
def _by_proj(points: list[dict]) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for p in points:
        out.setdefault(p["proj"], []).append(p)
    return out


def fits(points: list[dict]) -> dict:
    """Per projection and pooled: the fit over every layer and checkpoint, and within each checkpoint."""
    groups = {**_by_proj(points), "all": points}
    out = {}
    for proj, pts in groups.items():
        steps = sorted({p["step"] for p in pts})
        out[proj] = {**fit(pts), "by_step": [{"step": s, **fit([p for p in pts if p["step"] == s])} for s in steps]}
    return out


def decomposition(study: Study) -> dict:
    """Full fine-tuning, LoRA and DoRA with checkpoints; ΔM against ΔD per method (DoRA's Figure 2)."""
    runs = {m: study.train(VariantSpec(m, FULL_LR if m == "full" else LORA_LR), track=True) for m in DECOMPOSED}
    projections = list(_by_proj(runs["lora"]["points"]))
    return {"methods": list(DECOMPOSED), "projections": projections, "headline": projections[0],
            "runs": runs, "fits": {m: fits(run["points"]) for m, run in runs.items()}}


RULE = ("held if, on the paper's matrices (q), full fine-tuning's and DoRA's correlations are below -2/√n and LoRA's "
        "above +2/√n (n points per method; ±2/√n is where a correlation of unrelated points stays 95% of the time, "
        "and points of one layer at several checkpoints are not independent, so the band is if anything narrow); "
        "held in direction but smaller if LoRA's correlation exceeds both others' by more than 2/√n without all "
        "three signs; did not hold here otherwise")


def verdict(result: dict) -> dict:
    """{"verdict", "ours", "rule"} for DoRA's Figure 2, from a study result's correlations."""
    part = result["results"]["decomposition"]
    proj = part["headline"]
    r = {m: part["fits"][m][proj]["correlation"] for m in DECOMPOSED}
    n = min(part["fits"][m][proj]["n"] for m in DECOMPOSED)
    noise = 2 / math.sqrt(n) if n else math.inf
    shown = "; ".join(f"{LABELS[m]} {'n/a' if r[m] is None else f'{r[m]:+.2f}'}" for m in DECOMPOSED)
    ours = (f"correlation of ΔM with ΔD over {proj} of every layer and checkpoint ({n} points each): {shown} "
            f"(paper: full fine-tuning -0.62, LoRA +0.83, DoRA -0.31; noise band ±{noise:.2f})")
    if any(v is None for v in r.values()):
        return {"verdict": NOT_HELD, "ours": ours + "; a correlation is undefined", "rule": RULE}
    signs = all(PAPER_SIGNS[m] * r[m] > noise for m in DECOMPOSED)
    contrast = r["lora"] - r["full"] > noise and r["lora"] - r["dora"] > noise
    return {"verdict": HELD if signs else (SMALLER if contrast else NOT_HELD), "ours": ours, "rule": RULE}


# --- 2 and 3. optimizers and inits against plain LoRA ----------------------------------------------------------------
def _against(loss: float, lora: dict) -> dict:
    """A final held-out loss against LoRA's seed spread: the difference, and whether it exceeds 2 std."""
    diff = loss - lora["final_loss"]["mean"]
    noise = 2 * lora["final_loss"]["std"] if lora["final_loss"]["n"] > 1 else None
    if noise is None:
        reading = "one LoRA seed: no seed noise was measured"
    elif abs(diff) <= noise:
        reading = "within LoRA's seed noise"
    else:
        reading = "lower than LoRA beyond seed noise" if diff < 0 else "higher than LoRA beyond seed noise"
    return {"vs_lora": diff, "noise": noise, "reading": reading}


def lora_baseline(study: Study, lora: dict) -> dict:
    """Plain LoRA over the scale's seeds (seed 0 is `lora`, already trained): the yardstick for parts 2 and 3."""
    runs = [lora] + [study.train(VariantSpec("lora", LORA_LR, seed=s)) for s in range(1, study.scale.noise_seeds)]
    return {"runs": runs, "final_loss": spread([run["final_loss"] for run in runs])}


def _rows(runs: list[dict], lora: dict) -> list[dict]:
    return [{"method": run["method"], "label": run["label"], "lr": run["spec"]["lr"], "trainable": run["trainable"],
             "start_loss": run["held_out"][0]["loss"], "final_loss": run["final_loss"], "diverged": run["diverged"],
             **_against(run["final_loss"], lora)} for run in runs]


def optimizers(study: Study, lora: dict) -> dict:
    """LoRA+ and LoRA-FA against plain LoRA: same task, steps, seed and data order."""
    runs = [study.train(VariantSpec("loraplus", lr)) for lr in LORAPLUS_LRS]
    runs += [study.train(VariantSpec("lorafa", lr)) for lr in LORAFA_LRS]
    return {"lora": lora["runs"][0], "runs": runs, "rows": _rows(runs, lora)}


def inits(study: Study, lora: dict) -> dict:
    """OLoRA and PiSSA against the default init: where each starts, and where it ends."""
    start = [study.step0(VariantSpec(m, LORA_LR)) for m in ("lora", "olora", "pissa")]
    runs = [study.train(VariantSpec(m, LORA_LR)) for m in ("olora", "pissa")]
    return {"step0": start, "lora": lora["runs"][0], "runs": runs, "rows": _rows(runs, lora)}


def cost(study: Study) -> dict:
    """Step time and counted bytes of every variant, measured in one process, against LoRA's."""
    specs = [VariantSpec(m, FULL_LR if m == "full" else LORA_LR) for m in ("lora", "dora", "loraplus", "lorafa",
                                                                           "olora", "pissa", "full")]
    return study.cost(specs)


def run_study(study: Study, argv: Sequence[str] = ()) -> dict:
    """Every part on `study`, with provenance: the JSON the page reads."""
    start = time.perf_counter()
    part1 = decomposition(study)
    lora = lora_baseline(study, part1["runs"]["lora"])
    results = {"decomposition": part1, "lora_seeds": lora, "optimizers": optimizers(study, lora),
               "inits": inits(study, lora), "cost": cost(study), "papers": list(PAPERS)}
    scale = study.scale
    command = list(argv) or ["run", *(["--quick"] if scale.name == "quick" else []), "--out", str(RESULTS_DIR)]
    result = {"name": NAME, "title": "Variants: DoRA, LoRA+, LoRA-FA, OLoRA, PiSSA", "paper": PAPERS[0]["source"],
              "scale": scale.name, **provenance("lora_core.research.variants", command, study.device),
              "seconds": time.perf_counter() - start, "seeds": list(range(scale.noise_seeds)),
              "settings": {"model": "SmolLM2-135M-Instruct", "task": "E2E-style data-to-text (lora_core.research.e2e)",
                           **study.settings, "lora_lr": LORA_LR, "full_lr": FULL_LR,
                           "loraplus_lrs": list(LORAPLUS_LRS), "lorafa_lrs": list(LORAFA_LRS)},
              "results": results}
    result["results"]["verdict"] = verdict(result)
    return result


# --- reading results -------------------------------------------------------------------------------------------
def shipped(results_dir: str | Path | None = None) -> dict | None:
    """The shipped full study (results/variants/variants.json unless `results_dir`), or None before it has run."""
    return record.shipped(NAME, RESULTS_DIR if results_dir is None else results_dir)


def planned_runs(scale: Scale = FULL) -> int:
    """How many fine-tunes the study trains at `scale` (the cost measurement adds a few steps per variant)."""
    return len(DECOMPOSED) + (scale.noise_seeds - 1) + len(LORAPLUS_LRS) + len(LORAFA_LRS) + 2


def study_command(quick: bool = False) -> str:
    """The command that writes the study where `shipped()` reads it, as typed from the repository root."""
    folder = Path(RESULTS_DIR)
    shown = folder.relative_to(REPO_ROOT) if folder.is_relative_to(REPO_ROOT) else folder
    return f"python -m lora_core.research.variants run{' --quick' if quick else ''} --out {shown}"


def bench_variant_rows(path: str | Path | None = None) -> dict | None:
    """The benchmark's rows for adapters other than plain LoRA (DoRA, two adapters), with its command; None if the
    benchmark JSON is missing or has no such rows. Its shapes are distilgpt2's, not SmolLM2's."""
    path = Path(BENCH_VARIANTS if path is None else path)
    if not path.is_file():
        return None
    bench = json.loads(path.read_text(encoding="utf-8"))
    rows = [{"case": c["name"], "adapter": c.get("adapter"), "ms": min(c["ms"].values()) if c.get("ms") else None,
             "vs_frozen": c.get("vs_frozen", {}), "trainable": c.get("trainable"),
             "optimizer_bytes": c.get("state_bytes"), "activations_bytes": c.get("saved_bytes")}
            for c in bench.get("cases", []) if c.get("adapter") not in (None, "lora")]
    if not rows:
        return None
    return {"rows": rows, "command": (bench.get("provenance") or {}).get("command"), "model": bench.get("model"),
            "device": bench.get("device_name")}


# --- the page's live part ----------------------------------------------------------------------------------------
LIVE_METHODS = ("lora", "dora", "loraplus", "lorafa", "olora", "pissa")  # no full fine-tune: a server copies no base


def live_check(base, tokenizer, method: str, steps: int = 3, seed: int = 0) -> dict:
    """The step-0 check and ΔM/ΔD after each of `steps` short steps (batch 4) of one variant, on `base` (never written).

    For a page: the adapter goes on a copy that shares the base's weights; PiSSA's and OLoRA's residual is a new tensor.
    """
    if method not in LIVE_METHODS:
        raise ValueError(f"method={method!r} is not allowed: use one of {', '.join(LIVE_METHODS)}")
    if isinstance(steps, bool) or not isinstance(steps, int) or not 1 <= steps <= 12:
        raise ValueError(f"steps={steps!r} is not allowed: use an integer from 1 to 12")
    task = make_task(0, n_train=256, n_test=16)   # a small draw of the study's task: encoding 2,000 pairs takes seconds
    scale = Scale("live", steps=steps, checkpoint_every=1, noise_seeds=1, timing_repeats=1, batch_size=4, n_loss=8)
    device = str(next(base.parameters()).device)
    study = Study(base, tokenizer, task, scale, device=device)
    spec = VariantSpec(method, LORA_LR, seed=seed)
    run = study.train(spec, track=True)
    return {"method": method, "label": LABELS[method], "step0": study.step0(spec), "run": run,
            "fits": fits(run["points"]), "matrices": len(study.names)}


# --- the command line --------------------------------------------------------------------------------------------
def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m lora_core.research.variants",
                                     description="The Variants study (DoRA, LoRA+, LoRA-FA, OLoRA, PiSSA) on SmolLM2.")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help=f"run the study and write OUT/{NAME}.json")
    run.add_argument("--quick", action="store_true", help=f"{QUICK.steps} steps per run instead of {FULL.steps}: "
                     "checks the code")
    run.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    run.add_argument("--out", default=str(RESULTS_DIR.relative_to(REPO_ROOT)), help="output folder")
    return parser


def main(argv: Sequence[str] | None = None, log: Callable[[str], None] = print,
         open_study: Callable[..., Study] = Study.open) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = _parser().parse_args(argv)
    scale = QUICK if args.quick else FULL
    study = open_study(scale, device=args.device, log=log)
    log(f"variants: running the {scale.name} study ({scale.steps} steps per run)...")
    command = ["run", *(["--quick"] if args.quick else []), *(["--device", args.device] if args.device != "cpu"
                                                               else []), "--out", args.out]
    result = run_study(study, command)
    path = record.write(result, args.out)
    log(f"variants: {result['seconds']:.0f} s -> {path}")
    log(f"DoRA's Figure 2 here: {result['results']['verdict']['verdict']} ({result['results']['verdict']['ours']})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
