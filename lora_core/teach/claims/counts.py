"""Claims about shapes and counts, answered from the ledger and meta-device models (no weights).

Each function returns (the truth in words, with numbers filled in, and its Evidence); table.py says
which claim each one answers. Rows 1, 2, 11, 12, 16, 19, 20 and 22 of CLAIMS.md.
"""

from __future__ import annotations

from ...config import LoraConfig
from ...counting import count_lora_parameters
from ...models.sources import build_on_meta
from ...quant import memory
from ...targets import SUPPORTED_TYPES
from .. import anatomy, evidence_quant
from ..evidence import Evidence, percent
from .quoted import LORALIB_LAYERS, SEED_000


def count_c_attn_r8() -> tuple[str, Evidence]:
    """Row 1. Seed 000's count set against the ledger: c_attn in every block, and PEFT's denominator."""
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
        table=book.records(), code=book.peft_line, note="lora_core.count_lora_parameters on the meta device")


def square_matrix_pair() -> tuple[str, Evidence]:
    """Row 2. The square-matrix arithmetic, on attn.c_proj (square) and c_attn (not)."""
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
        note="ledger rows of lora_core.count_lora_parameters")


def regex_against_all_linear() -> tuple[str, Evidence]:
    """Row 11. Seed 001's regex over print(model) against what 'all-linear' wraps."""
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
                           table=table, code=anatomy.SEED_REGEX,
                           note="teach.anatomy.regex_vs_all_linear on meta models")


def loralib_layer_classes() -> tuple[str, Evidence]:
    """Row 12. loralib's layer classes (cited from its source) against the three the seed names."""
    ours = sorted(t.__name__ for t in SUPPORTED_TYPES)
    truth = (f"loralib's layers.py defines {', '.join(LORALIB_LAYERS)}: MergedLinear (one fused projection such as "
             f"GPT-2's qkv) and Conv1d/Conv3d go beyond the three named. For comparison, lora_core wraps "
             f"{', '.join(ours)}.")
    return truth, Evidence(metrics={"loralib layer classes": str(len(LORALIB_LAYERS))},
                           table=[{"loralib class": k, "wraps": v} for k, v in LORALIB_LAYERS.items()],
                           note="read from microsoft/LoRA loralib/layers.py: loralib is not installed here, "
                                "so this row cites its source instead of introspecting it")


def qlora_lora_in_every_layer() -> tuple[str, Evidence]:
    """Row 16. Seed 002's QLoRA setup: how many layers hold LoRA, and where the memory goes."""
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
        figure={"kind": "memory", "estimates": est}, note="quant.memory.compare_methods(SEED_002_QLORA)")


def ba_notation_against_peft() -> tuple[str, Evidence]:
    """Row 19. Seed 003's W(x) + A @ B @ x set against PEFT's ΔW = (α/r)·B·A on c_attn's shapes."""
    book = count_lora_parameters("distilgpt2", LoraConfig(r=8, target_modules=["c_attn"])).rows[0]
    n = anatomy.compare_notations(book.in_features, book.out_features, 8, 16)
    truth = (f"Training only the factors is right, but the formula is not PEFT's. There A is {n['A_shape']} and B is "
             f"{n['B_shape']}: ΔW = (α/r)·B·A, with B zero at the start. Taken literally, A @ B @ x "
             + ("fails on c_attn's shapes" if n["literal_error"] else "happens to run here")
             + f"; with the letters swapped it runs but misses the scale: the real branch is "
             f"{n['branch_over_unscaled']:.4f}× B @ A @ x (α/r = {n['scaling']:g}).")
    return truth, Evidence(metrics={"A": str(n["A_shape"]), "B": str(n["B_shape"]), "α/r": f"{n['scaling']:g}",
                                    "branch / (B@A@x)": f"{n['branch_over_unscaled']:.4f}"},
                           code=n["literal_error"] or "", note="teach.anatomy.compare_notations on c_attn's shapes")


def lm_head_as_a_target() -> tuple[str, Evidence]:
    """Row 20. lm_head as a LoRA target on SmolLM2: tied or not, and its share of the adapter."""
    res = anatomy.regex_vs_all_linear(build_on_meta("SmolLM2-135M"))
    seven = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    book = count_lora_parameters("SmolLM2-135M", LoraConfig(r=8, target_modules=[*seven, "lm_head"]))
    head = next(r for r in book.rows if r.module.endswith("lm_head"))
    tied = "tied to" if res["output_tied_to_embedding"] else "separate from"
    truth = (f"It works, but PEFT's all-linear leaves the output layer out on purpose "
             f"({res['excluded_output_layer']}). On SmolLM2-135M lm_head is {tied} the token embedding and "
             f"maps {head.in_features}→{head.out_features}: its one adapter costs "
             f"{head.lora_per_module:,}, {percent(head.lora_params / book.lora_params, 0)} of all the LoRA parameters "
             f"with every projection targeted. To train the output layer in full (after adding tokens, say), "
             f"PEFT's modules_to_save is the usual tool.")
    return truth, Evidence(metrics={"lm_head adapter": f"{head.lora_per_module:,}",
                                    "share of LoRA params": percent(head.lora_params / book.lora_params, 0),
                                    "tied to embedding": "yes" if res["output_tied_to_embedding"] else "no"},
                           table=book.records(),
                           note="lora_core.count_lora_parameters; teach.anatomy.regex_vs_all_linear")


def lora_adds_parameters() -> tuple[str, Evidence]:
    """Row 22. Old parameters against new ones after injection: LoRA adds, it does not select."""
    info = anatomy.added_not_selected("distilgpt2", LoraConfig(r=8, target_modules=["c_attn"]))
    truth = (f"LoRA selects nothing: all {info['base_total']:,} old parameters stay frozen "
             f"({info['base_trainable']} of them train), and the {info['lora']:,} trainable ones are new lora_A and "
             f"lora_B entries.")
    return truth, Evidence(metrics={"old parameters": f"{info['base_total']:,}",
                                    "old ones training": f"{info['base_trainable']:,}",
                                    "new LoRA parameters": f"{info['lora']:,}"},
                           note="teach.anatomy.added_not_selected on the meta device")
