"""The conceptual half of the interview bank: a question, a model answer with live numbers, evidence.

Each Concept's answer is written for LoRA Lab and fills its numbers in from lora_core when asked
(`Concept.question()`), and its `evidence()` returns the measurement behind it: a hook trace, a
ledger, a merge check, a toy run. `key_ideas` lists what a spoken answer must contain; each idea
is accepted if any of its words appears (a lenient check, meant for self-study, not for grading).
The one number not computed here is the reported GPU step-time measurement, labelled as external.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from ...config import LoraConfig
from ...models.sources import build_on_meta
from ...quant import memory
from .. import anatomy, evidence, evidence_quant, training_runs
from ..evidence import Evidence, percent
from .question import Question, by_kind


@dataclass(frozen=True)
class Concept:
    """One conceptual question: its kind and topic, the question, the key ideas a spoken answer must
    contain, and two functions: the model answer (numbers filled in live) and the evidence behind it."""

    kind: str
    topic: str
    text: str
    key_ideas: tuple[tuple[str, tuple[str, ...]], ...]
    answer: Callable[[], str]
    evidence: Callable[[], Evidence]

    def question(self) -> Question:
        return Question(self.kind, self.topic, self.text, answer=self.answer(), key_ideas=self.key_ideas)


# --- init, scaling, dropout -------------------------------------------------------------------------------
def _b_zero() -> str:
    init, grads = evidence.init_stats()["rows"][0], evidence.zero_init_gradients()
    return (f"So that training starts exactly at the pretrained model: with B = 0, ΔW = B·A = 0 (measured "
            f"‖ΔW‖ = {init['‖ΔW‖']:g}, max |output − base| = {init['max |output − base|']:g}). Only one factor can "
            f"be zero. At step 0 ∂L/∂A is {grads[0]['‖∂L/∂A‖']:g} (it is multiplied by B) but ∂L/∂B is "
            f"{grads[0]['‖∂L/∂B‖']:.3g}, so B moves first and A follows. Zero both and both gradients are "
            f"{grads[1]['‖∂L/∂A‖']:g}: nothing ever trains.")


def _alpha() -> str:
    p = training_runs.alpha_lr_pair()
    d = LoraConfig()
    return (f"α sets the scale on the update: ΔW = (α/r)·B·A. It adds no parameters. PEFT's defaults (r = {d.r}, "
            f"α = {d.lora_alpha:g}) give scale {d.scaling:g}. Under Adam the step on A and B does not depend on the "
            f"gradient's size, so a larger α mainly makes ΔW move faster, like a larger learning rate: on the toy "
            f"task (α, lr) and (2α, lr/2) stay within {percent(p['half_lr_max_rel_gap_early'])} over the first "
            f"{p['early_steps']} steps. So fix α (often at r or 2r) and tune the learning rate.")


def _scales_table() -> Evidence:
    rows = [{"r": r, "α/r (LoRA)": LoraConfig(r=r, lora_alpha=16).scaling,
             "α/√r (rsLoRA)": LoraConfig(r=r, lora_alpha=16, use_rslora=True).scaling} for r in (4, 8, 16, 64, 256)]
    p = training_runs.alpha_lr_pair()
    return Evidence(table=rows, figure={"kind": "curves", "series": p["losses"], "log_y": True, "dashed": [],
                                        "title": "(α, lr) against (2α, lr/2) on the toy task",
                                        "y_title": "expected loss"}, note="LoraConfig.scaling at α = 16; teach.toy")


def _rslora() -> str:
    plain, rs = LoraConfig(r=256, lora_alpha=16), LoraConfig(r=256, lora_alpha=16, use_rslora=True)
    return (f"Rank-stabilised LoRA (Kalajdzievski 2023) scales B·A by α/√r instead of α/r. With α/r the update "
            f"shrinks as r grows, so a large rank learns slowly and its extra capacity is wasted; α/√r keeps the "
            f"update's size stable across ranks. At r = 256, α = 16: α/r = {plain.scaling:g}, α/√r = {rs.scaling:g}. "
            f"In PEFT it is use_rslora=True.")


def _dropout() -> str:
    t = anatomy.trace_dropout(p=0.1)
    return (f"On the input of the LoRA branch, and only in training: h = W x + (α/r)·B·A·dropout(x). Hooks show "
            f"{percent(t['branch_input_zero_fraction'])} of the branch's input zeroed at p = {t['p']:g}, "
            f"{percent(t['base_input_zero_fraction'])} of what the frozen W sees, "
            f"{percent(t['A_zero_fraction'])} of A, and survivors scaled by 1/(1−p) = {t['kept_scale']:.4f}. "
            "In eval mode nothing is dropped.")


def _trace_evidence() -> Evidence:
    trace = anatomy.trace_dropout(p=0.1)
    return Evidence(figure={"kind": "dropout", "trace": trace}, note="teach.anatomy.trace_dropout")


def _bias() -> str:
    rows = {r["bias"]: r for r in anatomy.bias_mode_ledgers("distilgpt2", LoraConfig(r=8, target_modules=["c_attn"]))}
    return (f"Which biases train besides A and B. 'none' trains none; 'lora_only' trains the biases of the wrapped "
            f"layers; 'all' trains every bias in the model, LayerNorm's included. On distilgpt2 with c_attn at "
            f"r = 8: +{rows['lora_only']['extra trainable']:,} and +{rows['all']['extra trainable']:,} parameters. "
            f"With a bias trained, disabling the adapter no longer gives back the base model exactly.")


# --- merging, serving, architecture -------------------------------------------------------------------------
def _merged() -> str:
    m = evidence.merged_vs_unmerged()
    return (f"Nothing, once merged: W' = W + (α/r)·B·A has W's shape, so the model is the base architecture again "
            f"({m['params_merged']:,} parameters, the base's {m['params_base']:,}). Merged and unmerged logits agree "
            f"to {m['max_abs_logit_diff']:.0e}. Unmerged, every wrapped layer runs two extra thin matmuls, which "
            f"costs latency but lets one base serve many adapters.")


def _merge_evidence() -> Evidence:
    m = evidence.merged_vs_unmerged()
    keys = ("max_abs_logit_diff", "adapter_effect", "params_base", "params_merged", "lora_layers_left",
            "base_ms", "unmerged_ms", "merged_ms")
    return Evidence(table=[{"measure": k, "value": m[k]} for k in keys],
                    note="teach.evidence.merged_vs_unmerged on a tiny GPT-2; timings are the best of several, "
                         f"measured now on {m['threads']} CPU threads")


def _conv1d() -> str:
    conv, linear = evidence.conv1d_facts()["rows"]
    return (f"GPT-2's Conv1D stores its weight as (in, out), the transpose of nn.Linear's (out, in): c_attn's is "
            f"{conv['weight shape']}, a Llama k_proj's {linear['weight shape']}. The LoRA factors do not change "
            f"(A {conv['A']}, B {conv['B']}), but merging must transpose ΔW, which is what fan_in_fan_out=True "
            f"says. PEFT sets it for Conv1D and warns; a merge test with a non-zero B catches a missing transpose.")


def _serving() -> str:
    s = evidence.shared_adapters()
    return (f"Keep one frozen base in memory and attach small adapters per task or per request, unmerged. Here two "
            f"model copies share all {s['shared_a']} of the base's tensors ({s['base_params']:,} parameters) and each "
            f"adds only its adapter ({s['adapter_a']:,} and {s['adapter_b']:,}). Merging bakes one adapter in: fastest "
            f"for a single task, but the base is no longer shared.")


def _all_linear() -> str:
    g = anatomy.regex_vs_all_linear(build_on_meta("distilgpt2"))
    return (f"Use target_modules='all-linear': every Linear (and GPT-2 Conv1D) except the output layer. A regex over "
            f"print(model) that looks for 'Linear' finds {g['regex']} on distilgpt2, because its projections print as "
            f"Conv1D; all-linear wraps {g['all_linear_modules']} modules there and leaves {g['excluded_output_layer']} "
            f"out.")


def _all_linear_evidence() -> Evidence:
    g = anatomy.regex_vs_all_linear(build_on_meta("distilgpt2"))
    return Evidence(metrics={"regex finds": str(g["regex"]), "all-linear wraps": str(g["all_linear_modules"])},
                    table=[{"module": k, "type": t, "count": n} for k, (t, n) in g["all_linear"].items()],
                    code=anatomy.SEED_REGEX, note="teach.anatomy.regex_vs_all_linear on distilgpt2 (meta device)")


def _task_type() -> str:
    rows = evidence.task_type_check()["rows"]
    classes = ", ".join(f"{r['task_type']} → {r['PEFT returns'].split(':')[0]}" for r in rows)
    return (f"It chooses which PeftModel wrapper get_peft_model returns ({classes}); the adapter and its math are the "
            f"same. Leaving it out still works for forward passes. A mismatch can fail, as a seq2seq wrapper on a "
            f"decoder-only model does, but it does not quietly lower quality.")


# --- quantization and memory ---------------------------------------------------------------------------------
def _nf4() -> str:
    c = evidence_quant.codebook_comparison()
    return (f"4-bit NormalFloat: 16 levels at quantiles of N(0, 1), scaled to [-1, 1] with an exact zero, so "
            f"normally distributed weights fall into each level about equally often. Weights are cut into blocks of "
            f"{c['block_size']} and divided by the block's absmax before rounding. Its positive levels sit "
            f"{c['nf4_probability_steps'][0]:.4f} apart in probability; nothing about it is logarithmic.")


def _codebook_evidence() -> Evidence:
    c = evidence_quant.codebook_comparison()
    return Evidence(table=c["errors"], figure={"kind": "codebook", "books": c["books"], "density": c["density"]},
                    note="quant.codebook on a seeded N(0, 0.02²) matrix")


def _double_quant() -> str:
    c = evidence_quant.codebook_comparison()
    return (f"It quantizes the block constants. Each block of {c['block_size']} weights keeps an fp32 absmax: "
            f"32/{c['block_size']} = {c['bits_plain']:g} bits per weight. Double quantization stores those constants "
            f"in 8 bits, in blocks of 256 with one fp32 constant each: {c['bits_double']:.3f} bits per weight "
            f"(measured {c['bits_double_measured']:.4f}), with constants off by at most "
            f"{percent(c['double_quant_max_rel_error'], 2)}.")


def _memory_setup() -> memory.MemoryConfig:
    return memory.MemoryConfig(model="Llama-2-7b", method="lora", r=8, weight_dtype="bf16", seq_len=512)


def _memory_evidence() -> Evidence:
    est = memory.compare_methods(_memory_setup())
    table = [{"component": c, **{m: memory.gib(e.breakdown()[c]) for m, e in est.items()}} for c in memory.COMPONENTS]
    return Evidence(table=table, figure={"kind": "memory", "estimates": est},
                    note="quant.memory.compare_methods: Llama-2-7b, bf16, batch 1, 512 tokens, AdamW (GiB)")


def _memory() -> str:
    est = memory.compare_methods(_memory_setup())
    full, lora = est["full"].breakdown(), est["lora"].breakdown()
    g = memory.gib
    return (f"In gradients and optimizer states, which exist only for trainable parameters. Llama-2-7b in bf16: "
            f"gradients {g(full['gradients']):.1f} → {g(lora['gradients']):.2f} GiB and AdamW states "
            f"{g(full['optimizer states']):.1f} → {g(lora['optimizer states']):.2f} GiB. The frozen weights still "
            f"take {g(lora['weights']):.1f} GiB; QLoRA attacks that part by storing them in 4 bits.")


def _activations() -> str:
    est = memory.compare_methods(_memory_setup())
    return (f"Barely. Backpropagation still runs through every frozen layer to reach the adapters, so the "
            f"activations stay: {memory.gib(est['full'].activations):.2f} GiB for full fine-tuning against "
            f"{memory.gib(est['lora'].activations):.2f} GiB for LoRA in this estimate. Gradient checkpointing, "
            f"shorter sequences or smaller batches are what cut them.")


def _qlora_merge() -> str:
    q = evidence_quant.qlora_merge_error()
    return (f"Not losslessly. Storing W + ΔW back in NF4 rounds it again, and the rounding is as large as the update "
            f"itself: {q['nf4_requantized']:.2f}×‖ΔW‖ for an update {percent(q['relative_update'], 0)} the size of W. "
            f"Merge into a dequantized 16-bit copy instead ({q['bf16']:.2f}×‖ΔW‖ in bf16) or keep the adapter "
            f"separate (exact).")


def _not_faster() -> str:
    rep = training_runs.REPORTED_STEP_TIMES
    return (f"Not necessarily. Forward and backward still run through the whole frozen model; LoRA skips the frozen "
            f"weights' gradients and optimizer update but adds small matmuls and kernel launches. At small scale "
            f"that overhead wins. A {rep['label']}: at small scale on a GPU, {rep['setup']} was measured at "
            f"{rep['lora_over_frozen']}× the frozen-base step time, slower than full fine-tuning at "
            f"{rep['full_over_frozen']}×. LoRA's sure gains are memory and checkpoint size.")


def _speed_evidence() -> Evidence:
    t = training_runs.step_times()
    rep = training_runs.REPORTED_STEP_TIMES
    measured = {f"measured here: {k}": f"{v:.2f}×" for k, v in t["relative"].items() if k != "frozen base (fwd+bwd)"}
    return Evidence(
        metrics={"reported: LoRA / frozen (GPU)": f"{rep['lora_over_frozen']}×",
                 "reported: full / frozen (GPU)": f"{rep['full_over_frozen']}×", **measured},
        figure={"kind": "bars", "values": t["ms"], "title": f"Step time on this CPU ({t['params']:,} parameters)",
                "y_title": "ms (best of several)"},
        note=f"reported values: {rep['label']}. Measured values: teach.training_runs.step_times, on this machine "
             f"now, on {t['threads']} CPU threads")


# --- theory and variants ----------------------------------------------------------------------------------------
def _intrinsic() -> str:
    spectra = training_runs.trained_adapter_spectra()
    real = "; ".join(f"{s['run']}: {percent(s['median energy in σ_1'], 0)} of a ΔW's energy in one direction"
                     for s in spectra)
    return ("Because the change a task needs has low intrinsic rank (Aghajanyan et al. 2020; LoRA §7), even though "
            "W itself is full rank. Trained adapters concentrate in a few directions" + (f" ({real})" if real else "")
            + ", and on a toy task r = 1..8 already removes most of the loss.")


def _intrinsic_evidence() -> Evidence:
    sweep = training_runs.rank_sweep_toy()
    toy = [{"adapter": f"toy, r={r}", "loss left": v} for r, v in sweep["fraction_left"].items()]
    real = [{"adapter": f"trained {s['run']} (r={s['r']})", "median energy in σ_1": s["median energy in σ_1"]}
            for s in training_runs.trained_adapter_spectra()]
    return Evidence(table=toy + real, note="teach.training_runs: rank_sweep_toy, trained_adapter_spectra (runs/)")


def _adds() -> str:
    info = anatomy.added_not_selected("distilgpt2", LoraConfig(r=8, target_modules=["c_attn"]))
    return (f"No. It freezes every original weight and adds new ones: on distilgpt2 with c_attn at r = 8, all "
            f"{info['base_total']:,} original parameters are frozen ({info['base_trainable']} train) and the "
            f"{info['lora']:,} trainable ones are fresh lora_A and lora_B entries.")


def _variants_evidence() -> Evidence:
    return Evidence(table=evidence.variant_counts(), note="counts from the distilgpt2 c_attn ledger shapes")


def _variant(name: str, line: str) -> Callable[[], str]:
    def answer() -> str:
        row = next(v for v in evidence.variant_counts() if v["method"].startswith(name))
        return f"{line} On distilgpt2's c_attn: {row['trainable']:,} trainable ({row['how']})."
    return answer


def _ev(fn: Callable[[], dict], **kw) -> Callable[[], Evidence]:
    """Evidence from a function that returns rows (a list) or a dict with 'rows'."""
    def build() -> Evidence:
        out = fn()
        return Evidence(table=out if isinstance(out, list) else out["rows"], **kw)
    return build


_C = Concept
CONCEPTS: dict[str, Concept] = by_kind((
    _C("why_b_zero", "init & dropout", "Why is B initialised to zero, and why not A as well?",
       (("ΔW starts at zero", ("zero", " 0")),
        ("the model starts as the pretrained one", ("pretrained", "base", "start", "identical", "unchanged", "same"))),
       _b_zero, _ev(evidence.zero_init_gradients, note="one LoRA layer, step 0")),
    _C("dropout_where", "init & dropout", "Where does lora_dropout act, and when?",
       (("on the branch's input x", ("input",)), ("in training only", ("train",))), _dropout, _trace_evidence),
    _C("bias_modes", "init & dropout", "What does bias='all' or 'lora_only' change?",
       (("which biases train", ("bias",)),), _bias,
       lambda: Evidence(table=anatomy.bias_mode_ledgers("distilgpt2", LoraConfig(r=8, target_modules=["c_attn"])))),
    _C("alpha", "scaling", "What does lora_alpha do, and how should you tune it?",
       (("it scales the update", ("scale", "scaling", "multipl")), ("α/r", ("α/r", "alpha/r", "/r", "over r",
        "divided by r"))), _alpha, _scales_table),
    _C("rslora", "scaling", "What is rsLoRA, and what problem does it fix?",
       (("scale α/√r", ("√r", "sqrt", "square root")),), _rslora, _scales_table),
    _C("merged_inference", "merging & serving", "What does a LoRA adapter cost at inference time?",
       (("merge into W", ("merge", "fold")), ("no extra cost", ("no extra", "zero", "nothing", "same", "no additional",
        "none"))), _merged, _merge_evidence),
    _C("serving", "merging & serving", "How do you serve many LoRA fine-tunes of one base model?",
       (("one shared base", ("share", "one base", "same base", "single base")), ("adapters kept separate",
        ("unmerged", "swap", "switch", "separate", "per request", "hot"))), _serving,
       lambda: Evidence(table=[evidence.shared_adapters()],
                        note="lora_core.shared_base_copy, lora_core.shares_storage")),
    _C("conv1d", "architecture", "GPT-2's projections are Conv1D, not nn.Linear. What changes for LoRA?",
       (("the weight is transposed, (in, out)", ("transpose", "in, out", "(in,out)", "fan_in_fan_out")),),
       _conv1d, _ev(evidence.conv1d_facts, note="meta-device layers of distilgpt2 and SmolLM2")),
    _C("all_linear", "architecture", "How do you put LoRA on 'all linear layers' of a model?",
       (("target_modules='all-linear'", ("all-linear", "all_linear", "all linear")),), _all_linear,
       _all_linear_evidence),
    _C("task_type", "architecture", "What does task_type in LoraConfig do?",
       (("it picks the PEFT wrapper class", ("wrapper", "class", "peftmodel")),), _task_type,
       _ev(evidence.task_type_check, note="peft.get_peft_model on a tiny GPT-2")),
    _C("nf4", "quantization", "What is NF4?", (("normal quantiles", ("quantile", "normal", "gaussian")),
       ("blockwise absmax", ("block", "absmax"))), _nf4, _codebook_evidence),
    _C("double_quant", "quantization", "What does double quantization save, and how?",
       (("the block constants", ("constant", "absmax", "scale")), ("8-bit", ("8-bit", "8 bit", "8bit", "int8"))),
       _double_quant, _codebook_evidence),
    _C("qlora_merge", "quantization", "Can you merge a LoRA adapter into a 4-bit QLoRA base?",
       (("not losslessly: re-quantization error", ("error", "lossy", "round", "noise")), ("dequantize to 16-bit",
        ("dequant", "16", "bf16", "fp16"))), _qlora_merge,
       lambda: Evidence(table=[evidence_quant.qlora_merge_error()],
                        note="quant.codebook on a seeded N(0, 0.02²) matrix")),
    _C("lora_vs_full_memory", "memory", "Where exactly does LoRA save memory compared with full fine-tuning?",
       (("optimizer states", ("optimizer", "adam")), ("gradients", ("gradient",))), _memory, _memory_evidence),
    _C("activations", "memory", "Does LoRA reduce activation memory?",
       (("no, hardly", ("no", "not", "barely", "hardly", "little")), ("activations still flow through frozen layers",
        ("activation",))), _activations, _memory_evidence),
    _C("not_faster", "speed", "Is a LoRA training step always faster than a full fine-tuning step?",
       (("no", ("no", "not")), ("forward/backward through the frozen model", ("forward", "backward", "frozen"))),
       _not_faster, _speed_evidence),
    _C("intrinsic_rank", "theory", "Why can such a low rank be enough?",
       (("low intrinsic rank", ("low", "intrinsic", "few directions")), ("of the update, not of W", ("update", "δw",
        "delta", "change"))), _intrinsic, _intrinsic_evidence),
    _C("adds_not_selects", "theory", "Does LoRA fine-tune a subset of the model's weights?",
       (("no: it adds new parameters", ("add", "new")), ("the old ones are frozen", ("frozen", "freeze"))), _adds,
       lambda: Evidence(table=[anatomy.added_not_selected("distilgpt2", LoraConfig(r=8, target_modules=["c_attn"]))])),
    _C("dora", "variants", "DoRA in one line?", (("magnitude and direction", ("magnitude",)),), _variant(
        "DoRA", "DoRA (Liu et al. 2024) splits W into a magnitude vector and a direction, trains the magnitude "
        "directly and the direction with LoRA."), _variants_evidence),
    _C("pissa", "variants", "PiSSA in one line?", (("top singular vectors of W", ("singular", "svd", "principal")),),
       _variant("PiSSA", "PiSSA (Meng et al. 2024) starts A and B from W's top-r singular vectors and freezes the "
                "residual, so training moves the principal directions first."), _variants_evidence),
    _C("loftq", "variants", "LoftQ in one line?", (("quantization-aware init", ("quantiz",)),), _variant(
        "LoftQ", "LoftQ (Li et al. 2023) picks the 4-bit base and the LoRA init together, so that quantized W plus "
        "B·A starts close to the full-precision W."), _variants_evidence),
    _C("vera", "variants", "VeRA in one line?", (("shared frozen random matrices", ("random", "shared", "frozen")),
       ("trains only scaling vectors", ("vector", "scal"))), _variant(
        "VeRA", "VeRA (Kopiczko et al. 2023) shares one pair of frozen random matrices across layers and trains only "
        "two small scaling vectors per layer."), _variants_evidence),
))
