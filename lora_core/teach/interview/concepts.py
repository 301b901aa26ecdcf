"""The conceptual half of the interview bank: a question, a model answer with live numbers, evidence.

Each Concept's answer is written for LoRA Lab and fills its numbers in from lora_core when asked
(`Concept.question()`), and its `evidence()` returns the measurement behind it: a hook trace, a
ledger, a merge check, a toy run. `key_ideas` lists what a spoken answer must contain; each idea
is accepted if any of its words appears (a lenient check, meant for self-study, not for grading).
Figures not computed here (the authors' α in their scripts, an H100 step time) are labelled as quoted,
with their source. The quantization, memory and speed answers live in concepts_memory.py.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from ...config import LoraConfig
from ...models.sources import build_on_meta
from .. import anatomy, evidence, evidence_quant, training_runs
from ..evidence import Evidence, percent
from . import concepts_memory as cm
from .disable_check import disable_on_merged
from .question import Question, by_kind

# Quoted from the LoRA authors' scripts (microsoft/LoRA, examples/): α is not r there.
AUTHORS_ALPHA = (
    {"model": "RoBERTa-base, MNLI", "r": 8, "lora_alpha": 16, "source": "examples/NLU/roberta_base_mnli.sh"},
    {"model": "DeBERTa-v2-xxlarge, MNLI", "r": 16, "lora_alpha": 32,
     "source": "examples/NLU/deberta_v2_xxlarge_mnli.sh"},
    {"model": "GPT-2 Medium, E2E", "r": 4, "lora_alpha": 32, "source": "examples/NLG/README.md (--lora_dim 4)"},
)


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


def _a_init() -> str:
    st = evidence.init_stats()
    default, gauss = st["rows"]
    return (f"B starts at zero either way, so ΔW = 0. For A, the LoRA paper's text says a random Gaussian, but "
            f"its reference code, loralib's reset_parameters, calls nn.init.kaiming_uniform_(A, a=√5): uniform in "
            f"±1/√in. PEFT's default (init_lora_weights=True) follows that code. Measured on a "
            f"{st['in_features']}→{st['in_features']} layer at r = {st['r']}: A lies in [{default['A min']:.4f}, "
            f"{default['A max']:.4f}] within the bound 1/√{st['in_features']} = {st['kaiming_bound']:.4f}, with "
            f"excess kurtosis {default['A excess kurtosis']:.2f} (a uniform's is −1.2, a Gaussian's 0). "
            f"init_lora_weights='gaussian' gives the paper's version, N(0, (1/r)²): std {gauss['A std']:.3f}, "
            f"excess kurtosis {gauss['A excess kurtosis']:.2f}.")


def _a_init_evidence() -> Evidence:
    st = evidence.init_stats()
    return Evidence(table=st["rows"], figure={"kind": "histograms", "hists": st["hists"],
                                              "title": "lora_A at step 0", "x_title": "value"},
                    note="teach.evidence.init_stats: lora_core's init, the same draws PEFT makes")


def authors_alpha() -> list[dict]:
    """AUTHORS_ALPHA with the scale each setting gives (LoraConfig.scaling) and α/r."""
    return [row | {"α/r": LoraConfig(r=row["r"], lora_alpha=row["lora_alpha"]).scaling} for row in AUTHORS_ALPHA]


def _alpha() -> str:
    p = training_runs.alpha_lr_pair()
    d = LoraConfig()
    quoted = "; ".join(f"{row['model']}: r = {row['r']}, α = {row['lora_alpha']}" for row in AUTHORS_ALPHA)
    return (f"α sets the scale on the update: ΔW = (α/r)·B·A. It adds no parameters. PEFT's defaults (r = {d.r}, "
            f"α = {d.lora_alpha:g}) give scale {d.scaling:g}. Under Adam the step on A and B does not depend on the "
            f"gradient's size, so a larger α mainly makes ΔW move faster, like a larger learning rate: on the toy "
            f"task (α, lr) and (2α, lr/2) stay within {percent(p['half_lr_max_rel_gap_early'])} over the first "
            f"{p['early_steps']} steps. The LoRA paper (§4.1) therefore sets α to the first r it tries and does not "
            f"tune it: α then stays fixed while r changes, which is not α = r. Quoted from the authors' scripts "
            f"(microsoft/LoRA, examples/NLU and examples/NLG): {quoted}, i.e. α = 2r for RoBERTa and DeBERTa. So fix "
            f"α and tune the learning rate.")


def _alpha_evidence() -> Evidence:
    scales = _scales_table()
    return Evidence(table=authors_alpha() + scales.table, figure=scales.figure,
                    note="quoted: microsoft/LoRA examples/ (r, α); computed: LoraConfig.scaling. " + scales.note)


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


def _disable_merged() -> str:
    d = disable_on_merged()
    rows = {row["library"].split(" ")[0]: row for row in d["rows"]}
    ours = rows["lora_core"]
    peft_part = ("PEFT is not installed here, so only lora_core ran. " if "PEFT" not in rows else
                 f"After it they differ: PEFT's disable_adapter() unmerges each layer at its first forward inside "
                 f"the block and leaves the model unmerged "
                 f"(merged after the block: {rows['PEFT']['merged after the block']}), while lora_core's "
                 f"disable_lora merges the adapter back (merged after the block: {ours['merged after the block']}). ")
    return (f"Inside the block both give the base model: max |Δ| against the base logits is "
            f"{max(r['max |Δ| vs base inside the block'] for r in d['rows']):.0e}, for an adapter that moves them by "
            f"{d['adapter_effect']:.2f}. {peft_part}The logits after the block are the adapted ones either way "
            f"(max |Δ| {max(r['max |Δ| vs adapted after the block'] for r in d['rows']):.0e}), but an unmerged PEFT "
            f"model pays the LoRA branch on every call until merge_adapter() runs again. Both behaviours were run "
            f"just now on a tiny GPT-2.")


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
    head = evidence.classification_head_check()
    return (f"It chooses which PeftModel wrapper get_peft_model returns ({classes}), and for classification "
            f"models it also decides whether the new head trains: SEQ_CLS and TOKEN_CLS add the head (classifier or "
            f"score) to modules_to_save. On a tiny GPT2ForSequenceClassification with LoRA on c_attn at r = 2: "
            f"{head['without']:,} trainable parameters without task_type, {head['with']:,} with SEQ_CLS (the "
            f"{head['with'] - head['without']:,}-parameter score head). Without it the freshly initialised head "
            f"stays frozen and is not saved with the adapter, so the classifier stays random and quality drops "
            f"without an error. On a causal LM it only picks the wrapper: leaving it out still works for forward "
            f"passes, and a seq2seq wrapper on a decoder-only model fails loudly.")


def _task_type_evidence() -> Evidence:
    head, wrappers = evidence.classification_head_check(), evidence.task_type_check()
    wrapper_of = {f"PEFT wrapper, task_type={row['task_type']}": row["PEFT returns"] for row in wrappers["rows"]}
    return Evidence(metrics={"trainable without task_type": f"{head['without']:,}",
                             "trainable with task_type='SEQ_CLS'": f"{head['with']:,}", **wrapper_of},
                    table=head["rows"],
                    note="teach.evidence.classification_head_check (tiny GPT2ForSequenceClassification, c_attn r=2) "
                         "and task_type_check (peft.get_peft_model on a tiny GPT-2)")


# --- theory and variants ----------------------------------------------------------------------------------------
def _intrinsic() -> str:
    sweep = training_runs.rank_sweep_toy()
    k, left = sweep["true_rank"], sweep["fraction_left"]
    return ("It is a hypothesis, not a measured fact. The LoRA paper (§4.1) hypothesises that the update a task needs "
            "has a low 'intrinsic rank', even though W itself is full rank. It was inspired by Aghajanyan et al. "
            "2020, who measured something else: intrinsic dimension, the size of a random subspace of all the "
            "weights in which fine-tuning reaches 90% of full fine-tuning's score. The evidence for low rank would "
            "be the spectrum of a full fine-tune's ΔW and a rank sweep on a pretrained model; LoRA Lab has not "
            "replayed those yet. The toy shown here is no such evidence: it only shows that LoRA recovers a planted "
            f"low-rank update (target planted at rank {k}: r = {k} leaves {percent(left[k], 2)} of the loss, r = 1 "
            f"leaves {percent(left[1], 0)}).")


def _intrinsic_evidence() -> Evidence:
    sweep = training_runs.rank_sweep_toy()
    rows = [{"adapter": f"toy, r={r}", "loss left": v, "planted rank": sweep["true_rank"]}
            for r, v in sweep["fraction_left"].items()]
    return Evidence(table=rows, note=f"teach.training_runs.rank_sweep_toy: LoRA recovers a planted low-rank update "
                                     f"(target of rank {sweep['true_rank']} by construction, d = {sweep['d']}); "
                                     "not evidence that real fine-tuning updates are low-rank")


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
    _C("a_init", "init & dropout", "How does PEFT initialise lora_A, and is that what the LoRA paper says?",
       (("B starts at zero", ("zero", " 0")), ("A: Kaiming-uniform in the code, Gaussian in the paper's text",
        ("kaiming", "uniform"))), _a_init, _a_init_evidence),
    _C("bias_modes", "init & dropout", "What does bias='all' or 'lora_only' change?",
       (("which biases train", ("bias",)),), _bias,
       lambda: Evidence(table=anatomy.bias_mode_ledgers("distilgpt2", LoraConfig(r=8, target_modules=["c_attn"])))),
    _C("alpha", "scaling", "What does lora_alpha do, and how should you tune it?",
       (("it scales the update", ("scale", "scaling", "multipl")), ("α/r", ("α/r", "alpha/r", "/r", "over r",
        "divided by r"))), _alpha, _alpha_evidence),
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
    _C("disable_merged", "merging & serving",
       "You merged the adapter, then ran a block under disable_adapter(). What state is the model in afterwards?",
       (("inside the block: the base model", ("base",)), ("PEFT leaves it unmerged; lora_core merges again",
        ("unmerge", "re-merge", "remerge", "merges again", "merged again"))), _disable_merged,
       _ev(disable_on_merged, note="teach.interview.disable_check: PEFT and lora_core on the same tiny GPT-2")),
    _C("conv1d", "architecture", "GPT-2's projections are Conv1D, not nn.Linear. What changes for LoRA?",
       (("the weight is transposed, (in, out)", ("transpose", "in, out", "(in,out)", "fan_in_fan_out")),),
       _conv1d, _ev(evidence.conv1d_facts, note="meta-device layers of distilgpt2 and SmolLM2")),
    _C("all_linear", "architecture", "How do you put LoRA on 'all linear layers' of a model?",
       (("target_modules='all-linear'", ("all-linear", "all_linear", "all linear")),), _all_linear,
       _all_linear_evidence),
    _C("task_type", "architecture", "What does task_type in LoraConfig do?",
       (("it picks the PEFT wrapper class", ("wrapper", "class", "peftmodel")),
        ("for classifiers it trains and saves the head", ("head", "classifier", "score", "modules_to_save"))),
       _task_type, _task_type_evidence),
    _C("nf4", "quantization", "What is NF4?", (("normal quantiles", ("quantile", "normal", "gaussian")),
       ("scaled per block by its absmax", ("block", "absmax"))), cm.nf4_answer, cm.codebook_evidence),
    _C("double_quant", "quantization", "What does double quantization save, and how?",
       (("the block constants", ("constant", "absmax", "scale")), ("8-bit", ("8-bit", "8 bit", "8bit", "int8"))),
       cm.double_quant_answer, cm.codebook_evidence),
    _C("qlora_merge", "quantization", "Can you merge a LoRA adapter into a 4-bit QLoRA base?",
       (("not losslessly: re-quantization error", ("error", "lossy", "round", "noise")), ("dequantize to 16-bit",
        ("dequant", "16", "bf16", "fp16"))), cm.qlora_merge_answer,
       lambda: Evidence(table=[evidence_quant.qlora_merge_error()],
                        note="quant.codebook on a seeded N(0, 0.02²) matrix")),
    _C("qlora_ideas", "quantization", "What are QLoRA's three ideas?",
       (("NF4", ("nf4", "normalfloat", "normal float")), ("double quantization", ("double",)),
        ("paged optimizers", ("paged", "paging"))), cm.qlora_ideas_answer, cm.qlora_ideas_evidence),
    _C("paged_optimizers", "memory", "What do QLoRA's paged optimizers page, and when does it matter?",
       (("the optimizer states", ("optimizer", "adam")), ("evicted to CPU RAM when the GPU runs out",
        ("cpu", "evict", "unified", "page")), ("memory spikes, e.g. long sequences", ("spike", "long", "peak"))),
       cm.paged_answer, cm.paged_evidence),
    _C("lora_vs_full_memory", "memory", "Where exactly does LoRA save memory compared with full fine-tuning?",
       (("optimizer states", ("optimizer", "adam")), ("gradients", ("gradient",))), cm.memory_answer,
       cm.memory_evidence),
    _C("activations", "memory", "Does LoRA reduce activation memory?",
       (("only somewhat", ("no", "not", "barely", "hardly", "little", "somewhat", "some", "partly", "less")),
        ("a frozen layer's input is kept only if something needs it", ("input", "weight gradient", "saved",
                                                                        "stored"))), cm.activations_answer,
       cm.memory_evidence),
    _C("not_faster", "speed", "Is a LoRA training step always faster than a full fine-tuning step?",
       (("no", ("no", "not")), ("forward/backward through the frozen model", ("forward", "backward", "frozen"))),
       cm.speed_answer, cm.speed_evidence),
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
