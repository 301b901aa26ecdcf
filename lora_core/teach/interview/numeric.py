"""The numeric half of the interview bank, as a table: one `NumericQuestion` entry per kind.

Each entry says what to draw (a model, a layer, r, α, a block size: real shapes from
`available_configs()`, built on the meta device), the question as a template, and how lora_core
computes the answer: the ledger, LoraConfig.scaling, a dropout hook, the NF4 bit count, the memory
estimator. To add a question, add an entry to NUMERIC; no new function is needed unless the answer
needs a new computation. Draws come from the `random.Random` the caller passes, never the global
random module.

    entry = NUMERIC_BY_KIND["scaling"]
    entry.question(random.Random(7)).text   # 'r=16, lora_alpha=64, use_rslora=False. By what factor ...'
"""

from __future__ import annotations

import functools
import math
import random
from collections.abc import Callable
from dataclasses import dataclass

from ...config import LoraConfig
from ...counting import Ledger, count_lora_parameters
from ...models.sources import available_configs, load_config
from ...quant import codebook, memory
from .. import anatomy
from ..evidence import Evidence
from .question import Question, by_kind

RANKS = (1, 2, 4, 8, 16, 32, 64)
ALPHAS = (8, 16, 32, 64, 128)
SCALE_RANKS = (*RANKS[2:], 128, 256)
DROPOUT_PS = (0.05, 0.1, 0.2, 0.25, 0.5)
NF4_BLOCKS = (32, 64, 128, 256)


@dataclass(frozen=True)
class NumericQuestion:
    """One randomised numeric question: what to draw, the question, and how lora_core answers it.

    `draw(rng)` returns the parameters (a dict). `solve(params)` computes the answer with lora_core and
    returns {"answer": value, ...} plus every other number the text or formula shows (and optionally
    "unit" or "evidence"). `text` and `formula` are str.format templates over params and solved values.
    """

    kind: str
    topic: str
    draw: Callable[[random.Random], dict]
    text: str
    solve: Callable[[dict], dict]
    formula: str
    unit: str = ""          # "", "%", "GiB", "MiB", "bits", "×" (solve may override it)
    rel_tol: float = 0.0    # 0: exact (parameter counts)
    hint: str = ""          # the usual mistake, shown with a wrong answer

    def question(self, rng: random.Random) -> Question:
        """Draw the parameters from `rng`, compute the answer, fill the templates."""
        params = self.draw(rng)
        solved = self.solve(params)
        values = {**params, **solved}
        return Question(self.kind, self.topic, self.text.format(**values), solved["answer"],
                        solved.get("unit", self.unit), self.rel_tol, self.formula.format(**values), hint=self.hint,
                        params=params, evidence=solved.get("evidence"))


# --- what to draw ----------------------------------------------------------------------------------------
@functools.lru_cache(maxsize=16)
def _layer_rows(model: str) -> tuple:
    """Every Linear/Conv1D kind of `model` except the output layer, from an all-linear ledger at r=1."""
    return tuple(count_lora_parameters(model, LoraConfig(r=1, target_modules="all-linear")).rows)


@functools.lru_cache(maxsize=128)
def _ledger(model: str, r: int, targets: tuple[str, ...] | str | None) -> Ledger:
    t = list(targets) if isinstance(targets, tuple) else targets
    return count_lora_parameters(model, LoraConfig(r=r, target_modules=t))


def draw_layer(rng: random.Random) -> dict:
    """A model, one of its layer kinds (in, out) and a rank r ≤ min(in, out)."""
    model = rng.choice(available_configs())
    row = rng.choice(_layer_rows(model))
    r = rng.choice([r for r in RANKS if r <= min(row.in_features, row.out_features)])
    return dict(model=model, module=row.module, in_features=row.in_features, out_features=row.out_features, r=r)


def draw_layer_shape(rng: random.Random) -> dict:
    """As `draw_layer`, for questions whose answer does not involve r."""
    return {k: v for k, v in draw_layer(rng).items() if k != "r"}


def draw_targets(rng: random.Random) -> dict:
    """A model, one of its standard target sets (labelled) and a rank."""
    model = rng.choice(available_configs())
    sets = anatomy.standard_target_sets(load_config(model).model_type)
    label = rng.choice(list(sets))
    targets = sets[label]
    return dict(model=model, label=label, targets=tuple(targets) if isinstance(targets, list) else targets,
                r=rng.choice(RANKS))


def draw_scale(rng: random.Random) -> dict:
    r = rng.choice(SCALE_RANKS)
    return dict(r=r, lora_alpha=rng.choice(ALPHAS))


def draw_weight_setup(rng: random.Random) -> dict:
    """A model and how its weights are stored: full fp32, full bf16, or QLoRA."""
    model = rng.choice(available_configs())
    method, dtype = rng.choice((("full", "fp32"), ("full", "bf16"), ("qlora", "bf16")))
    return dict(model=model, method=method, weight_dtype=dtype)


# --- how lora_core answers ------------------------------------------------------------------------------------
def ledger_formula(book: Ledger) -> str:
    """Σ count·r·(in+out) with every term written out."""
    terms = " + ".join(f"{row.count}·{row.r}·({row.in_features}+{row.out_features})" for row in book.rows)
    return f"Σ count·r·(in+out) = {terms} = {book.lora_params:,}"


def solve_model_trainable(p: dict) -> dict:
    book = _ledger(p["model"], p["r"], p["targets"])
    return {"answer": book.trainable, "sum": ledger_formula(book),
            "evidence": Evidence(table=book.records(), code=book.peft_line)}


def solve_trainable_percent(p: dict) -> dict:
    book = _ledger(p["model"], p["r"], p["targets"])
    return {"answer": book.trainable_percent, "trainable": book.trainable, "base_total": book.base_total,
            "evidence": Evidence(code=book.peft_line)}


def solve_dropout_scale(p: dict) -> dict:
    trace = anatomy.trace_dropout(in_features=32, out_features=32, r=2, p=p["p"], tokens=64)
    return {"answer": 1 / (1 - p["p"]), "measured": trace["kept_scale"]}


def solve_nf4_bits(p: dict) -> dict:
    block, dq = p["block_size"], p["double_quant"]
    return {"answer": 4 + codebook.constant_bits_per_param(block, dq), "switch": "on" if dq else "off",
            "sum": f"4 + 8/{block} + 32/({block}·256)" if dq else f"4 + 32/{block}"}


def _estimate(model: str, method: str, **kw) -> memory.MemoryEstimate:
    return memory.estimate_memory(memory.MemoryConfig(model=model, method=method, **kw))


def solve_optimizer_memory(p: dict) -> dict:
    """Full fine-tuning in bf16: weights + gradients + AdamW states under the drawn accounting
    (memory.OPTIMIZER_PRECISIONS: 8, 12 or 16 B per parameter). LoRA: the AdamW states of the fp32 factors."""
    if p["method"] == "full":
        est = _estimate(p["model"], "full", weight_dtype="bf16", optimizer_precision=p["precision"])
        held = est.weights + est.gradients + est.optimizer
        per = est.bytes_per_trainable_param
        return {"answer": held / 2**30, "unit": "GiB", "power": 30, "held_bytes": held,
                "what": f"full fine-tuning of bf16 weights with AdamW, counted as: "
                        f"{memory.PRECISION_LABELS[p['precision']]}",
                "part": "the weights, gradients and optimizer states together",
                "sum": f"P·{per:g} B = {est.trainable_params:,}·{per:g} = {held:,} B"}
    est = _estimate(p["model"], "lora", r=p["r"], optimizer="adamw")
    return {"answer": est.optimizer / 2**20, "unit": "MiB", "power": 20, "held_bytes": est.optimizer,
            "what": f"LoRA r={p['r']} on PEFT's default targets, AdamW", "part": "the optimizer states",
            "sum": f"the LoRA factors are fp32, so AdamW's two moments are fp32 too: T·8 B = "
                   f"{est.trainable_params:,}·8 = {est.optimizer:,} B"}


def solve_weight_memory(p: dict) -> dict:
    est = _estimate(p["model"], p["method"], weight_dtype=p["weight_dtype"], double_quant=False)
    what = (f"in {p['weight_dtype']}" if p["method"] == "full"
            else "for QLoRA (NF4 base, bf16 rest, r=8 adapter in fp32)")
    return {"answer": memory.gib(est.weights), "what": what, "bytes": est.weights, "sum": est.formulas["weights"]}


def solve_adapter_file(p: dict) -> dict:
    trainable = _ledger(p["model"], p["r"], p["targets"]).trainable
    return {"answer": 4 * trainable / 2**20, "trainable": trainable, "bytes": 4 * trainable}


# --- the table ---------------------------------------------------------------------------------------------------
Q = NumericQuestion
NUMERIC: tuple[NumericQuestion, ...] = (
    Q("layer_params", "counting", draw_layer,
      "{model}: a rank-{r} LoRA pair on `{module}` ({in_features}→{out_features}). How many trainable parameters "
      "do A and B add to one such layer?",
      lambda p: {"answer": p["r"] * (p["in_features"] + p["out_features"])},
      "A is r×in and B is out×r: r·(in+out) = {r}·({in_features}+{out_features}) = {answer:,}",
      hint="Not in·out: that is the frozen weight. Not 2·r·in unless in = out."),
    Q("model_trainable", "counting", draw_targets,
      "{model}, LoRA at r={r} on {label} (bias='none'). How many trainable parameters does PEFT report?",
      solve_model_trainable, "{sum}",
      hint="Every layer gets its own pair, and a name like c_proj matches every module ending in it."),
    Q("trainable_percent", "counting", draw_targets,
      "{model}, LoRA at r={r} on {label}. What trainable% does PEFT print?", solve_trainable_percent,
      "trainable / all params · 100 = {trainable:,} / ({base_total:,} + {trainable:,}) · 100 = {answer:.4f}%",
      unit="%", rel_tol=0.005,
      hint="PEFT's 'all params' counts the model after injection: the adapter is in the denominator."),
    Q("percent_of_weight", "counting", draw_layer,
      "{model}: `{module}` is {in_features}→{out_features}. A rank-{r} pair adds what percentage of that layer's "
      "frozen weight count?",
      lambda p: {"answer": 100 * p["r"] * (p["in_features"] + p["out_features"])
                 / (p["in_features"] * p["out_features"])},
      "r·(in+out) / (in·out) · 100 = {r}·({in_features}+{out_features}) / ({in_features}·{out_features}) · 100 "
      "= {answer:.4f}%", unit="%", rel_tol=0.005),
    Q("break_even_rank", "counting", draw_layer_shape,
      "{model}: `{module}` is {in_features}→{out_features}. From which rank r does a LoRA pair hold at least as "
      "many parameters as the full weight?",
      lambda p: {"answer": math.ceil(p["in_features"] * p["out_features"] / (p["in_features"] + p["out_features"])),
                 "bound": p["in_features"] * p["out_features"] / (p["in_features"] + p["out_features"])},
      "r·(in+out) ≥ in·out ⇔ r ≥ in·out/(in+out) = {bound:.2f}, so r = {answer}"),
    Q("delta_rank", "theory", draw_layer,
      "{model}: rank-{r} LoRA on `{module}` ({in_features}→{out_features}). At most what rank can "
      "ΔW = (α/r)·B·A have?",
      lambda p: {"answer": p["r"], "limit": min(p["in_features"], p["out_features"])},
      "rank(B·A) ≤ min(rank B, rank A) ≤ r = {r} (and r ≤ min(in, out) = {limit})"),
    Q("scaling", "scaling", draw_scale,
      "r={r}, lora_alpha={lora_alpha}, use_rslora=False. By what factor is B·A multiplied before it is added to W?",
      lambda p: {"answer": LoraConfig(r=p["r"], lora_alpha=p["lora_alpha"]).scaling},
      "α/r = {lora_alpha}/{r} = {answer:.4g}", rel_tol=0.005,
      hint="rsLoRA would use α/√r; plain LoRA divides by r."),
    Q("rslora_scaling", "scaling", draw_scale,
      "r={r}, lora_alpha={lora_alpha}, use_rslora=True. What is the scale on B·A?",
      lambda p: {"answer": LoraConfig(r=p["r"], lora_alpha=p["lora_alpha"], use_rslora=True).scaling},
      "α/√r = {lora_alpha}/√{r} = {answer:.4g}", rel_tol=0.005,
      hint="rsLoRA divides by √r, not r, so the update does not shrink as r grows."),
    Q("dropout_scale", "init & dropout", lambda rng: dict(p=rng.choice(DROPOUT_PS)),
      "lora_dropout={p}, train mode. By what factor are the entries of x that survive dropout scaled on their way "
      "into lora_A?", solve_dropout_scale,
      "inverted dropout keeps E[x]: 1/(1−p) = 1/(1−{p}) = {answer:.4g} (measured by a hook: {measured:.4g})",
      unit="×", rel_tol=0.005, hint="The scaling happens in training, so that eval mode (no dropout) needs none."),
    Q("nf4_bits", "quantization", lambda rng: dict(block_size=rng.choice(NF4_BLOCKS), double_quant=rng.random() < 0.5),
      "NF4 with blocks of {block_size} and double quantization {switch}. How many bits per weight, counting the "
      "block constants?", solve_nf4_bits, "{sum} = {answer:.4f}", unit="bits", rel_tol=0.002,
      hint="Each block stores an fp32 absmax (32 bits); double quantization stores it in 8 bits plus one fp32 "
           "constant per 256 blocks."),
    Q("optimizer_memory", "memory",
      lambda rng: dict(model=rng.choice(available_configs()), method=rng.choice(("full", "lora")),
                       r=rng.choice(RANKS[2:]), precision=rng.choice(memory.OPTIMIZER_PRECISIONS)),
      "{model}, {what}. How much memory do {part} take, in {unit} (2^{power} bytes)?",
      solve_optimizer_memory, "{sum} = {answer:.4g} {unit}", rel_tol=0.02,
      hint="torch.optim.AdamW keeps m and v in each parameter's own dtype: bf16 weights get bf16 moments "
           "(2 + 2 + 2·2 = 8 B per parameter). fp32 moments make it 12 B, fp32 master weights on top 16 B."),
    Q("weight_memory", "memory",
      draw_weight_setup,
      "{model}: how many GiB do the weights take {what}?", solve_weight_memory,
      "{sum} → {bytes:,} B = {answer:.4g} GiB", unit="GiB", rel_tol=0.02,
      hint="NF4 packs two weights per byte; embeddings, norms and the output layer stay 16-bit."),
    Q("adapter_file", "memory", draw_targets,
      "{model}, LoRA r={r} on {label}, saved in fp32. About how big is adapter_model.safetensors, in MiB?",
      solve_adapter_file,
      "4 bytes per trainable parameter: {trainable:,}·4 = {bytes:,} B = {answer:.4g} MiB (plus a small header)",
      unit="MiB", rel_tol=0.02),
)
NUMERIC_BY_KIND = by_kind(NUMERIC)
