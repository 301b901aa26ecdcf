"""Claims about what libraries, number formats and the seeds' own code say, checked by running them.

Each function returns (the truth in words, with numbers filled in, and its Evidence); table.py says
which claim each one answers. Rows 4, 9, 13, 15, 17 and 18 of CLAIMS.md.
"""

from __future__ import annotations

import torch

from .. import evidence, evidence_quant
from ..evidence import Evidence


def task_type_wrappers() -> tuple[str, Evidence]:
    """Row 4. task_type on a causal LM (wrapper class, same logits), on a sequence classifier (the head trains
    and is saved only with SEQ_CLS), and a mismatched one (SEQ_2_SEQ_LM on GPT-2) that fails."""
    causal, head = evidence.task_type_check(), evidence.classification_head_check()
    counts = set(causal["lora_core_trainable"].values())
    failed = [r for r in causal["rows"] if not r["forward works"]]
    built = [r for r in causal["rows"] if r["forward works"]]
    without, with_cls = head["rows"]
    truth = (f"task_type picks the PeftModel wrapper class, and for SEQ_CLS and TOKEN_CLS it also adds the "
             f"classification head (classifier, score) to modules_to_save. On a causal LM it changes nothing about "
             f"the adapter: lora_core's ledger gives {'the same' if len(counts) == 1 else 'different'} count for "
             f"every task_type ({', '.join(f'{n:,}' for n in sorted(counts))}).")
    if causal["available"]:
        same = max(r["max |Δlogits| vs task_type=None"] for r in built)
        truth += (f" On a tiny GPT-2 with a live adapter, the {len(built)} wrappers PEFT builds give task_type=None's "
                  f"logits (max |Δ| = {same:g}): no task_type trains fine there.")
    truth += (f" On a classification model it matters. GPT2ForSequenceClassification with LoRA r={head['r']} on "
              f"c_attn trains {head['without']:,} parameters without task_type and {head['with']:,} with SEQ_CLS: "
              f"the fresh score head ({head['head_params']:,} parameters) trains only with SEQ_CLS, and only then is "
              f"it in the adapter file (head saved without it: "
              f"{'yes' if without['head in adapter file (lora_core)'] else 'no'}; with it: "
              f"{'yes' if with_cls['head in adapter file (lora_core)'] else 'no'}). Without it the head keeps its "
              f"random init: training runs, no error, and the classifier stays poor.")
    if head["available"]:
        truth += (f" PEFT agrees: {without['PEFT trainable']:,} against {with_cls['PEFT trainable']:,}, "
                  f"{with_cls['PEFT class']} saving base_model.model.score.weight.")
    if failed:
        truth += (f" A mismatched task_type can also fail outright: {', '.join(r['task_type'] for r in failed)} on "
                  f"GPT-2 raises when the wrapper is built ({failed[0]['PEFT returns'].split(':')[0]}).")
    table = [{"model": "tiny GPT2LMHeadModel, r=4", "task_type": r["task_type"], "PEFT returns": r["PEFT returns"],
              "lora_core trainable": causal["lora_core_trainable"][_task(r["task_type"])],
              "max |Δlogits| vs None": r["max |Δlogits| vs task_type=None"]} for r in causal["rows"]]
    table += [{"model": f"tiny GPT2ForSequenceClassification, r={head['r']}", "task_type": r["task_type"],
               "PEFT returns": r.get("PEFT class", "PEFT not installed"),
               "lora_core trainable": r["lora_core trainable"], "PEFT trainable": r.get("PEFT trainable"),
               "head trains": r["head trainable (lora_core)"],
               "head in adapter file": r["head in adapter file (lora_core)"]} for r in head["rows"]]
    metrics = {"classifier, no task_type": f"{head['without']:,}", "classifier, SEQ_CLS": f"{head['with']:,}",
               "head trains without task_type": "yes" if without["head trainable (lora_core)"] else "no",
               "causal LM, every task_type": f"{min(counts):,}"}
    if failed:
        metrics[f"{failed[0]['task_type']} on GPT-2"] = failed[0]["PEFT returns"].split(":")[0]
    return truth, Evidence(metrics=metrics, table=table,
                           code="\n".join(head["adapter_file_keys"][("'SEQ_CLS'", "lora_core")]),
                           note="teach.evidence.task_type_check and classification_head_check: lora_core's inject, "
                                "ledger and save_adapter, and peft.get_peft_model / save_pretrained on tiny seeded "
                                "GPT-2s (the code box lists the adapter file's keys with SEQ_CLS)")


def _task(shown: str) -> str | None:
    """The task_type from its repr in a table row ("None", "'CAUSAL_LM'")."""
    return None if shown == "None" else shown.strip("'")


def peft_default_config() -> tuple[str, Evidence]:
    """Row 9. The defaults of a bare LoraConfig(), read live from PEFT (and lora_core)."""
    d = evidence.peft_defaults()
    table = [{"library": k, **v} for k, v in d.items()]
    theirs = d.get("peft", d["lora_core"])
    truth = (f"A bare LoraConfig() has r = {theirs['r']}, lora_alpha = {theirs['lora_alpha']}, lora_dropout = "
             f"{theirs['lora_dropout']}: scale α/r = {theirs['scaling']:g}." +
             (" Read from peft.LoraConfig() and from lora_core's LoraConfig()." if "peft" in d else ""))
    return truth, Evidence(metrics={"r": str(theirs["r"]), "lora_alpha": str(theirs["lora_alpha"]),
                                    "lora_dropout": str(theirs["lora_dropout"]), "scale": f"{theirs['scaling']:g}"},
                           table=table, note="LoraConfig() defaults, read live")


def seed_001_config_syntax() -> tuple[str, Evidence]:
    """Row 13. Seed 001's LoraConfig call, rebuilt and handed to ast.parse."""
    s = evidence.syntax_check()
    err = s["error"]
    truth = (f"ast.parse rejects it: SyntaxError '{err['message']}' at line {err['line']} ({err['text'].strip()}): "
             f"the comma after bias is missing. With it restored the call parses, with keywords "
             f"{', '.join(s['fixed_keywords'])}.")
    return truth, Evidence(metrics={"ast.parse": "SyntaxError", "line": str(err["line"])}, code=s["broken"],
                           note="teach.evidence.syntax_check: the call rebuilt from the seed's arguments")


def nf4_quantiles_not_log(weight: torch.Tensor | None = None) -> tuple[str, Evidence]:
    """Row 15. NF4's levels against a log grid: probability steps, level ratios, errors on `weight` too."""
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
        note="quant.codebook: NF4 built from Φ⁻¹, blockwise absmax, double quantization")


def home_of_sfttrainer() -> tuple[str, Evidence]:
    """Row 17. Which installed library exports SFTTrainer, checked by import."""
    lib = evidence.library_of("SFTTrainer")
    found = lib["libraries"]
    truth = (f"SFTTrainer is TRL's class, built on transformers' Trainer; PEFT supplies the adapter that TRL can take "
             f"as peft_config. Checked by import: peft exports SFTTrainer: {found['peft']['exports']}; names in peft "
             f"containing 'Trainer': {lib['peft_names_with_Trainer'] or 'none'}; transformers.Trainer exists: "
             f"{lib['transformers_Trainer']}; TRL installed here: {found['trl']['installed']}.")
    return truth, Evidence(metrics={"peft has SFTTrainer": "yes" if found["peft"]["exports"] else "no",
                                    "TRL installed": "yes" if found["trl"]["installed"] else "no"},
                           table=[{"library": k, **v} for k, v in found.items()], note="importlib, hasattr")


def bf16_against_fp32() -> tuple[str, Evidence]:
    """Row 18. bf16, fp16 and fp32: range, precision (torch.finfo) and the weight memory of each."""
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
                           table=rows, note="torch.finfo; quant.memory.estimate_memory")
