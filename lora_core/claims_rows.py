"""One function per row of CLAIMS.md: the truth in words, with numbers filled in, and its evidence.

Each `rowN(weight=None, runs_dir=None)` returns (truth, Evidence). `claims.claim(N)` wraps it with the
claim and the verdict. The measurements come from anatomy, counting, quant, memory, evidence and
experiments; nothing here is a typed-in number except the seeds' own claims (SEED_000), quoted so
the evidence can be set against them, and loralib's class names, cited from its source.
"""

from __future__ import annotations

import functools
from pathlib import Path

import torch

from . import anatomy, evidence, evidence_quant, experiments, memory, quant
from .config import LoraConfig
from .counting import count_lora_parameters
from .evidence import Evidence
from .layers import SUPPORTED_TYPES
from .models import build_on_meta
from .spectrum import rank_k_report

# The seeds' own numbers, quoted so that the evidence can be set against them.
SEED_000 = {"r": 8, "lora_alpha": 16, "targets": ["c_attn"], "claimed": 98_304, "claimed_percent": 0.12,
            "bleu": 0.65, "train_pairs": 4, "epochs": 5}
# loralib is not installed here, so its layer classes cannot be introspected: these are read from
# microsoft/LoRA loralib/layers.py (main branch) and shown with that provenance.
LORALIB_LAYERS = {"Embedding": "nn.Embedding", "Linear": "nn.Linear", "MergedLinear": "nn.Linear (fused qkv)",
                  "Conv1d": "nn.Conv1d", "Conv2d": "nn.Conv2d", "Conv3d": "nn.Conv3d"}


def _pct(x: float, digits: int = 2) -> str:
    return f"{100 * x:.{digits}f}%"


def _curves(series: dict, title: str, y_title: str, log_y: bool = True, dashed: tuple = ()) -> dict:
    return {"kind": "curves", "series": series, "title": title, "y_title": y_title, "log_y": log_y,
            "dashed": list(dashed)}


# --- seed 000 --------------------------------------------------------------------------------------
def row1(**_) -> tuple[str, Evidence]:
    cfg = LoraConfig(r=SEED_000["r"], lora_alpha=SEED_000["lora_alpha"], target_modules=SEED_000["targets"])
    c = anatomy.explain_claimed_count("distilgpt2", cfg, SEED_000["claimed"])
    book = count_lora_parameters("distilgpt2", cfg)
    row = book.rows[0]
    truth = (f"c_attn maps {row.in_features}→{row.out_features} (q, k and v side by side), so one adapter costs "
             f"{row.r}·({row.in_features}+{row.out_features}) = {row.lora_per_module:,}, and distilgpt2 has "
             f"{row.count} blocks: {c['trainable']:,} trainable. PEFT divides by every parameter after injection, "
             f"adapter included: {book.peft_line}. The claimed {c['claimed']:,} is {c['implied_modules']:g} × "
             f"{row.lora_per_module:,}, c_attn in only {c['implied_modules']:g} of the {row.count} blocks; its "
             f"{SEED_000['claimed_percent']}% is that count over all params ({c['claimed_percent_of_total']:.4f}%).")
    return truth, Evidence(
        metrics={"claimed": f"{c['claimed']:,}", "computed": f"{c['trainable']:,}",
                 "per c_attn": f"{c['per_module']:,}", "all params": f"{c['total']:,}",
                 "trainable %": f"{c['trainable_percent']:.4f}"},
        table=book.records(), code=book.peft_line, note="lc.count_lora_parameters on the meta device")


def row2(**_) -> tuple[str, Evidence]:
    rows = [count_lora_parameters("distilgpt2", LoraConfig(r=SEED_000["r"], target_modules=t)).rows[0]
            for t in (r".*\.attn\.c_proj", ["c_attn"])]
    sq, fused = rows
    truth = (f"Right for a square matrix: {sq.r}·({sq.in_features}+{sq.out_features}) = {sq.lora_per_module:,}, "
             f"{anatomy.percent_of_weight(sq):.2f}% of {sq.weight_params:,}. distilgpt2's attn.c_proj is such a "
             f"matrix. c_attn is not: it is {fused.in_features}→{fused.out_features}, so it costs "
             f"{fused.lora_per_module:,} ({anatomy.percent_of_weight(fused):.2f}% of its weight).")
    return truth, Evidence(
        metrics={"attn.c_proj pair": f"{sq.lora_per_module:,}",
                 "% of its weight": f"{anatomy.percent_of_weight(sq):.2f}%",
                 "c_attn pair": f"{fused.lora_per_module:,}"},
        table=[{"module": r.module, "in→out": f"{r.in_features}→{r.out_features}", "weight params": r.weight_params,
                "r·(in+out)": r.lora_per_module, "% of weight": anatomy.percent_of_weight(r)} for r in rows],
        note="ledger rows of lc.count_lora_parameters")


def row3(**_) -> tuple[str, Evidence]:
    on = anatomy.trace_dropout(p=0.1, train=True)
    off = anatomy.trace_dropout(p=0.1, train=False)
    truth = (f"Forward hooks on one LoRA layer: dropout zeroes {_pct(on['branch_input_zero_fraction'], 1)} of the "
             f"copy of x that enters lora_A, {_pct(on['base_input_zero_fraction'], 1)} of the x the frozen W sees, "
             f"{_pct(on['A_zero_fraction'], 1)} of A and {_pct(on['B_zero_fraction'], 1)} of B. Survivors are "
             f"scaled by {on['kept_scale']:.4f} = 1/(1−p). In eval mode it zeroes "
             f"{_pct(off['branch_input_zero_fraction'], 1)}.")
    return truth, Evidence(
        metrics={"zeros in dropout(x) → A": _pct(on["branch_input_zero_fraction"], 1),
                 "zeros in x → W": _pct(on["base_input_zero_fraction"], 1),
                 "zeros in A": _pct(on["A_zero_fraction"], 1), "zeros in B": _pct(on["B_zero_fraction"], 1),
                 "A or B changed": "yes" if on["A_changed"] or on["B_changed"] else "no",
                 "eval-mode zeros": _pct(off["branch_input_zero_fraction"], 1)},
        figure={"kind": "dropout", "trace": on}, note="lc.anatomy.trace_dropout (forward pre-hooks)")


def row4(**_) -> tuple[str, Evidence]:
    check = evidence.task_type_check()
    counts = set(check["lora_core_trainable"].values())
    failed = [r for r in check["rows"] if not r["forward works"]]
    built = [r for r in check["rows"] if r["forward works"]]
    truth = (f"task_type picks which wrapper class PEFT returns; it does not change the adapter. lora_core's "
             f"ledger gives {'the same' if len(counts) == 1 else 'different'} count for every task_type "
             f"({', '.join(f'{n:,}' for n in sorted(counts))}).")
    if check["available"]:
        same = max(r["max |Δlogits| vs task_type=None"] for r in built)
        truth += (f" On a tiny GPT-2 with a live adapter, the {len(built)} wrappers PEFT builds give logits equal to "
                  f"task_type=None's (max |Δ| = {same:g}).")
        if failed:
            truth += (f" One choice does fail: {', '.join(r['task_type'] for r in failed)} on a decoder-only model "
                      f"raises when the wrapper is built. So: an error, sometimes; poorer performance, no.")
    return truth, Evidence(table=check["rows"], metrics={"lora_core trainable, every task_type": f"{min(counts):,}"},
                           note="peft.get_peft_model on a tiny seeded GPT-2 (PEFT imported only for this check)")


def row5(**_) -> tuple[str, Evidence]:
    d = evidence.peft_defaults()["lora_core"]
    sweep = experiments.alpha_sweep()
    left = {k: _pct(v, 1) for k, v in sweep["fraction_left"].items()}
    truth = (f"The LoRA paper sets α to the first r it tries and does not tune it; a bare LoraConfig() likewise has "
             f"α = r = {d['r']} (scale {d['scaling']:g}). α = 2r is community practice, not a finding. What α does: "
             f"it multiplies the update, like a larger step size. On the toy task at the same lr, loss left after "
             f"training: {', '.join(f'{k}: {v}' for k, v in left.items())}.")
    return truth, Evidence(
        metrics={"default α/r": f"{d['scaling']:g}", **{f"loss left, {k}": v for k, v in left.items()}},
        figure=_curves(sweep["losses"], "Toy task, same lr: larger α learns faster", "expected loss"),
        note="lc.experiments.alpha_sweep (lc.toy, Adam)")


def row6(runs_dir: str | Path | None = None, **_) -> tuple[str, Evidence]:
    rows = experiments.run_metrics(runs_dir)
    seed_scale = 100 * SEED_000["bleu"]
    how = ("Measure it: `python -m lora_core.finetune --model smollm2-135m --data recommendations --steps 40` "
           "writes runs/<name>/metrics.json with BLEU before and after on held-out interests; "
           f"lc.experiments.seed_bleu_experiment measures the seed's own setup ({SEED_000['train_pairs']} pairs, "
           f"{SEED_000['epochs']} epochs).")
    scored = [r for r in rows if r["BLEU after"] is not None]
    if not scored:
        return ("No run has been measured here yet. " + how,
                Evidence(metrics={"seed's claim on the 0–100 scale": f"{seed_scale:g}"}, note="runs/*/metrics.json"))
    best = max(scored, key=lambda r: r["BLEU after"])
    truth = (f"Measured here (sacrebleu corpus BLEU on held-out interests, 0–100 scale, where the seed's 0.65 would "
             f"be {seed_scale:g}): the best run, {best['run']} ({best['model']}, {best['steps']} steps), went from "
             f"{best['BLEU before']:.2f} to {best['BLEU after']:.2f}. " + how)
    return truth, Evidence(
        metrics={"seed's claim (0–100)": f"{seed_scale:g}", "best measured BLEU": f"{best['BLEU after']:.2f}",
                 "runs found": str(len(rows))},
        table=rows, note="read from runs/*/metrics.json, written by python -m lora_core.finetune")


def row7(**_) -> tuple[str, Evidence]:
    m = evidence.merge_check()
    truth = (f"On a tiny GPT-2 with a live adapter on all {m['wrapped']} Conv1D layers (it moves the logits by up "
             f"to {m['adapter_effect']:.3f}), merged and unmerged logits differ by at most "
             f"{m['max_abs_logit_diff']:.1e}: fp32 rounding. After merge_and_unload the model has "
             f"{m['params_merged']:,} parameters, the base's {m['params_base']:,}, and {m['lora_layers_left']} LoRA "
             f"layers: the same graph, so the same cost. Measured now: base {m['base_ms']:.2f} ms, unmerged "
             f"{m['unmerged_ms']:.2f} ms, merged {m['merged_ms']:.2f} ms per forward (best of several runs).")
    return truth, Evidence(
        metrics={"max |Δlogit| merged vs unmerged": f"{m['max_abs_logit_diff']:.1e}",
                 "params after merge": f"{m['params_merged']:,}", "LoRA layers left": str(m["lora_layers_left"]),
                 "base (ms)": f"{m['base_ms']:.2f}", "unmerged (ms)": f"{m['unmerged_ms']:.2f}",
                 "merged (ms)": f"{m['merged_ms']:.2f}"},
        note="lc.evidence.merge_check: inject, merge_lora, merge_and_unload; best of several timed forwards")


# --- seed 001 ----------------------------------------------------------------------------------------
def row8(**_) -> tuple[str, Evidence]:
    s = evidence.init_stats()
    default, gauss = s["rows"]
    truth = (f"B = 0 is right: ‖ΔW‖ = {default['‖ΔW‖']:g} and the output equals the base's exactly "
             f"(max |Δ| = {default['max |output − base|']:g}). A is not Gaussian by default: PEFT draws it "
             f"Kaiming-uniform, inside ±1/√in = ±{s['kaiming_bound']:.4f} (measured {default['A min']:.4f} to "
             f"{default['A max']:.4f}) with excess kurtosis {default['A excess kurtosis']:.2f} (uniform: −1.2, "
             f"normal: 0). Gaussian A, std 1/r = {s['gaussian_std']:g}, is init_lora_weights='gaussian' "
             f"(kurtosis {gauss['A excess kurtosis']:.2f}); it is what the LoRA paper describes.")
    return truth, Evidence(
        metrics={"‖ΔW‖ at step 0": f"{default['‖ΔW‖']:g}", "A bound 1/√in": f"{s['kaiming_bound']:.4f}",
                 "A max (default)": f"{default['A max']:.4f}",
                 "A kurtosis (default)": f"{default['A excess kurtosis']:.2f}"},
        table=s["rows"], figure={"kind": "histograms", "hists": s["hists"], "title": "Values of A at step 0",
                                 "x_title": "entry of A"}, note="lc.evidence.init_stats on an nn.Linear")


def row9(**_) -> tuple[str, Evidence]:
    d = evidence.peft_defaults()
    table = [{"library": k, **v} for k, v in d.items()]
    theirs = d.get("peft", d["lora_core"])
    truth = (f"A bare LoraConfig() has r = {theirs['r']}, lora_alpha = {theirs['lora_alpha']}, lora_dropout = "
             f"{theirs['lora_dropout']}: scale α/r = {theirs['scaling']:g}." +
             (" Read from peft.LoraConfig() and from lora_core's LoraConfig()." if "peft" in d else ""))
    return truth, Evidence(metrics={"r": str(theirs["r"]), "lora_alpha": str(theirs["lora_alpha"]),
                                    "lora_dropout": str(theirs["lora_dropout"]), "scale": f"{theirs['scaling']:g}"},
                           table=table, note="LoraConfig() defaults, read live")


def row10(**_) -> tuple[str, Evidence]:
    p = experiments.alpha_lr_pair()
    names = list(p["losses"])
    truth = (f"Adam's step size does not depend on the gradient's scale, so doubling α mostly doubles ΔW's step. "
             f"On the toy task, {names[0]} and {names[1]} stay within {_pct(p['half_lr_max_rel_gap_early'], 1)} of "
             f"each other over the first {p['early_steps']} steps (then drift, up to "
             f"{_pct(p['half_lr_max_rel_gap_all'], 0)}, as A moves). Rescale A's init as well, {names[2]}, and the "
             f"runs agree to {p['exact_max_rel_gap_all']:.1e} at every step.")
    return truth, Evidence(
        metrics={f"max gap, first {p['early_steps']} steps": _pct(p["half_lr_max_rel_gap_early"], 2),
                 "max gap, whole run": _pct(p["half_lr_max_rel_gap_all"], 1),
                 "exact equivalent, max gap": f"{p['exact_max_rel_gap_all']:.1e}"},
        figure=_curves(p["losses"], "(α, lr) against (2α, lr/2) and the exact equivalent", "expected loss",
                       dashed=(names[2],)), note="lc.experiments.alpha_lr_pair (lc.toy, Adam)")


def row11(**_) -> tuple[str, Evidence]:
    res = {name: anatomy.regex_vs_all_linear(build_on_meta(name)) for name in ("distilgpt2", "SmolLM2-135M")}
    g = res["distilgpt2"]
    truth = (f"On distilgpt2 the regex finds {g['regex']}: GPT-2's projections print as Conv1D, so it misses all of "
             f"them and returns the one layer all-linear leaves out. target_modules='all-linear' wraps "
             f"{g['all_linear_modules']} modules ({', '.join(g['all_linear'])}). On a Llama model it finds the "
             f"projections, plus lm_head.")
    table = [{"model": name, "regex finds": ", ".join(r["regex"]), "all-linear wraps": r["all_linear_modules"],
              "all-linear kinds": ", ".join(f"{k} ({t} ×{n})" for k, (t, n) in r["all_linear"].items()),
              "left out": r["excluded_output_layer"]} for name, r in res.items()]
    return truth, Evidence(metrics={"regex on distilgpt2": str(g["regex"]),
                                    "all-linear modules": str(g["all_linear_modules"])},
                           table=table, code=anatomy.SEED_REGEX, note="lc.anatomy.regex_vs_all_linear on meta models")


def row12(**_) -> tuple[str, Evidence]:
    ours = sorted(t.__name__ for t in SUPPORTED_TYPES)
    truth = (f"loralib's layers.py defines {', '.join(LORALIB_LAYERS)}: MergedLinear (one fused projection such as "
             f"GPT-2's qkv) and Conv1d/Conv3d go beyond the three named. For comparison, lora_core wraps "
             f"{', '.join(ours)}.")
    return truth, Evidence(metrics={"loralib layer classes": str(len(LORALIB_LAYERS))},
                           table=[{"loralib class": k, "wraps": v} for k, v in LORALIB_LAYERS.items()],
                           note="read from microsoft/LoRA loralib/layers.py: loralib is not installed here, "
                                "so this row cites its source instead of introspecting it")


def row13(**_) -> tuple[str, Evidence]:
    s = evidence.syntax_check()
    err = s["error"]
    truth = (f"ast.parse rejects it: SyntaxError '{err['message']}' at line {err['line']} ({err['text'].strip()}): "
             f"the comma after bias is missing. With it restored the call parses, with keywords "
             f"{', '.join(s['fixed_keywords'])}.")
    return truth, Evidence(metrics={"ast.parse": "SyntaxError", "line": str(err["line"])}, code=s["broken"],
                           note="lc.evidence.syntax_check: the call rebuilt from the seed's arguments")


# --- seed 002 ------------------------------------------------------------------------------------------
def row14(**_) -> tuple[str, Evidence]:
    low, high = LoraConfig(r=64, lora_alpha=16), LoraConfig(r=64, lora_alpha=128)
    runs = {f"α={c.lora_alpha:g} (scale {c.scaling:g})": experiments.toy_run(c.r, c.lora_alpha, experiments.ALPHA_LR)
            for c in (low, high)}
    left = {k: v["losses"][-1] / v["initial"] for k, v in runs.items()}
    truth = (f"A valid choice, with a consequence: the scale is α/r = {low.scaling:g}, so B·A is shrunk "
             f"{1 / low.scaling:g}× before it is added; α = 128 would scale it by {high.scaling:g}, "
             f"{high.scaling / low.scaling:g}× more for the same factors. On the toy task at r = 64 and the same "
             f"lr, the loss left is "
             f"{', '.join(f'{k}: {_pct(v, 1)}' for k, v in left.items())}.")
    return truth, Evidence(
        metrics={"α/r": f"{low.scaling:g}", "shrink": f"{1 / low.scaling:g}×",
                 **{f"loss left, {k}": _pct(v, 1) for k, v in left.items()}},
        figure=_curves({k: v["delta_norms"] for k, v in runs.items()}, "‖ΔW‖ during training, r = 64", "‖ΔW‖_F"),
        note="LoraConfig.scaling; lc.experiments.toy_run")


def row15(weight: torch.Tensor | None = None, **_) -> tuple[str, Evidence]:
    c = evidence_quant.codebook_comparison(weight)
    steps = c["nf4_probability_steps"]
    err = {(e["weights"], e["codebook"]): e["rmse"] for e in c["errors"]}
    src = "real weight" if weight is not None else "N(0, 0.02²) control"
    truth = (f"NF4's levels are quantiles of N(0, 1): its positive levels sit at probabilities {steps[0]:.4f} apart "
             f"(spread {max(steps) - min(steps):.1e}), while neighbouring levels have ratios from "
             f"{min(c['neighbour_ratios']['NF4']):.2f} to {max(c['neighbour_ratios']['NF4']):.2f}. A log grid has one "
             f"constant ratio, {c['neighbour_ratios']['log4'][0]:g}. Weights are scaled by their block's absmax, "
             f"blocks of {c['block_size']}. RMSE on the {src}: NF4 {err[(src, 'NF4')]:.2e}, log4 "
             f"{err[(src, 'log4')]:.2e}. Double quantization cuts the constants from {c['bits_plain']:g} to "
             f"{c['bits_double']:.3f} bits per weight.")
    return truth, Evidence(
        metrics={"NF4 probability step": f"{steps[0]:.4f}", "log4 level ratio": f"{c['neighbour_ratios']['log4'][0]:g}",
                 f"RMSE NF4 ({src})": f"{err[(src, 'NF4')]:.2e}", f"RMSE log4 ({src})": f"{err[(src, 'log4')]:.2e}",
                 "constants, bits/weight": f"{c['bits_plain']:g} → {c['bits_double']:.3f}"},
        table=c["errors"], figure={"kind": "codebook", "books": c["books"], "density": c["density"]},
        note="lc.quant: NF4 built from Φ⁻¹, blockwise absmax, double quantization")


def row16(**_) -> tuple[str, Evidence]:
    m = evidence_quant.method_memory()
    est = m["estimates"]
    w = {k: memory.gib(e.weights) for k, e in est.items()}
    truth = (f"For seed 002's setup (Llama-2-7b, r = 64, PEFT's default q_proj and v_proj), LoRA sits in "
             f"{m['layers_with_lora']} of {m['num_layers']} layers: every layer, {m['trainable']:,} trainable. The "
             f"weight memory falls because the frozen base is stored in NF4: {w['lora']:.1f} GiB of fp16 weights "
             f"become {w['qlora']:.1f} GiB.")
    return truth, Evidence(
        metrics={"layers with LoRA": f"{m['layers_with_lora']} of {m['num_layers']}",
                 "trainable": f"{m['trainable']:,}",
                 "weights, LoRA fp16 (GiB)": f"{w['lora']:.1f}", "weights, QLoRA NF4 (GiB)": f"{w['qlora']:.1f}"},
        figure={"kind": "memory", "estimates": est}, note="lc.memory.compare_methods(SEED_002_QLORA)")


def row17(**_) -> tuple[str, Evidence]:
    lib = evidence.library_of("SFTTrainer")
    found = lib["libraries"]
    truth = (f"SFTTrainer is TRL's class, built on transformers' Trainer; PEFT supplies the adapter that TRL can take "
             f"as peft_config. Checked by import: peft exports SFTTrainer: {found['peft']['exports']}; names in peft "
             f"containing 'Trainer': {lib['peft_names_with_Trainer'] or 'none'}; transformers.Trainer exists: "
             f"{lib['transformers_Trainer']}; TRL installed here: {found['trl']['installed']}.")
    return truth, Evidence(metrics={"peft has SFTTrainer": "yes" if found["peft"]["exports"] else "no",
                                    "TRL installed": "yes" if found["trl"]["installed"] else "no"},
                           table=[{"library": k, **v} for k, v in found.items()], note="importlib, hasattr")


def row18(**_) -> tuple[str, Evidence]:
    rows = evidence_quant.dtype_facts()
    by = {r["dtype"]: r for r in rows}
    weights = next(k for k in rows[0] if k.endswith("weights (GiB)"))
    truth = (f"Both halves hold. bf16 keeps fp32's range (largest {by['bf16']['largest']:.2e}, fp16 stops at "
             f"{by['fp16']['largest']:g}) with fewer mantissa bits ({by['bf16']['mantissa bits']} vs "
             f"{by['fp32']['mantissa bits']}), which is why it trains without loss scaling on GPUs that support it. "
             f"fp32 doubles the bytes: {weights} {by['fp32'][weights]:.1f} vs {by['bf16'][weights]:.1f}.")
    return truth, Evidence(metrics={f"{weights}, fp32": f"{by['fp32'][weights]:.1f}",
                                    f"{weights}, bf16": f"{by['bf16'][weights]:.1f}",
                                    "bf16 eps": f"{by['bf16']['eps (gap after 1)']:g}"},
                           table=rows, note="torch.finfo; lc.memory.estimate_memory")


# --- seed 003 ---------------------------------------------------------------------------------------------
def row19(**_) -> tuple[str, Evidence]:
    book = count_lora_parameters("distilgpt2", LoraConfig(r=8, target_modules=["c_attn"])).rows[0]
    n = anatomy.compare_notations(book.in_features, book.out_features, 8, 16)
    truth = (f"Training only the factors is right, but the formula is not PEFT's. There A is {n['A_shape']} and B is "
             f"{n['B_shape']}: ΔW = (α/r)·B·A, with B zero at the start. Taken literally, A @ B @ x "
             + ("fails on c_attn's shapes" if n["literal_error"] else "happens to run here")
             + f"; with the letters swapped it runs but misses the scale: the real branch is "
             f"{n['branch_over_unscaled']:.4f}× B @ A @ x (α/r = {n['scaling']:g}).")
    return truth, Evidence(metrics={"A": str(n["A_shape"]), "B": str(n["B_shape"]), "α/r": f"{n['scaling']:g}",
                                    "branch / (B@A@x)": f"{n['branch_over_unscaled']:.4f}"},
                           code=n["literal_error"] or "", note="lc.anatomy.compare_notations on c_attn's shapes")


def row20(**_) -> tuple[str, Evidence]:
    res = anatomy.regex_vs_all_linear(build_on_meta("SmolLM2-135M"))
    seven = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    book = count_lora_parameters("SmolLM2-135M", LoraConfig(r=8, target_modules=[*seven, "lm_head"]))
    head = next(r for r in book.rows if r.module.endswith("lm_head"))
    tied = "tied to" if res["output_tied_to_embedding"] else "separate from"
    truth = (f"It works, but PEFT's all-linear leaves the output layer out on purpose "
             f"({res['excluded_output_layer']}). On SmolLM2-135M lm_head is {tied} the token embedding and "
             f"maps {head.in_features}→{head.out_features}: its one adapter costs "
             f"{head.lora_per_module:,}, {_pct(head.lora_params / book.lora_params, 0)} of all the LoRA parameters "
             f"with every projection targeted. To train the output layer in full (after adding tokens, say), "
             f"PEFT's modules_to_save is the usual tool.")
    return truth, Evidence(metrics={"lm_head adapter": f"{head.lora_per_module:,}",
                                    "share of LoRA params": _pct(head.lora_params / book.lora_params, 0),
                                    "tied to embedding": "yes" if res["output_tied_to_embedding"] else "no"},
                           table=book.records(), note="lc.count_lora_parameters; lc.anatomy.regex_vs_all_linear")


# --- seed 004 ------------------------------------------------------------------------------------------------
@functools.lru_cache(maxsize=4)
def _rank_report(weight: torch.Tensor | None, k: int) -> dict:
    """rank_k_report of `weight` (or the seeded normal control), cached: a full SVD takes a while."""
    W = weight.detach().float() if weight is not None else quant.normal_weights((256, 256))
    return rank_k_report(W, k) | {"shape": tuple(W.shape)}


def row21(weight: torch.Tensor | None = None, **_) -> tuple[str, Evidence]:
    run = experiments.toy_run(8, 16)
    rep = _rank_report(weight, 8)
    fit = float((run["delta"] - run["target"]).norm() / run["target"].norm())
    truth = (f"The product approximates the update ΔW, not W. On the toy task a trained rank-8 B·A matches the "
             f"target update to a relative error of {_pct(fit, 1)}, while the frozen W is bit-for-bit unchanged "
             f"({run['base_unchanged']}). W itself is not low rank: its best rank-8 approximation keeps "
             f"{_pct(rep['energy'], 1)} of its energy ({rep['shape']} "
             f"{'real weight' if weight is not None else 'N(0, 0.02²) matrix'}).")
    return truth, Evidence(metrics={"‖BA − ΔW*‖/‖ΔW*‖": _pct(fit, 1), "W unchanged": str(run["base_unchanged"]),
                                    "energy of W in rank 8": _pct(rep["energy"], 1)},
                           note="lc.experiments.toy_run; lc.rank_k_report")


def row22(**_) -> tuple[str, Evidence]:
    info = anatomy.added_not_selected("distilgpt2", LoraConfig(r=8, target_modules=["c_attn"]))
    truth = (f"LoRA selects nothing: all {info['base_total']:,} old parameters stay frozen "
             f"({info['base_trainable']} of them train), and the {info['lora']:,} trainable ones are new lora_A and "
             f"lora_B entries.")
    return truth, Evidence(metrics={"old parameters": f"{info['base_total']:,}",
                                    "old ones training": f"{info['base_trainable']:,}",
                                    "new LoRA parameters": f"{info['lora']:,}"},
                           note="lc.anatomy.added_not_selected on the meta device")


def row23(runs_dir: str | Path | None = None, **_) -> tuple[str, Evidence]:
    full = experiments.full_update_spectrum()
    sweep = experiments.rank_sweep_toy()
    spectra = experiments.trained_adapter_spectra(runs_dir)
    sv = full["singular_values"]
    left = ", ".join(f"r={r}: {_pct(v, 0)}" for r, v in sweep["fraction_left"].items())
    truth = (f"Toy task (its target update has rank {full['k']} by construction): an unconstrained "
             f"{full['d']}×{full['d']} update trained with Adam puts {_pct(full['energy_top_k'], 1)} of its energy "
             f"in its top {full['k']} singular values, and small ranks already cut the loss ({left} of it left).")
    if spectra:
        truth += (" Real adapters trained here (runs/): the median share of a ΔW's energy in its first singular "
                  "value is " + ", ".join(f"{s['run']}: {_pct(s['median energy in σ_1'], 0)}" for s in spectra) + ".")
    series = {f"full ΔW, toy ({full['d']}×{full['d']})": (sv / sv[0])[:16]}
    series |= {f"trained adapter {s['run']} (r={s['r']}, mean)": s["mean σ_i/σ_1"] for s in spectra}
    return truth, Evidence(
        metrics={f"energy in top {full['k']} (full ΔW)": _pct(full["energy_top_k"], 1),
                 **{f"loss left, r={r}": _pct(v, 0) for r, v in sweep["fraction_left"].items()}},
        table=[{k: v for k, v in s.items() if k != "mean σ_i/σ_1"} for s in spectra],
        figure={"kind": "spectra", "series": series, "title": "σ_i / σ_1: a few directions carry the update"},
        note="lc.experiments: full_update_spectrum, rank_sweep_toy, trained_adapter_spectra (runs/)")
