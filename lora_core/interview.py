"""Interview prep: a LoRA question bank as data, randomised numeric questions, and answer checking.

    from lora_core import interview
    q = interview.make_question("model_trainable", rng=7)   # a random model, targets and r
    print(q.text)
    v = interview.check_answer(q, "147,456")                 # Verdict(correct, expected, explanation)
    interview.question_bank()                                # every question, answers computed

Numeric questions draw real shapes (lc.available_configs(), built on the meta device) and compute
the answer with the library itself: the ledger, the memory estimator, the NF4 bit count. Answers are
read leniently (commas, spaces, '%', 'k'/'M', simple fractions like 16/64), compared exactly for
parameter counts and with a relative tolerance elsewhere; a wrong answer gets the formula back with
the numbers plugged in. Conceptual questions live in `interview_concepts.py`: a model answer, key
ideas a written answer should mention, and live evidence.
"""

from __future__ import annotations

import functools
import math
import random
import re
from collections.abc import Callable
from dataclasses import dataclass, field

from . import anatomy, memory, quant
from .config import LoraConfig
from .counting import Ledger, count_lora_parameters
from .evidence import Evidence, one_thread
from .models import available_configs, load_config

RANKS = (1, 2, 4, 8, 16, 32, 64)
ALPHAS = (8, 16, 32, 64, 128)
# Topics in the order a page lists them.
TOPICS = ("counting", "scaling", "init & dropout", "merging & serving", "architecture", "quantization", "memory",
          "speed", "theory", "variants")
# Every numeric kind and its topic; the builders below draw and compute each one.
NUMERIC_TOPICS = {
    "layer_params": "counting", "model_trainable": "counting", "trainable_percent": "counting",
    "percent_of_weight": "counting", "break_even_rank": "counting", "delta_rank": "theory",
    "scaling": "scaling", "rslora_scaling": "scaling", "dropout_scale": "init & dropout",
    "nf4_bits": "quantization", "optimizer_memory": "memory", "weight_memory": "memory", "adapter_file": "memory",
}


@dataclass(frozen=True)
class Question:
    """One interview question, its computed answer, and how to explain it."""

    kind: str
    topic: str
    text: str
    expected: float | None = None   # the numeric answer (None: a conceptual question)
    unit: str = ""                  # "", "%", "GiB", "MiB", "bits", "×"
    rel_tol: float = 0.0            # 0: the answer must be exact (parameter counts)
    formula: str = ""               # how the answer is computed, numbers plugged in
    answer: str = ""                # a model answer in words
    hint: str = ""                  # the usual mistake, shown with a wrong answer
    key_ideas: tuple[tuple[str, tuple[str, ...]], ...] = ()  # conceptual: (idea, accepted words)
    params: dict = field(default_factory=dict, compare=False)  # what was drawn: model, shapes, r, ...
    evidence: Evidence | None = field(default=None, compare=False)

    @property
    def numeric(self) -> bool:
        return self.expected is not None

    @property
    def expected_text(self) -> str:
        return format_value(self.expected, self.unit) if self.numeric else self.answer


@dataclass(frozen=True)
class Verdict:
    """The result of checking an answer: accepted or not, the expected answer, and why."""

    correct: bool
    expected: str
    explanation: str


# --- reading and writing numbers ---------------------------------------------------------------------
_NUMBER = re.compile(r"^([-+]?(?:\d+\.?\d*|\.\d+)(?:e[-+]?\d+)?)(?:/((?:\d+\.?\d*|\.\d+)))?(k|m|b|bn)?$")
_SUFFIX = {"k": 1e3, "m": 1e6, "b": 1e9, "bn": 1e9}
_UNIT_WORDS = ("gib", "mib", "gb", "mb", "bits", "bit", "params", "parameters", "x", "×")


@dataclass(frozen=True)
class ParsedNumber:
    value: float
    percent: bool    # the text had a '%'
    decimals: int    # digits after the decimal point, as typed
    significant: int


def parse_number(text: str) -> ParsedNumber | None:
    """Read '147,456', '147 456', '0.18%', '1.5k', '16/64', '≈ 2.83' or '3.6 GiB'; None if it is not a number."""
    t = str(text).strip().lower().replace("\u2009", "").replace("\u202f", "").replace("_", "")
    t = re.sub(r"^(about|approx\.?|approximately|~|≈)\s*", "", t)
    percent = "%" in t
    t = t.replace("%", "").replace(",", "").replace(" ", "").replace("'", "")
    for word in _UNIT_WORDS:
        if t.endswith(word) and len(t) > len(word):
            t = t[: -len(word)]
            break
    m = _NUMBER.match(t)
    if not m:
        return None
    num, den, suffix = m.groups()
    value = float(num) / (float(den) if den else 1.0) * _SUFFIX.get(suffix or "", 1.0)
    if not math.isfinite(value):
        return None
    mantissa = num.split("e")[0].lstrip("+-")
    decimals = len(mantissa.split(".")[1]) if "." in mantissa and not den and not suffix else 0
    significant = len(mantissa.replace(".", "").lstrip("0")) or 1
    return ParsedNumber(value, percent, decimals, significant)


def format_value(value: float, unit: str = "") -> str:
    """How an expected answer is shown: exact counts with commas, the rest to 4 significant digits."""
    if unit == "%":
        return f"{value:.4f}%"
    if float(value).is_integer() and abs(value) >= 1 and unit == "":
        return f"{int(value):,}"
    return f"{value:.4g}" + ("×" if unit == "×" else f" {unit}" if unit else "")


def _close(got: ParsedNumber, value: float, q: Question) -> bool:
    if q.rel_tol == 0:
        return got.value == q.expected
    if math.isclose(value, q.expected, rel_tol=q.rel_tol, abs_tol=1e-12):
        return True
    # A rounded answer is right if the expected value rounds to it at the precision typed (≥ 2 digits).
    return got.significant >= 2 and abs(value - q.expected) <= 0.5 * 10 ** -got.decimals


def check_answer(question: Question, text: str) -> Verdict:
    """Accept or explain. Numbers are read leniently; a conceptual answer is checked for its key ideas."""
    if not question.numeric:
        return _check_concept(question, text)
    expected = question.expected_text
    got = parse_number(text)
    if got is None:
        return Verdict(False, expected, f"Could not read a number from {text!r}. Write it like 147456, "
                                        f"147,456, 0.18%, 1.5M or 16/64. The answer: {question.formula}.")
    # Without a '%', a percentage question also accepts the fraction (0.0018 for 0.18%).
    candidates = [got.value] if got.percent or question.unit != "%" else [got.value, 100 * got.value]
    if any(_close(got, c, question) for c in candidates):
        return Verdict(True, expected, f"Correct. {question.formula}.")
    hint = f" {question.hint}" if question.hint else ""
    return Verdict(False, expected, f"Not quite: the answer is {expected}. {question.formula}.{hint}")


def _check_concept(question: Question, text: str) -> Verdict:
    said = str(text).lower()
    missing = [idea for idea, words in question.key_ideas if not any(w in said for w in words)]
    if not said.strip():
        missing = [idea for idea, _ in question.key_ideas]
    if not missing:
        return Verdict(True, question.answer, "Your answer names every key idea. The model answer: " + question.answer)
    return Verdict(False, question.answer, f"Missing: {'; '.join(missing)}. The model answer: {question.answer}")


# --- shapes to draw from -----------------------------------------------------------------------------
@functools.lru_cache(maxsize=16)
def _layer_rows(model: str) -> tuple:
    """Every Linear/Conv1D kind of `model` except the output layer, from an all-linear ledger at r=1."""
    return tuple(count_lora_parameters(model, LoraConfig(r=1, target_modules="all-linear")).rows)


@functools.lru_cache(maxsize=128)
def _ledger(model: str, r: int, targets: tuple[str, ...] | str | None) -> Ledger:
    t = list(targets) if isinstance(targets, tuple) else targets
    return count_lora_parameters(model, LoraConfig(r=r, target_modules=t))


def _rng(rng: random.Random | int | None) -> random.Random:
    return rng if isinstance(rng, random.Random) else random.Random(rng)


def _pick_layer(rng: random.Random) -> tuple[str, str, int, int, int]:
    """(model, module kind, in, out, r) with r ≤ min(in, out)."""
    model = rng.choice(available_configs())
    row = rng.choice(_layer_rows(model))
    r = rng.choice([r for r in RANKS if r <= min(row.in_features, row.out_features)])
    return model, row.module, row.in_features, row.out_features, r


def _pick_targets(rng: random.Random) -> tuple[str, str, tuple[str, ...] | str | None, int]:
    model = rng.choice(available_configs())
    sets = anatomy.standard_target_sets(load_config(model).model_type)
    label = rng.choice(list(sets))
    targets = sets[label]
    return model, label, tuple(targets) if isinstance(targets, list) else targets, rng.choice(RANKS)


def _q(kind: str, text: str, expected: float, unit: str = "", rel_tol: float = 0.0, **kw) -> Question:
    return Question(kind, NUMERIC_TOPICS[kind], text, expected, unit, rel_tol, **kw)


def _ledger_formula(book: Ledger) -> str:
    terms = " + ".join(f"{row.count}·{row.r}·({row.in_features}+{row.out_features})" for row in book.rows)
    return f"Σ count·r·(in+out) = {terms} = {book.lora_params:,}"


# --- numeric question builders ---------------------------------------------------------------------------
def _layer_params(rng: random.Random) -> Question:
    model, module, i, o, r = _pick_layer(rng)
    n = r * (i + o)
    return _q("layer_params",
              f"{model}: a rank-{r} LoRA pair on `{module}` ({i}→{o}). How many trainable parameters do A and B "
              "add to one such layer?", n,
              formula=f"A is r×in and B is out×r: r·(in+out) = {r}·({i}+{o}) = {n:,}",
              hint="Not in·out: that is the frozen weight. Not 2·r·in unless in = out.",
              params=dict(model=model, module=module, in_features=i, out_features=o, r=r))


def _model_trainable(rng: random.Random) -> Question:
    model, label, targets, r = _pick_targets(rng)
    book = _ledger(model, r, targets)
    return _q("model_trainable",
              f"{model}, LoRA at r={r} on {label} (bias='none'). How many trainable parameters does PEFT report?",
              book.trainable, formula=_ledger_formula(book),
              hint="Every layer gets its own pair, and a name like c_proj matches every module ending in it.",
              params=dict(model=model, targets=targets, r=r),
              evidence=Evidence(table=book.records(), code=book.peft_line))


def _trainable_percent(rng: random.Random) -> Question:
    model, label, targets, r = _pick_targets(rng)
    book = _ledger(model, r, targets)
    return _q("trainable_percent", f"{model}, LoRA at r={r} on {label}. What trainable% does PEFT print?",
              book.trainable_percent, "%", 0.005,
              formula=f"trainable / all params · 100 = {book.trainable:,} / ({book.base_total:,} + "
                      f"{book.trainable:,}) · 100 = {book.trainable_percent:.4f}%",
              hint="PEFT's 'all params' counts the model after injection: the adapter is in the denominator.",
              params=dict(model=model, targets=targets, r=r), evidence=Evidence(code=book.peft_line))


def _percent_of_weight(rng: random.Random) -> Question:
    model, module, i, o, r = _pick_layer(rng)
    pct = 100 * r * (i + o) / (i * o)
    return _q("percent_of_weight",
              f"{model}: `{module}` is {i}→{o}. A rank-{r} pair adds what percentage of that layer's frozen "
              "weight count?", pct, "%", 0.005,
              formula=f"r·(in+out) / (in·out) · 100 = {r}·({i}+{o}) / ({i}·{o}) · 100 = {pct:.4f}%",
              params=dict(model=model, module=module, in_features=i, out_features=o, r=r))


def _break_even_rank(rng: random.Random) -> Question:
    model, module, i, o, _ = _pick_layer(rng)
    r = math.ceil(i * o / (i + o))
    return _q("break_even_rank",
              f"{model}: `{module}` is {i}→{o}. From which rank r does a LoRA pair hold at least as many "
              "parameters as the full weight?", r,
              formula=f"r·(in+out) ≥ in·out ⇔ r ≥ in·out/(in+out) = {i * o / (i + o):.2f}, so r = {r}",
              params=dict(model=model, module=module, in_features=i, out_features=o))


def _delta_rank(rng: random.Random) -> Question:
    model, module, i, o, r = _pick_layer(rng)
    return _q("delta_rank",
              f"{model}: rank-{r} LoRA on `{module}` ({i}→{o}). At most what rank can ΔW = (α/r)·B·A have?", r,
              formula=f"rank(B·A) ≤ min(rank B, rank A) ≤ r = {r} (and r ≤ min(in, out) = {min(i, o)})",
              params=dict(model=model, module=module, in_features=i, out_features=o, r=r))


def _scaling(rng: random.Random) -> Question:
    r, alpha = rng.choice((*RANKS[2:], 128, 256)), rng.choice(ALPHAS)
    s = LoraConfig(r=r, lora_alpha=alpha).scaling
    return _q("scaling",
              f"r={r}, lora_alpha={alpha}, use_rslora=False. By what factor is B·A multiplied before it is added "
              "to W?", s, rel_tol=0.005, formula=f"α/r = {alpha}/{r} = {s:.4g}",
              hint="rsLoRA would use α/√r; plain LoRA divides by r.", params=dict(r=r, lora_alpha=alpha))


def _rslora_scaling(rng: random.Random) -> Question:
    r, alpha = rng.choice((*RANKS[2:], 128, 256)), rng.choice(ALPHAS)
    s = LoraConfig(r=r, lora_alpha=alpha, use_rslora=True).scaling
    return _q("rslora_scaling", f"r={r}, lora_alpha={alpha}, use_rslora=True. What is the scale on B·A?", s,
              rel_tol=0.005, formula=f"α/√r = {alpha}/√{r} = {s:.4g}",
              hint="rsLoRA divides by √r, not r, so the update does not shrink as r grows.",
              params=dict(r=r, lora_alpha=alpha))


def _dropout_scale(rng: random.Random) -> Question:
    p = rng.choice((0.05, 0.1, 0.2, 0.25, 0.5))
    trace = anatomy.trace_dropout(in_features=32, out_features=32, r=2, p=p, tokens=64)
    s = 1 / (1 - p)
    return _q("dropout_scale",
              f"lora_dropout={p}, train mode. By what factor are the entries of x that survive dropout scaled "
              "on their way into lora_A?", s, "×", 0.005,
              formula=f"inverted dropout keeps E[x]: 1/(1−p) = 1/(1−{p}) = {s:.4g} "
                      f"(measured by a hook: {trace['kept_scale']:.4g})",
              hint="The scaling happens in training, so that eval mode (no dropout) needs none.", params=dict(p=p))


def _nf4_bits(rng: random.Random) -> Question:
    block, dq = rng.choice((32, 64, 128, 256)), rng.random() < 0.5
    bits = 4 + quant.constant_bits_per_param(block, dq)
    how = f"4 + 8/{block} + 32/({block}·256)" if dq else f"4 + 32/{block}"
    return _q("nf4_bits",
              f"NF4 with blocks of {block} and double quantization {'on' if dq else 'off'}. How many bits per "
              "weight, counting the block constants?", bits, "bits", 0.002, formula=f"{how} = {bits:.4f}",
              hint="Each block stores an fp32 absmax (32 bits); double quantization stores it in 8 bits plus one "
                   "fp32 constant per 256 blocks.", params=dict(block_size=block, double_quant=dq))


def _estimate(model: str, method: str, **kw) -> memory.MemoryEstimate:
    return memory.estimate_memory(memory.MemoryConfig(model=model, method=method, **kw))


def _optimizer_memory(rng: random.Random) -> Question:
    model, method = rng.choice(available_configs()), rng.choice(("full", "lora"))
    r = rng.choice(RANKS[2:])
    est = _estimate(model, method, r=r, optimizer="adamw")
    unit, scale = ("GiB", 2**30) if method == "full" else ("MiB", 2**20)
    what = "full fine-tuning" if method == "full" else f"LoRA r={r} on PEFT's default targets"
    return _q("optimizer_memory",
              f"{model}, {what}, AdamW. How much memory do the optimizer states take, in {unit} "
              f"(2^{int(math.log2(scale))} bytes)?", est.optimizer / scale, unit, 0.02,
              formula=f"two fp32 moments per trainable parameter: T·8 B = {est.trainable_params:,}·8 = "
                      f"{est.optimizer:,} B = {est.optimizer / scale:.4g} {unit}",
              hint="AdamW keeps m and v in fp32 for every trainable parameter, whatever the weight dtype.",
              params=dict(model=model, method=method, r=r))


def _weight_memory(rng: random.Random) -> Question:
    model = rng.choice(available_configs())
    method, dtype = rng.choice((("full", "fp32"), ("full", "bf16"), ("qlora", "bf16")))
    est = _estimate(model, method, weight_dtype=dtype, double_quant=False)
    gib = memory.gib(est.weights)
    what = f"in {dtype}" if method == "full" else "for QLoRA (NF4 base, bf16 rest, r=8 adapter in fp32)"
    return _q("weight_memory", f"{model}: how many GiB do the weights take {what}?", gib, "GiB", 0.02,
              formula=f"{est.formulas['weights']} → {est.weights:,} B = {gib:.4g} GiB",
              hint="NF4 packs two weights per byte; embeddings, norms and the output layer stay 16-bit.",
              params=dict(model=model, method=method, weight_dtype=dtype))


def _adapter_file(rng: random.Random) -> Question:
    model, label, targets, r = _pick_targets(rng)
    book = _ledger(model, r, targets)
    mib = 4 * book.trainable / 2**20
    return _q("adapter_file",
              f"{model}, LoRA r={r} on {label}, saved in fp32. About how big is adapter_model.safetensors, in MiB?",
              mib, "MiB", 0.02,
              formula=f"4 bytes per trainable parameter: {book.trainable:,}·4 = {4 * book.trainable:,} B = "
                      f"{mib:.4g} MiB (plus a small header)", params=dict(model=model, targets=targets, r=r))


NUMERIC: dict[str, Callable[[random.Random], Question]] = {
    "layer_params": _layer_params, "model_trainable": _model_trainable, "trainable_percent": _trainable_percent,
    "percent_of_weight": _percent_of_weight, "break_even_rank": _break_even_rank, "delta_rank": _delta_rank,
    "scaling": _scaling, "rslora_scaling": _rslora_scaling, "dropout_scale": _dropout_scale,
    "nf4_bits": _nf4_bits, "optimizer_memory": _optimizer_memory, "weight_memory": _weight_memory,
    "adapter_file": _adapter_file,
}


# --- the bank ------------------------------------------------------------------------------------------------
def kinds(topic: str | None = None) -> list[str]:
    """Question kinds, numeric first; only those of `topic` if given."""
    every = NUMERIC_TOPICS | {k: c.topic for k, c in _concepts().items()}
    return [k for k, t in every.items() if topic is None or t == topic]


def topics() -> list[str]:
    """Every topic that has a question, in TOPICS order."""
    used = {*NUMERIC_TOPICS.values(), *(c.topic for c in _concepts().values())}
    return [t for t in TOPICS if t in used]


def make_question(kind: str, rng: random.Random | int | None = None) -> Question:
    """A question of `kind`. Numeric kinds draw a model, shapes and r from `rng` (a Random or a seed)."""
    concepts = _concepts()
    if kind not in NUMERIC and kind not in concepts:
        raise ValueError(f"kind={kind!r} is not allowed: use one of {', '.join(kinds())}")
    with one_thread:  # the answers are computed on small tensors (see evidence.one_thread)
        return NUMERIC[kind](_rng(rng)) if kind in NUMERIC else concepts[kind].question()


def random_question(topic: str | None = None, rng: random.Random | int | None = None) -> Question:
    """A question of a random kind (within `topic` if given)."""
    rng = _rng(rng)
    pool = kinds(topic)
    if not pool:
        raise ValueError(f"topic={topic!r} is not allowed: use one of {', '.join(topics())}")
    return make_question(rng.choice(pool), rng)


def question_bank(seed: int = 0) -> list[Question]:
    """Every kind once, numeric ones drawn with `seed`: the full bank with computed answers."""
    rng = random.Random(seed)
    return [make_question(k, rng) for k in kinds()]


def evidence_for(question: Question) -> Evidence | None:
    """The live evidence behind an answer (computed on first use, then cached by lora_core)."""
    if question.evidence is not None:
        return question.evidence
    concept = _concepts().get(question.kind)
    if concept is None:
        return None
    with one_thread:
        return concept.evidence()


def _concepts() -> dict:
    from .interview_concepts import CONCEPTS  # imported late: that module imports this one

    return CONCEPTS
