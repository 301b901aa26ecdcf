"""Rows 26, 27, 28, 31 and 32 of CLAIMS-2.md: dropout against DropConnect, intrinsic dimension's space, LoRA
against adapters, what dividing by r does, and what NF4 stands for, each answered by measuring now.

Each function returns (the truth in words, with numbers filled in, and its Evidence); table.py says which
claim each one answers. Rows 26, 28 and 32 reuse the measurements of rows 3, 7 and 15.
"""

from __future__ import annotations

import functools
import math

import torch

from ...config import LoraConfig
from ...counting import count_lora_parameters
from ...layers import make_lora_layer
from .. import anatomy, evidence, evidence_quant, scaling_runs
from ..evidence import Evidence, percent
from ..seeded import generator, linear
from .quoted import PAPER_GPT2_MEDIUM, PAPER_GPT2_MEDIUM_LORA, PAPER_GPT2_MEDIUM_SOURCE, SEED_000

RANKS = (1, 2, 4, 8, 16, 32, 64)   # the ranks row 31's curves run over
EARLY_STEPS = 5                    # row 31: toy steps after which the update's size is read


def dropout_is_not_dropconnect() -> tuple[str, Evidence]:
    """Row 26. Row 3's hook trace read as the DropConnect question: which entries of A and B are ever zeroed."""
    on = anatomy.trace_dropout(p=0.1, train=True)
    truth = (f"DropConnect would zero about {percent(on['p'], 0)} of the entries of A and B at each step. PEFT's "
             f"lora_dropout does not: hooks on a LoRA layer in training mode find {percent(on['A_zero_fraction'], 1)} "
             f"zeros in A and {percent(on['B_zero_fraction'], 1)} in B (A or B changed by the forward: "
             f"{'yes' if on['A_changed'] or on['B_changed'] else 'no'}), and "
             f"{percent(on['branch_input_zero_fraction'], 1)} zeros in the copy of x that enters lora_A, survivors "
             f"scaled by {on['kept_scale']:.4f} = 1/(1−p). It is dropout on the branch's input, as row 3 shows.")
    return truth, Evidence(
        metrics={"zeros in A": percent(on["A_zero_fraction"], 1), "zeros in B": percent(on["B_zero_fraction"], 1),
                 "zeros in dropout(x) → A": percent(on["branch_input_zero_fraction"], 1),
                 "DropConnect would zero": f"~{percent(on['p'], 0)} of A and B"},
        figure={"kind": "dropout", "trace": on}, note="teach.anatomy.trace_dropout (forward pre-hooks), as row 3")


@functools.lru_cache(maxsize=1)
def data_keeps_its_dimension(d: int = 256, r: int = 8, tokens: int = 512, seed: int = 0) -> dict:
    """Ranks through one d×d LoRA layer with a live adapter: the data x, the layer's output, ΔW and ΔW·x.

    If a low intrinsic dimension meant the data became lower-dimensional, the output would lose rank. It does
    not: only the *change* ΔW·x lies in an r-dimensional subspace, and ΔW's entries are set by r·2d numbers.
    """
    gen = generator(seed)
    layer = make_lora_layer(linear(d, d, gen), LoraConfig(r=r, init_lora_weights=False), "layer", generator=gen)
    x = torch.randn(tokens, d, generator=gen)                   # (tokens, d)
    with torch.no_grad():
        delta = layer.delta_weight()                            # (d, d), rank ≤ r
        out, change = layer(x), x @ delta.T                     # (tokens, d) each
    rank = lambda t: int(torch.linalg.matrix_rank(t))  # float32 tolerance: roundoff is not rank
    return {"d": d, "r": r, "tokens": tokens, "rank x": rank(x), "rank output": rank(out),
            "rank ΔW": rank(delta), "rank ΔW·x": rank(change), "ΔW entries": delta.numel(),
            "trainable numbers": layer.adapter().A.numel() + layer.adapter().B.numel()}


def dimension_of_parameters_not_data() -> tuple[str, Evidence]:
    """Row 27. Intrinsic dimension counts free directions of the update, not dimensions of the data."""
    ranks = data_keeps_its_dimension()
    book = count_lora_parameters("distilgpt2", LoraConfig(r=SEED_000["r"], target_modules=SEED_000["targets"]))
    truth = (f"Intrinsic dimension is a property of the fine-tuning's parameter space: how many free directions the "
             f"update needs (Aghajanyan et al. searched a random subspace of the weights; row 23). LoRA restricts the "
             f"update the same way: on distilgpt2 with c_attn at r={SEED_000['r']}, {book.lora_params:,} free numbers "
             f"out of {book.base_total:,} weights. The data is not compressed. Through a {ranks['d']}×{ranks['d']} "
             f"LoRA layer with a live adapter, {ranks['tokens']} random inputs have rank {ranks['rank x']} and the "
             f"outputs rank {ranks['rank output']}: only the change ΔW·x has rank {ranks['rank ΔW·x']} (ΔW: rank "
             f"{ranks['rank ΔW']}, {ranks['ΔW entries']:,} entries set by {ranks['trainable numbers']:,} numbers).")
    return truth, Evidence(
        metrics={"rank of the inputs": str(ranks["rank x"]), "rank of the outputs": str(ranks["rank output"]),
                 "rank of ΔW·x": str(ranks["rank ΔW·x"]),
                 "free update numbers / weights": percent(book.lora_params / book.base_total, 3)},
        table=[{"tensor": k.removeprefix("rank "), "rank": v} for k, v in ranks.items() if k.startswith("rank")],
        note="torch.linalg.matrix_rank through one lora_core LoraLinear (init_lora_weights=False: B ≠ 0); "
             "lora_core.count_lora_parameters")


def lora_against_adapters() -> tuple[str, Evidence]:
    """Row 28. LoRA's count on GPT-2 Medium in the paper's setting (r=4, W_q and W_v), the paper's quoted Adapter
    and LoRA counts, and row 7's merged latency: LoRA's edge is no extra inference cost once merged."""
    r = PAPER_GPT2_MEDIUM_LORA["r"]
    book = count_lora_parameters("gpt2-medium", LoraConfig(r=r, lora_alpha=32, target_modules=["c_attn"]))
    row = book.rows[0]
    d = row.out_features // 3                                   # c_attn holds q, k and v side by side
    q_and_v = row.count * 2 * r * (row.in_features + d)         # loralib's MergedLinear, enable_lora=[q, -, v]
    merged = evidence.merged_vs_unmerged()
    fp32_mb = 4 * q_and_v / 1e6
    truth = (f"It depends on the configuration. The LoRA paper's own GPT-2 Medium table ("
             f"{PAPER_GPT2_MEDIUM_SOURCE}) gives Adapter (L) {PAPER_GPT2_MEDIUM['Adapter (L)']} and LoRA "
             f"{PAPER_GPT2_MEDIUM['LoRA']} trainable parameters: about the same. Counted now for the paper's setting, "
             f"r={r} on W_q and W_v in all {row.count} blocks: {row.count}·2·{r}·({row.in_features}+{d}) = "
             f"{q_and_v:,} ({fp32_mb:.2f} MB in fp32; the released checkpoint, "
             f"{PAPER_GPT2_MEDIUM_LORA['checkpoint']}, fits that rather than the table's figure). In PEFT, which "
             f"cannot split the fused c_attn, r={r} on c_attn costs {book.lora_params:,}. LoRA's real edge is "
             f"latency: merged, it leaves {merged['lora_layers_left']} extra layers and {merged['params_merged']:,} "
             f"parameters, the base's {merged['params_base']:,}, with the same logits (max |Δ| "
             f"{merged['max_abs_logit_diff']:.1e}; row 7 times it), while adapters stay in every forward as extra "
             f"sequential layers.")
    return truth, Evidence(
        metrics={"LoRA r=4 on W_q, W_v (counted)": f"{q_and_v:,}",
                 "Adapter (L), paper (quoted)": PAPER_GPT2_MEDIUM["Adapter (L)"],
                 "LoRA, paper (quoted)": PAPER_GPT2_MEDIUM["LoRA"],
                 "LoRA layers left after merge": str(merged["lora_layers_left"])},
        table=[{"method": k, "trainable (paper, quoted)": v} for k, v in PAPER_GPT2_MEDIUM.items()]
        + [{"method": f"LoRA r={r}, W_q and W_v, counted now", "trainable (counted)": q_and_v},
           {"method": f"LoRA r={r}, c_attn (PEFT), counted now", "trainable (counted)": book.lora_params}],
        note=f"lora_core.count_lora_parameters('gpt2-medium'); teach.evidence.merged_vs_unmerged (row 7); the paper's "
             f"figures are {PAPER_GPT2_MEDIUM_SOURCE}")


@functools.lru_cache(maxsize=1)
def early_update_size(alpha: float = 16, lr: float = 1e-3, steps: int = EARLY_STEPS) -> dict:
    """‖ΔW‖_F after `steps` Adam steps of the toy task at every rank in RANKS, under α/r and α/√r."""
    runs = scaling_runs.rule_runs(list(RANKS), alpha, lr, steps)
    return {rule: [runs[(r, rs)]["norm"][-1] for r in RANKS] for rs, rule in scaling_runs.RULES.items()}


def dividing_by_r_shrinks() -> tuple[str, Evidence]:
    """Row 31. α/r against α/√r: the scale at r=8 and r=64, both scale curves, and the update's size early on."""
    alpha = 16
    rules = scaling_runs.scale_rules(alpha, list(RANKS), 8)
    at = {r: (LoraConfig(r=r, lora_alpha=alpha).scaling, LoraConfig(r=r, lora_alpha=alpha, use_rslora=True).scaling)
          for r in (8, 64)}
    size = early_update_size(alpha)
    plain, rs = size["α/r"], size["α/√r"]
    i8, i64 = RANKS.index(8), RANKS.index(64)
    truth = (f"Dividing by r shrinks the update as r grows; it does not normalize it. At α = {alpha}, r = 8 gets a "
             f"scale of {at[8][0]:g} and r = 64 gets {at[64][0]:g}: {at[64][0] / at[8][0]:g} of it. B·A grows with r "
             f"(more directions add up), but not by 8×: on the toy task, after {EARLY_STEPS} Adam steps, ‖ΔW‖ under "
             f"α/r is {plain[i8]:.3g} at r = 8 and {plain[i64]:.3g} at r = 64 (×{plain[i64] / plain[i8]:.3g}), so the "
             f"larger rank starts slower. Under rsLoRA's α/√r ({at[8][1]:.3g} and {at[64][1]:.3g}) it goes from "
             f"{rs[i8]:.3g} to {rs[i64]:.3g} (×{rs[i64] / rs[i8]:.3g}): the extra rank is used, not scaled away. That "
             f"is why rsLoRA exists: with α/r, learning slows and stalls as r grows.")
    return truth, Evidence(
        metrics={"α/r at r=8": f"{at[8][0]:g}", "α/r at r=64": f"{at[64][0]:g}",
                 "r=64 / r=8 (α/r)": f"{at[64][0] / at[8][0]:g}",
                 "r=64 / r=8 (α/√r)": f"{at[64][1] / at[8][1]:.3g}",
                 f"‖ΔW‖ after {EARLY_STEPS} steps, r=64 / r=8, α/r": f"{plain[i64] / plain[i8]:.3g}",
                 f"‖ΔW‖ after {EARLY_STEPS} steps, r=64 / r=8, α/√r": f"{rs[i64] / rs[i8]:.3g}"},
        table=[{"r": r, "α/r": a, "α/√r": b, f"‖ΔW‖ after {EARLY_STEPS} steps, α/r": p,
                f"‖ΔW‖ after {EARLY_STEPS} steps, α/√r": q}
               for r, a, b, p, q in zip(RANKS, *rules["curves"].values(), plain, rs, strict=True)],
        figure={"kind": "by_rank", "ranks": list(RANKS), "y_title": "scale / ‖ΔW‖_F",
                "title": f"Scale and early update size against r (α = {alpha})",
                "series": {f"scale, {k}": v for k, v in rules["curves"].items()}
                | {f"‖ΔW‖ after {EARLY_STEPS} steps, {k}": v for k, v in size.items()},
                "dashed": [f"‖ΔW‖ after {EARLY_STEPS} steps, {k}" for k in size]},
        note="LoraConfig.scaling; teach.scaling_runs.scale_rules and rule_runs (teach.toy, Adam)")


def nf4_is_normal_float() -> tuple[str, Evidence]:
    """Row 32. NF4's name read off its codebook: 4 bits (16 levels) at equal-probability quantiles of N(0, 1)."""
    c = evidence_quant.codebook_comparison()
    levels = c["books"]["NF4"]
    steps = c["nf4_probability_steps"]
    bits = math.log2(len(levels))
    truth = (f"NF4 is 4-bit NormalFloat (QLoRA, arXiv 2305.14314). The codebook has {len(levels)} levels = "
             f"{bits:g} bits, and its positive levels sit at probabilities of the normal distribution "
             f"{steps[0]:.4f} apart (spread {max(steps) - min(steps):.1e}): quantiles of N(0, 1), scaled to [−1, 1]. "
             f"Nothing is normalized to a 'normalization float'; each block of {c['block_size']} weights is scaled "
             f"by its absmax (row 15).")
    return truth, Evidence(
        metrics={"levels": str(len(levels)), "bits": f"{bits:g}", "probability step": f"{steps[0]:.4f}",
                 "spread of the steps": f"{max(steps) - min(steps):.1e}"},
        figure={"kind": "codebook", "books": c["books"], "density": c["density"]},
        note="quant.codebook via teach.evidence_quant.codebook_comparison (as row 15)")
