"""One fine-tune of the replays: a RunSpec in, its measurements (and the trained update) out, cached per Lab.

    lab = Lab.open(scale=QUICK)                       # loads SmolLM2-135M-Instruct once, builds the task
    run = lab.run(RunSpec(targets=("q_proj", "v_proj"), r=8))
    run.summary["final"]["bleu"], run.deltas["model.layers.15.self_attn.q_proj"]   # ΔW as (out, in)

Every replay is a set of such runs. A LoRA run injects into a copy of the frozen base that shares its
weights (`lc.shared_base_copy`), a full fine-tune trains a deep copy; both use the same Trainer, data order and
evaluation, so they differ only in what trains. A Lab caches finished runs by spec, so replays that need the same
run (the rank sweep's r=8 and r=64 adapters feed the subspace and amplification replays) train it once.
"""

from __future__ import annotations

import copy
import math
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace

import sacrebleu
import torch
import torch.nn as nn

from ..config import LoraConfig
from ..inject import inject_lora, lora_layers, trainable_parameters
from ..models import load_model
from ..sharing import shared_base_copy
from ..training import metrics
from ..training.data import general_english
from ..training.trainer import TrainConfig, Trainer, TrainingDiverged
from .e2e import Task, make_task
from .run_cache import RunCache

MODEL = "smollm2-135m"
KINDS = ("lora", "full")
# The linear layers whose update the analyses read (SmolLM2 / Llama names).
ANALYSED = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


@dataclass(frozen=True)
class Scale:
    """How big a replay is: `full` ships in results/, `quick` runs in CI and live on the page."""

    name: str
    steps: int                 # optimizer steps of a sweep run
    curve_steps: int           # optimizer steps of a run with a learning curve (forgetting)
    eval_every: int            # a curve's evaluation interval
    seeds: int                 # seeds where the paper's differences are small
    batch_size: int = 8
    seq_len: int = 64          # every generated pair fits (the longest is ~55 SmolLM2 tokens)
    n_loss: int = 64           # test pairs scored for held-out loss
    n_bleu: int = 24           # test inputs decoded for BLEU (greedy), against all their references
    max_new_tokens: int = 40


FULL = Scale("full", steps=20, curve_steps=40, eval_every=8, seeds=3)
QUICK = Scale("quick", steps=6, curve_steps=8, eval_every=4, seeds=1, n_loss=24, n_bleu=8)
SCALES = {s.name: s for s in (FULL, QUICK)}


@dataclass(frozen=True)
class RunSpec:
    """One fine-tune. `targets` and `r` only matter for LoRA; `curve` evaluates every scale.eval_every steps."""

    kind: str = "lora"
    targets: tuple[str, ...] = ("q_proj", "v_proj")
    r: int = 8
    lora_alpha: float = 16
    lr: float = 2e-3
    seed: int = 0
    curve: bool = False

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"kind={self.kind!r} is not allowed: use one of {KINDS}")
        if isinstance(self.targets, str):
            object.__setattr__(self, "targets", (self.targets,))

    @property
    def label(self) -> str:
        if self.kind == "full":
            return f"full fine-tuning, lr {self.lr:g}"
        return f"LoRA {'+'.join(t.removesuffix('_proj') for t in self.targets)} r={self.r}, lr {self.lr:g}"


@dataclass
class Run:
    """A finished run: `summary` is JSON-ready; `deltas` (ΔW as (out, in), fp32) and `factors` stay in memory."""

    spec: RunSpec
    summary: dict
    deltas: dict[str, torch.Tensor] = field(repr=False, default_factory=dict)
    factors: dict[str, tuple[torch.Tensor, torch.Tensor]] = field(repr=False, default_factory=dict)
    model: nn.Module | None = field(repr=False, default=None)


def multi_bleu(predictions: list[str], references: list[list[str]]) -> float:
    """Corpus BLEU (sacrebleu, 0-100) against several references per input, as E2E scores it."""
    if len(predictions) != len(references) or not predictions:
        raise ValueError(f"predictions ({len(predictions)}) and references ({len(references)}) must be non-empty "
                         "lists of one length")
    if any(not refs for refs in references):
        raise ValueError("references holds an empty list: every input needs at least one reference")
    width = max(len(refs) for refs in references)
    # sacrebleu wants one stream per reference slot; an input with fewer references repeats its first
    streams = [[refs[k] if k < len(refs) else refs[0] for refs in references] for k in range(width)]
    return sacrebleu.corpus_bleu(predictions, streams).score


def spread(values: list[float]) -> dict:
    """Mean, sample standard deviation (0 for one value), min and max of per-seed numbers."""
    finite = [v for v in values if v is not None and math.isfinite(v)]
    if not finite:
        return {"mean": None, "std": None, "min": None, "max": None, "n": 0}
    return {"mean": statistics.fmean(finite), "std": statistics.stdev(finite) if len(finite) > 1 else 0.0,
            "min": min(finite), "max": max(finite), "n": len(finite)}


class Lab:
    """The frozen base, the task and the scale that every run of a replay shares, with the run cache."""

    def __init__(self, base: nn.Module, tokenizer, task: Task, scale: Scale, device: str = "cpu",
                 log: Callable[[str], None] | None = None, cache: RunCache | None = None):
        self.base, self.tokenizer, self.task, self.scale, self.device = base, tokenizer, task, scale, device
        self.cache, self.cache_hits = cache, 0
        self.log = log or (lambda message: None)
        self.english = general_english()
        self._runs: dict[RunSpec, Run] = {}
        self._base_scores: dict | None = None
        self._modules = dict(base.named_modules())

    @classmethod
    def open(cls, scale: Scale = QUICK, device: str = "cpu", task_seed: int = 0,
             log: Callable[[str], None] | None = None, cache_dir: str | None = None) -> Lab:
        """Load SmolLM2-135M-Instruct (offline) on `device`, frozen, and generate the task; `cache_dir` keeps
        finished LoRA runs on disk so that a stopped replay resumes (run_cache.py)."""
        base, tokenizer = load_model(MODEL, device=device)
        for p in base.parameters():
            p.requires_grad_(False)
        cache = RunCache(cache_dir, scale, device, MODEL) if cache_dir else None
        return cls(base, tokenizer, make_task(task_seed), scale, device, log, cache)

    # --- evaluation ------------------------------------------------------------------------------
    def evaluate(self, model: nn.Module) -> dict:
        """Held-out completion loss, multi-reference BLEU, and the perplexity of unrelated English (forgetting)."""
        s, test = self.scale, self.task.dataset.test
        loss, _ = metrics.completion_loss(model, self.tokenizer, test[:s.n_loss], s.seq_len, 16)
        prompts = [p for p, _ in test[:s.n_bleu]]
        predictions = metrics.generate(model, self.tokenizer, prompts, s.max_new_tokens, batch_size=64)
        return {"test_loss": loss, "bleu": multi_bleu(predictions, self.task.references[:s.n_bleu]),
                "english_ppl": metrics.perplexity(model, self.tokenizer, self.english),
                "example": {"input": prompts[0], "output": predictions[0]}}

    # --- runs ------------------------------------------------------------------------------------
    def run(self, spec: RunSpec, keep_model: bool = False) -> Run:
        """Train `spec` (or return it from the cache) and evaluate it; keep_model keeps the trained model."""
        cached = self._runs.get(spec)
        if cached is not None and (cached.model is not None or not keep_model):
            return cached
        if not keep_model and self.cache is not None and (saved := self.cache.load(spec)) is not None:
            summary, factors = saved
            deltas = {name: (B @ A) * (spec.lora_alpha / spec.r) for name, (B, A) in factors.items()}
            self.cache_hits += 1
            self.log(f"  {spec.label}, seed {spec.seed}: from the run cache (trained earlier in "
                     f"{summary['seconds']:.0f} s; held-out loss {summary['final']['test_loss']:.3f})")
            self._runs[spec] = Run(spec, summary, deltas, factors)
            return self._runs[spec]
        s = self.scale
        steps = s.curve_steps if spec.curve else s.steps
        if spec.kind == "lora":
            model = shared_base_copy(self.base)
            inject_lora(model, LoraConfig(r=spec.r, lora_alpha=spec.lora_alpha, target_modules=list(spec.targets),
                                          init_lora_weights=True), generator=torch.Generator().manual_seed(spec.seed))
        else:
            model = copy.deepcopy(self.base)
            for p in model.parameters():
                p.requires_grad_(True)
        trainable, total = trainable_parameters(model)
        cfg = TrainConfig(lr=spec.lr, steps=steps, batch_size=s.batch_size, seq_len=s.seq_len, seed=spec.seed,
                          log_every=1)
        trainer = Trainer(model, self.tokenizer, self.task.dataset, cfg, full_finetune=spec.kind == "full")
        start, curve, diverged = time.perf_counter(), [], None
        if spec.curve:
            curve.append({"step": 0, **self._scores(model)})
        try:
            for step in range(1, steps + 1):
                trainer.step()
                if spec.curve and (step % s.eval_every == 0 or step == steps):
                    curve.append({"step": step, **self._scores(model)})
        except TrainingDiverged as e:
            diverged = e.reason
        final = curve[-1] if curve and curve[-1]["step"] == trainer.step_count else {
            "step": trainer.step_count, **self._scores(model)}
        summary = {"spec": {**asdict(spec), "targets": list(spec.targets)}, "label": spec.label,
                   "trainable": trainable, "total": total,
                   "steps": trainer.step_count, "train_loss": [m["loss"] for m in trainer.history],
                   "final": final, "curve": curve, "diverged": diverged,
                   "seconds": time.perf_counter() - start}
        self.log(f"  {spec.label}, seed {spec.seed}: {summary['steps']} steps, held-out loss "
                 f"{final['test_loss']:.3f}, BLEU {final['bleu']:.1f} ({summary['seconds']:.0f} s)")
        run = Run(spec, summary, *self._updates(model, spec), model=model if keep_model else None)
        if self.cache is not None:
            self.cache.save(spec, summary, run.factors)
        self._runs[spec] = run
        return run

    def _scores(self, model: nn.Module) -> dict:
        scores = self.evaluate(model)
        scores.pop("example")
        return scores

    def scores(self, model: nn.Module) -> dict:
        """Held-out loss, BLEU and English perplexity of any model (e.g. an adapter after intruder reduction)."""
        return self._scores(model)

    def base_scores(self) -> dict:
        """The untouched base model's scores: where every run starts (computed once per Lab)."""
        if self._base_scores is None:
            self._base_scores = self._scores(self.base)
        return self._base_scores

    def rebuild(self, run: Run) -> nn.Module:
        """A fresh model carrying `run`'s trained LoRA factors (on a copy sharing the frozen base)."""
        spec = run.spec
        if spec.kind != "lora":
            raise ValueError(f"run {spec.label!r} is a full fine-tune: only LoRA runs can be rebuilt from factors")
        model = shared_base_copy(self.base)
        inject_lora(model, LoraConfig(r=spec.r, lora_alpha=spec.lora_alpha, target_modules=list(spec.targets)),
                    generator=torch.Generator().manual_seed(spec.seed))
        with torch.no_grad():
            for name, layer in lora_layers(model):
                B, A = run.factors[name]
                adapter = layer.adapter()
                adapter.B.copy_(B.view_as(adapter.B))
                adapter.A.copy_(A.view_as(adapter.A))
        return model

    @property
    def blocks(self) -> int:
        """How many transformer blocks the base has (30 for SmolLM2-135M)."""
        return self.base.config.num_hidden_layers

    def features(self, name: str) -> int:
        """in + out of the linear layer `name`: its LoRA pair's parameters per unit of r."""
        module = self._modules[name]
        return module.in_features + module.out_features

    def _updates(self, model: nn.Module, spec: RunSpec) -> tuple[dict, dict]:
        """ΔW (out, in) per analysed layer, and for LoRA the factors (B, A), copied to the CPU."""
        deltas, factors = {}, {}
        if spec.kind == "lora":
            for name, layer in lora_layers(model):
                B, A = (f.detach().float().cpu().clone() for f in layer.factors())
                factors[name] = (B, A)
                deltas[name] = (B @ A) * layer.adapter().scaling        # (out, r) @ (r, in) -> (out, in)
            return deltas, factors
        base = self._modules
        for name, module in model.named_modules():
            if name.rsplit(".", 1)[-1] in ANALYSED and isinstance(module, nn.Linear):
                deltas[name] = (module.weight.detach().float() - base[name].weight.detach().float()).cpu()
        return deltas, factors

    def weight(self, name: str) -> torch.Tensor:
        """The frozen base's W (out, in) of the linear layer `name`, fp32 on the CPU."""
        return self._modules[name].weight.detach().float().cpu()

    def seeds(self, n: int | None = None) -> list[int]:
        """Seeds 0..n-1 (n = the scale's seeds by default)."""
        return list(range(n if n is not None else self.scale.seeds))

    def sweep(self, specs: list[RunSpec]) -> list[Run]:
        return [self.run(spec) for spec in specs]

    def with_seed(self, spec: RunSpec, seed: int) -> RunSpec:
        return replace(spec, seed=seed)
