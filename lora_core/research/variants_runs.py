"""The runs behind the Variants study: one fine-tune per variant on the replays' task, with what moved in its weights.

    study = Study.open(QUICK)                                  # SmolLM2-135M-Instruct, frozen, and the E2E-style task
    run = study.train(VariantSpec("dora", lr=2e-3), track=True)
    run["points"][0]    # {"module", "layer", "proj", "step", "dM", "dD"}: DoRA's Figure 2, one matrix, one checkpoint
    study.step0(VariantSpec("pissa", lr=2e-3))["max_logit_change"]   # does the model start where the base was?
    study.cost([VariantSpec("lora", 2e-3), VariantSpec("lorafa", 2e-3)])  # step time and bytes, interleaved

Every variant is trained the way the research replays train (runs.py): the same Trainer, data order, seed,
schedule and held-out loss, on a copy of the frozen base that shares its weights (`lc.shared_base_copy`; a full
fine-tune trains a deep copy). Variants differ only in what they are: DoRA (arXiv 2402.09353) adds a magnitude per
output feature, LoRA+ (arXiv 2402.12354) gives B a learning rate 16x A's, LoRA-FA (arXiv 2308.03303) freezes A,
OLoRA (arXiv 2406.01775) and PiSSA (arXiv 2404.02948) start A and B from W's QR and SVD and train against the residual.

The weight decomposition (DoRA §3.2, eq. 2-4) reads each adapted matrix as the model uses it, W' (out, in), against
the pretrained W0: ΔM = mean over output features of |‖W'_n‖ - ‖W0_n‖|, ΔD = mean of (1 - cos(W'_n, W0_n)), where
row n of torch's (out, in) weight is the paper's column n of its (in, out) W.
"""

from __future__ import annotations

import copy
import math
import re
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F
from transformers.pytorch_utils import Conv1D

from .. import dora
from ..config import LoraConfig
from ..inject import inject_lora, lora_layers, matched_modules, trainable_parameters
from ..layers import LoraLayer
from ..models import load_model
from ..quant.measure import count_step
from ..sharing import shared_base_copy
from ..training import metrics
from ..training.data import collate, encode_pair
from ..training.trainer import TrainConfig, Trainer, TrainingDiverged
from .e2e import Task, make_task
from .runs import MODEL

METHODS = ("full", "lora", "dora", "loraplus", "lorafa", "olora", "pissa")
LABELS = {"full": "full fine-tuning", "lora": "LoRA", "dora": "DoRA", "loraplus": "LoRA+", "lorafa": "LoRA-FA",
          "olora": "OLoRA", "pissa": "PiSSA"}
INITS = {"olora": "olora", "pissa": "pissa"}                      # every other adapter: A Kaiming-uniform, B = 0
OPTIMIZER = {"loraplus": "loraplus", "lorafa": "lorafa"}           # every other method: AdamW


@dataclass(frozen=True)
class Scale:
    """How big the study is: `full` ships in results/variants/, `quick` checks the code in minutes."""

    name: str
    steps: int                 # optimizer steps of every run (one budget for every variant)
    checkpoint_every: int      # ΔM, ΔD and held-out loss every this many steps (and at the last)
    noise_seeds: int           # plain LoRA repeated over this many seeds: the yardstick for a loss difference
    timing_repeats: int        # timed steps per variant in the cost measurement (after one untimed)
    batch_size: int = 8
    seq_len: int = 64          # every generated pair fits (the longest is ~55 SmolLM2 tokens)
    n_loss: int = 64           # test pairs scored for held-out loss (the replays' full scale)


FULL = Scale("full", steps=40, checkpoint_every=10, noise_seeds=3, timing_repeats=5)
QUICK = Scale("quick", steps=4, checkpoint_every=2, noise_seeds=1, timing_repeats=2, n_loss=16)
SCALES = {s.name: s for s in (FULL, QUICK)}


@dataclass(frozen=True)
class VariantSpec:
    """One fine-tune: the method, its (peak) learning rate and seed. LoRA+'s ratio is lr_B / lr_A."""

    method: str
    lr: float
    seed: int = 0
    loraplus_lr_ratio: float = 16.0

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"method={self.method!r} is not allowed: use one of {', '.join(METHODS)}")

    @property
    def label(self) -> str:
        seed = f", seed {self.seed}" if self.seed else ""
        if self.method == "loraplus":
            return f"LoRA+ (ratio {self.loraplus_lr_ratio:g}), lr {self.lr:g}{seed}"
        return f"{LABELS[self.method]}, lr {self.lr:g}{seed}"


# --- the weight decomposition --------------------------------------------------------------------------------------
def out_in(module: nn.Module) -> torch.Tensor:
    """The weight of a Linear or GPT-2 Conv1D as (out, in): Conv1D stores it (in, out)."""
    return module.weight.T if isinstance(module, Conv1D) else module.weight


def effective_weight(layer: LoraLayer) -> torch.Tensor:
    """The weight the LoRA layer computes with now, (out, in), fp32: W + ΔW, or DoRA's m (W + ΔW) / ‖W + ΔW‖.

    W is the layer's own base weight: the pretrained one, or PiSSA's and OLoRA's residual.
    """
    w = layer.original_weight().detach().float()
    w = w.T if layer.fan_in_fan_out else w                             # (out, in)
    a = layer.adapter()
    delta = layer.delta_weight().detach()                              # (out, r) @ (r, in) * scaling -> (out, in)
    if a.magnitude is None:
        return w + delta
    return dora.merged_weight(w, delta, a.magnitude.detach().float())


def magnitude_direction(initial: torch.Tensor, current: torch.Tensor) -> tuple[float, float]:
    """(ΔM, ΔD) of `current` against `initial`, both (out, in): DoRA's eq. 3 and 4 over the output features.

    In float64: after a few dozen steps 1 - cos is ~1e-4, and float32's cosine would keep only a digit or two.
    """
    w0, w1 = initial.double(), current.double()
    dm = (w1.norm(dim=1) - w0.norm(dim=1)).abs().mean()               # (out,) -> mean |Δ‖row‖|
    dd = (1.0 - F.cosine_similarity(w1, w0, dim=1)).mean()            # (out,) -> mean (1 - cos)
    return float(dm), float(dd)


def _layer_index(name: str) -> int:
    found = re.search(r"\.(\d+)\.", name)
    return int(found.group(1)) if found else 0


def fit(points: list[dict]) -> dict:
    """Least-squares line ΔM = slope · ΔD + intercept and Pearson's r over `points`; None where undefined."""
    x, y = [p["dD"] for p in points], [p["dM"] for p in points]
    out = {"n": len(points), "slope": None, "intercept": None, "correlation": None}
    if len(points) < 3 or statistics.pvariance(x) == 0 or statistics.pvariance(y) == 0:
        return out
    line = statistics.linear_regression(x, y)
    return out | {"slope": line.slope, "intercept": line.intercept, "correlation": statistics.correlation(x, y)}


# --- the study -----------------------------------------------------------------------------------------------------
class Study:
    """The frozen base, the task, the adapted modules and their pretrained weights that every run shares."""

    def __init__(self, base: nn.Module, tokenizer, task: Task, scale: Scale, targets: list[str] | None = None,
                 r: int = 8, lora_alpha: float = 16, device: str = "cpu", log: Callable[[str], None] | None = None):
        """`targets` None: PEFT's default for the architecture (q_proj and v_proj on SmolLM2, c_attn on GPT-2)."""
        self.base, self.tokenizer, self.task, self.scale, self.device = base, tokenizer, task, scale, device
        self.targets, self.r, self.lora_alpha = targets, r, lora_alpha
        self.log = log or (lambda message: None)
        self.names = matched_modules(base, LoraConfig(r=r, lora_alpha=lora_alpha, target_modules=targets))
        if not self.names:
            raise ValueError(f"targets={targets!r} match no module of this model: name its linear layers")
        modules = dict(base.named_modules())
        self.initial = {n: out_in(modules[n]).detach().float().cpu().clone() for n in self.names}  # W0, (out, in)
        pairs = task.dataset.test[:8]
        batch = collate([encode_pair(tokenizer, p, c, scale.seq_len) for p, c in pairs], tokenizer.pad_token_id)
        self.probe = {k: batch[k].to(device) for k in ("input_ids", "attention_mask")}  # the step-0 check's inputs

    @classmethod
    def open(cls, scale: Scale = QUICK, device: str = "cpu", log: Callable[[str], None] | None = None) -> Study:
        """SmolLM2-135M-Instruct (offline), frozen, on `device`, with the replays' task (seed 0)."""
        base, tokenizer = load_model(MODEL, device=device)
        base.requires_grad_(False)
        return cls(base, tokenizer, make_task(0), scale, device=device, log=log)

    @property
    def settings(self) -> dict:
        s = self.scale
        adapted = list(dict.fromkeys(n.rsplit(".", 1)[-1] for n in self.names))  # q_proj, v_proj on SmolLM2
        return {"targets": self.targets or adapted, "adapted_matrices": len(self.names),
                "r": self.r, "lora_alpha": self.lora_alpha, "steps": s.steps, "checkpoint_every": s.checkpoint_every,
                "batch_size": s.batch_size, "seq_len": s.seq_len, "test_loss_pairs": s.n_loss,
                "noise_seeds": s.noise_seeds, "timing_repeats": s.timing_repeats, "threads": torch.get_num_threads(),
                "schedule": "10% linear warmup, cosine to 10%", "grad_clip": 1.0}

    def model(self, spec: VariantSpec) -> nn.Module:
        """A fresh model for `spec`: the adapter on a copy sharing the frozen base, or a deep copy to fine-tune."""
        if spec.method == "full":
            return copy.deepcopy(self.base).requires_grad_(True)
        model = shared_base_copy(self.base)
        cfg = LoraConfig(r=self.r, lora_alpha=self.lora_alpha, target_modules=self.targets,
                         init_lora_weights=INITS.get(spec.method, True), use_dora=spec.method == "dora")
        inject_lora(model, cfg, generator=torch.Generator().manual_seed(spec.seed))
        return model

    def trainer(self, spec: VariantSpec, model: nn.Module) -> Trainer:
        s = self.scale
        cfg = TrainConfig(lr=spec.lr, steps=s.steps, batch_size=s.batch_size, seq_len=s.seq_len, seed=spec.seed,
                          optimizer=OPTIMIZER.get(spec.method, "adamw"), loraplus_lr_ratio=spec.loraplus_lr_ratio)
        return Trainer(model, self.tokenizer, self.task.dataset, cfg, full_finetune=spec.method == "full")

    def weights(self, model: nn.Module) -> dict[str, torch.Tensor]:
        """Each adapted matrix as `model` computes with it now, (out, in), fp32 on the CPU."""
        layers = dict(lora_layers(model))
        if layers:
            return {n: effective_weight(layers[n]).cpu() for n in self.names}
        modules = dict(model.named_modules())
        return {n: out_in(modules[n]).detach().float().cpu() for n in self.names}

    def moved(self, model: nn.Module, step: int) -> list[dict]:
        """ΔM and ΔD of every adapted matrix against the pretrained W0, one point each (DoRA's Figure 2)."""
        points = []
        for name, w in self.weights(model).items():
            dm, dd = magnitude_direction(self.initial[name], w)
            points.append({"module": name, "layer": _layer_index(name), "proj": name.rsplit(".", 1)[-1],
                           "step": step, "dM": dm, "dD": dd})
        return points

    def held_out_loss(self, model: nn.Module) -> float:
        test = self.task.dataset.test[:self.scale.n_loss]
        return metrics.completion_loss(model, self.tokenizer, test, self.scale.seq_len, 16)[0]

    def train(self, spec: VariantSpec, track: bool = False) -> dict:
        """Train `spec` for the scale's steps; held-out loss (and with `track`, ΔM/ΔD) at every checkpoint."""
        s, start = self.scale, time.perf_counter()
        model = self.model(spec)
        trainer = self.trainer(spec, model)        # LoRA-FA freezes A here, so count what trains after it
        trainable, total = trainable_parameters(model)
        held_out, points, diverged = [{"step": 0, "loss": self.held_out_loss(model)}], [], None
        try:
            for step in range(1, s.steps + 1):
                trainer.step()
                if step % s.checkpoint_every == 0 or step == s.steps:
                    held_out.append({"step": step, "loss": self.held_out_loss(model)})
                    if track:
                        points += self.moved(model, step)
        except TrainingDiverged as err:
            diverged = err.reason
        run = {"spec": asdict(spec), "method": spec.method, "label": spec.label, "trainable": trainable,
               "total": total, "steps": trainer.step_count, "train_loss": [m["loss"] for m in trainer.history],
               "held_out": held_out, "final_loss": held_out[-1]["loss"], "points": points, "diverged": diverged,
               "seconds": time.perf_counter() - start}
        self.log(f"  {spec.label}: {run['steps']} steps, held-out loss {held_out[0]['loss']:.3f} -> "
                 f"{run['final_loss']:.3f} ({run['seconds']:.0f} s)")
        return run

    @torch.no_grad()
    def step0(self, spec: VariantSpec) -> dict:
        """Where `spec`'s model starts: its largest logit change against the base, and what its init did to W."""
        model = self.model(spec)
        base_logits = self.base(**self.probe).logits.float()           # (B, T, V)
        logits = model(**self.probe).logits.float()
        mask = self.probe["attention_mask"].bool()                     # padding positions say nothing
        layers = dict(lora_layers(model))
        start_error, delta_norms, taken = [], [], []
        for name in self.names:
            w0, layer = self.initial[name], layers[name]
            residual = layer.original_weight().detach().float().cpu()
            residual = residual.T if layer.fan_in_fan_out else residual
            start_error.append(float((effective_weight(layer).cpu() - w0).abs().max()))
            delta_norms.append(float(layer.delta_weight().norm()))
            taken.append(float((w0 - residual).norm()))
        return {"method": spec.method, "label": LABELS[spec.method],
                "max_logit_change": float((logits - base_logits).abs()[mask].max()),
                "max_start_error": max(start_error), "mean_delta_norm": statistics.fmean(delta_norms),
                "mean_taken_from_w": statistics.fmean(taken),
                "mean_w_norm": statistics.fmean(float(w.norm()) for w in self.initial.values())}

    # --- cost ------------------------------------------------------------------------------------------------------
    def _batch(self) -> dict[str, torch.Tensor]:
        pairs = self.task.dataset.train[:self.scale.batch_size]
        batch = collate([encode_pair(self.tokenizer, p, c, self.scale.seq_len) for p, c in pairs],
                        self.tokenizer.pad_token_id)
        return {k: v.to(self.device) for k, v in batch.items()}

    def cost(self, specs: list[VariantSpec]) -> dict:
        """Step time (interleaved, rotating order, median) and counted bytes of one training step per variant.

        A step here is forward, backward and the variant's own optimizer step on one fixed batch: the Trainer's
        bookkeeping (snapshots for divergence, ‖ΔW‖) is left out, since it costs full fine-tuning far more.
        """
        batch = self._batch()
        n_targets = int((batch["labels"][:, 1:] != -100).sum())

        def loss_of(model: nn.Module) -> Callable[[], torch.Tensor]:
            def loss() -> torch.Tensor:
                logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                               use_cache=False).logits                  # (B, T, V)
                return metrics.token_nll(logits, batch["labels"]) / n_targets
            return loss

        def step(model: nn.Module, optimizer: torch.optim.Optimizer) -> float:
            start = time.perf_counter()
            model.train()
            loss_of(model)().backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            if str(self.device).startswith("cuda"):
                torch.cuda.synchronize()  # honest timings: wait for the GPU
            return time.perf_counter() - start

        runners = []
        for spec in specs:
            model = self.model(spec)
            runners.append((spec, model, self.trainer(spec, model).optimizer))
        for _, model, optimizer in runners:                             # one untimed step each
            step(model, optimizer)
        times: dict[str, list[float]] = {spec.label: [] for spec, _, _ in runners}
        for k in range(self.scale.timing_repeats):
            for spec, model, optimizer in runners[k % len(runners):] + runners[:k % len(runners)]:
                times[spec.label].append(step(model, optimizer))
        rows = []
        for spec, model, optimizer in runners:
            counted = count_step(model, optimizer, loss_of(model))
            model.eval()
            rows.append({"method": spec.method, "label": spec.label, "ms": 1e3 * statistics.median(times[spec.label]),
                         "ms_all": [1e3 * t for t in times[spec.label]],
                         "trainable": counted.counts["trainable parameters"], "weights_bytes": counted.weights,
                         "gradients_bytes": counted.gradients, "optimizer_bytes": counted.optimizer,
                         "activations_bytes": counted.activations, "total_bytes": counted.total,
                         "cuda_peak_bytes": counted.cuda_peak})
        lora = next((r for r in rows if r["method"] == "lora"), rows[0])
        for row in rows:
            row["vs_lora"] = row["ms"] / lora["ms"]
            row["activations_vs_lora"] = row["activations_bytes"] / lora["activations_bytes"] \
                if lora["activations_bytes"] else math.nan
        return {"source": "measured in this study: every variant in one process, one untimed step each, then "
                          f"{self.scale.timing_repeats} timed steps each in interleaved rounds (median); bytes "
                          "counted tensor by tensor in one more step (lora_core.quant.measure.count_step)",
                "batch_size": self.scale.batch_size, "seq_len": self.scale.seq_len, "rows": rows}
