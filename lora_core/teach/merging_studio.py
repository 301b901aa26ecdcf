"""The Merging studio: two adapters trained on two tasks over one frozen base, merged PEFT's eleven ways, scored.

    studio = Studio.start(base, tok, StudioPlan(steps=20, target_modules=["q_proj", "v_proj"]))
    while not studio.ready:
        studio.advance(seconds=1.0)      # trains "recsys", then "e2e", then scores the base and both adapters
    merged = merge_and_score(studio, "ties", [0.5, 0.5], density=0.5)   # the table and the scatter's points
    types = sweep(studio, [0.5, 0.5], density=0.5)                      # every combination type at those weights
    batch = mixed_generations(studio, [prompt_1, prompt_2])             # one mixed batch, each row checked
    check = one_adapter_check(r=4)                                      # one adapter at weight 1.0: ours and PEFT's

Task 1 is the recommendations data (lora_core.training), task 2 the E2E-style data-to-text task
(lora_core.research.e2e). Both adapters get one config (same r and targets, so every combination type applies) and
live in one model, a per-session copy of the frozen base (`shared_base_copy`). Each trains with the Trainer while it
is the active adapter: `set_adapter` makes exactly its factors trainable, and a Trainer optimises what requires grad
when it is built. A score is the held-out completion loss (nats per completion token, `completion_loss`, the
Trainer's own metric) on the first `heldout` test pairs of each task: lower is better.

Merging is lc.add_weighted_adapter: task arithmetic, TIES (arXiv 2306.01708), DARE (arXiv 2311.03099) and magnitude
pruning, on the factors or through an SVD. The one-adapter check is PEFT issue 3761: PEFT's merged adapter copies
the source's use_rslora, so one rsLoRA adapter at weight 1.0 comes back √r times too large.
Randomness comes from local torch.Generators (the adapters' init, DARE's masks). PEFT's layer init draws from the
global generator; `_LocalDraws` hands those calls a local one instead, so torch's global RNG never moves.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch
import torch.nn as nn
from transformers import PreTrainedTokenizerBase

from ..adapters import add_adapter, delete_adapter, set_adapter
from ..config import LoraConfig, reject
from ..inject import inject_lora, lora_layers
from ..merging import disable_lora
from ..mixed import BASE, mixed_batch
from ..research.e2e import make_task
from ..sharing import shared_base_copy
from ..training.data import Dataset, Pair, encode_prompt, left_pad, load_dataset
from ..training.metrics import completion_loss, generate
from ..training.trainer import TrainConfig, Trainer, TrainingDiverged
from ..weighted import COMBINATION_TYPES, PRUNING, add_weighted_adapter
from .one_adapter import DLOGIT, ONE_ADAPTER_TARGETS, RATIO, one_adapter_check  # noqa: F401  (the page's names)
from .seeded import generator

if TYPE_CHECKING:
    from ..serve.settings import Settings

ADAPTERS = ("recsys", "e2e")                                         # the two adapters, in training order
TASKS = {"recsys": "recommendations", "e2e": "E2E-style data-to-text"}  # the task each adapter learns
MIXED_ROWS = ("recsys", "e2e", "merged", BASE)                       # the rows of the mixed batch
WEIGHT_RANGE = (-1.0, 2.0)                                           # a source's weight: negative subtracts it
MAX_HELDOUT = 60                                                     # the recommendations test split's size
E2E_TRAIN = 300                                                      # E2E training pairs (the other task has 220)


@dataclass(frozen=True)
class StudioPlan:
    """How both adapters train (one config for both, so every combination type applies) and how much is scored."""

    steps: int = 20                    # optimizer steps per adapter
    r: int = 8
    lora_alpha: float = 16.0
    lr: float = 2e-3
    target_modules: tuple[str, ...] = ("q_proj", "v_proj")
    batch_size: int = 8
    seq_len: int = 128                 # the longest E2E pair is ~105 SmolLM2 tokens; batches pad to their longest
    heldout: int = 24                  # test pairs scored per task (the CPU's time goes here)
    seed: int = 0

    def lora_config(self) -> LoraConfig:
        if isinstance(self.target_modules, str) or not self.target_modules:
            reject("target_modules", self.target_modules, "a non-empty list of module names, one config for both")
        return LoraConfig(r=self.r, lora_alpha=self.lora_alpha, target_modules=list(self.target_modules))

    def train_config(self) -> TrainConfig:
        if isinstance(self.heldout, bool) or not isinstance(self.heldout, int) or not 1 <= self.heldout <= MAX_HELDOUT:
            reject("heldout", self.heldout, f"an integer from 1 to {MAX_HELDOUT}: held-out pairs scored per task")
        return TrainConfig(lr=self.lr, steps=self.steps, batch_size=self.batch_size, seq_len=self.seq_len,
                           seed=self.seed)


@dataclass
class Studio:
    """Two adapters on one per-session copy of the base, trained in turn and scored: what the page advances."""

    model: nn.Module
    tokenizer: PreTrainedTokenizerBase
    plan: StudioPlan
    tasks: dict[str, Dataset]
    trainers: dict[str, Trainer]
    losses: dict[str, list[float]] = field(default_factory=lambda: {name: [] for name in ADAPTERS})
    scores: dict[str, dict[str, float]] = field(default_factory=dict)   # {row: {task: held-out loss}}
    messages: list[str] = field(default_factory=list)                   # a diverged run, in words
    merged: str | None = None          # the name of the latest merged adapter in the model
    merged_label: str = ""             # how tables name it: its type and weights
    _merges: int = 0                   # merges so far: each new one gets a new name, then the old one goes
    _finished: set[str] = field(default_factory=set)
    _pending: list[tuple[str, str]] = field(default_factory=lambda: [(row, task) for row in (BASE, *ADAPTERS)
                                                                      for task in ADAPTERS])
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)  # one mutator at a time

    @classmethod
    def start(cls, base: nn.Module, tokenizer: PreTrainedTokenizerBase, plan: StudioPlan,
              limits: Settings | None = None) -> Studio:
        """Check the plan (and the server's `limits`), copy the base, add both adapters, build the first Trainer."""
        if limits is not None:
            for name in ("steps", "r", "batch_size", "seq_len"):
                limits.check(name, getattr(plan, name))
        cfg, train = plan.lora_config(), plan.train_config()
        tasks = {"recsys": load_dataset("recommendations"), "e2e": make_task(plan.seed, E2E_TRAIN, MAX_HELDOUT).dataset}
        model = shared_base_copy(base)
        gen = generator(plan.seed)  # A's Kaiming init for both adapters: repeatable, no global RNG
        inject_lora(model, cfg, adapter_name=ADAPTERS[0], generator=gen)
        add_adapter(model, ADAPTERS[1], cfg, generator=gen)
        return cls(model, tokenizer, plan, tasks, {ADAPTERS[0]: Trainer(model, tokenizer, tasks[ADAPTERS[0]], train)})

    @property
    def training(self) -> str | None:
        """The adapter training now, or None once both are trained."""
        return next((name for name in ADAPTERS if name not in self._finished), None)

    @property
    def ready(self) -> bool:
        return self.training is None and not self._pending

    def progress(self) -> dict:
        """What the page's progress bar and metrics read."""
        steps = {name: len(self.losses[name]) for name in ADAPTERS}
        scores = 3 * len(ADAPTERS)  # the base and both adapters, on both tasks
        trained = sum(self.plan.steps if name in self._finished else n for name, n in steps.items())
        done, work = trained + scores - len(self._pending), len(ADAPTERS) * self.plan.steps + scores
        phase = (f"training '{self.training}' ({TASKS[self.training]})" if self.training else
                 "scoring the base and both adapters on both held-out sets" if self._pending else "ready")
        return {"phase": phase, "fraction": done / work, "steps": steps, "losses": self.losses}

    def advance(self, seconds: float = 1.0) -> None:
        """Work (training steps, then one held-out score at a time) until `seconds` have passed or all is done."""
        if self.ready or not self._lock.acquire(blocking=False):  # a timer tick and a rerun never queue up
            return
        try:
            start = time.perf_counter()
            while not self.ready and time.perf_counter() - start < seconds:
                self._work()
        finally:
            self._lock.release()

    def _work(self) -> None:
        name = self.training
        if name is None:
            row, task = self._pending.pop(0)
            self.scores.setdefault(row, {})[task] = self.loss(row, task)
            return
        if name not in self.trainers:  # the next adapter: active, so exactly its factors train
            set_adapter(self.model, name)
            self.trainers[name] = Trainer(self.model, self.tokenizer, self.tasks[name], self.plan.train_config())
        try:
            self.losses[name].append(self.trainers[name].step()["loss"])
        except TrainingDiverged as err:  # the adapter holds its last good weights: score it as it is
            self.messages.append(f"'{name}' diverged: {err.reason}.")
            self._finished.add(name)
            return
        if len(self.losses[name]) >= self.plan.steps:
            self._finished.add(name)

    def loss(self, row: str, task: str) -> float:
        """Held-out loss of `row` (an adapter, or BASE) on `task`'s first `heldout` test pairs."""
        with _running(self.model, row):
            return completion_loss(self.model, self.tokenizer, self.heldout(task), self.plan.seq_len, 16)[0]

    def heldout(self, task: str) -> list[Pair]:
        return self.tasks[task].test[:self.plan.heldout]


@contextlib.contextmanager
def _running(model: nn.Module, row: str) -> Iterator[None]:
    """The model running one adapter alone (frozen), or the base alone for BASE."""
    if row == BASE:
        with disable_lora(model):
            yield
    else:
        set_adapter(model, row, inference_mode=True)
        yield


def _check_ready(studio: Studio) -> None:
    if not isinstance(studio, Studio) or not studio.ready:
        reject("studio", type(studio).__name__, "a Studio whose two adapters are trained and scored (advance it)")


def _checked_weights(weights: Sequence[float]) -> list[float]:
    low, high = WEIGHT_RANGE
    ok = isinstance(weights, (list, tuple)) and len(weights) == len(ADAPTERS) and all(
        isinstance(w, (int, float)) and not isinstance(w, bool) and low <= w <= high for w in weights)  # NaN fails
    if not ok:
        reject("weights", weights, f"{len(ADAPTERS)} numbers from {low:g} to {high:g}, one per adapter {ADAPTERS}")
    return [float(w) for w in weights]


def _add_merged(studio: Studio, name: str, combination_type: str, weights: list[float], density: float | None,
                seed: int) -> int:
    """Add adapter `name` mixed from both sources; returns its rank. A ValueError leaves the model as it was.

    The svd types take the reduced SVD (svd_full_matrices=False): the same top singular triplets as PEFT's full one,
    without an (in, in) Vh (2304×2304 on distilgpt2's c_attn).
    """
    add_weighted_adapter(studio.model, list(ADAPTERS), weights, name, combination_type=combination_type,
                         density=density, generator=generator(seed), svd_full_matrices=False)
    return next(layer.r[name] for _, layer in lora_layers(studio.model) if name in layer.r)


def _drop(studio: Studio, name: str) -> None:
    set_adapter(studio.model, ADAPTERS[0], inference_mode=True)  # never delete the active adapter
    delete_adapter(studio.model, name)


def _point(name: str, role: str, losses: dict[str, float]) -> dict:
    return {"name": name, "role": role, "x": losses[ADAPTERS[0]], "y": losses[ADAPTERS[1]]}


def _row(name: str, losses: dict[str, float], **extra) -> dict:
    first, second = (losses[a] for a in ADAPTERS)
    return {"model": name, **extra, f"task 1 ({TASKS[ADAPTERS[0]]}) loss": first,
            f"task 2 ({TASKS[ADAPTERS[1]]}) loss": second, "mean": (first + second) / 2}


def scores_view(studio: Studio) -> dict:
    """The table and the scatter's points: the base, both sources and (once merged) the latest merge, on both tasks."""
    _check_ready(studio)
    shown = [("base", BASE, "base"), (ADAPTERS[0], ADAPTERS[0], "source"), (ADAPTERS[1], ADAPTERS[1], "source")]
    if studio.merged is not None:
        shown.append((studio.merged_label, "merged", "merged"))
    return {"rows": [_row(name, studio.scores[row]) for name, row, _ in shown],
            "points": [_point(name, role, studio.scores[row]) for name, row, role in shown]}


def merge_and_score(studio: Studio, combination_type: str, weights: Sequence[float], density: float | None = None,
                    seed: int = 0) -> dict:
    """Merge both adapters into a new one (replacing the previous merge), score it on both tasks, and return
    `scores_view` with the merge's settings and rank. `density` is used by the pruning types (PRUNING) only, `seed`
    draws DARE's masks. A ValueError (a bad density, say) leaves the previous merge in place."""
    _check_ready(studio)
    weights = _checked_weights(weights)
    kept = density if combination_type in PRUNING else None
    with studio._lock:
        name = f"merged{studio._merges + 1}"
        rank = _add_merged(studio, name, combination_type, weights, kept, seed)
        studio._merges += 1
        if studio.merged is not None:  # the new one exists: only now does the previous one go
            _drop(studio, studio.merged)
        studio.merged = name
        studio.merged_label = f"merged ({combination_type}, {weights[0]:g} / {weights[1]:g})"
        studio.scores["merged"] = {task: studio.loss(name, task) for task in ADAPTERS}
    return {**scores_view(studio), "combination_type": combination_type, "weights": weights, "density": kept,
            "rank": rank}


def sweep(studio: Studio, weights: Sequence[float], density: float = 0.5, seed: int = 0,
          on_type: Callable[[int, str], None] | None = None) -> dict:
    """Every combination type at `weights` (density for the pruning ones), each scored on both tasks.

    `on_type(i, combination_type)` is called before each (a progress bar). The model ends as it started.
    """
    _check_ready(studio)
    weights = _checked_weights(weights)
    if isinstance(density, bool) or not isinstance(density, (int, float)) or not 0 < density <= 1:
        reject("density", density, "the fraction of values the pruning types keep, 0 < density <= 1")
    rows, points = [], []
    with studio._lock:
        for i, kind in enumerate(COMBINATION_TYPES):
            if on_type is not None:
                on_type(i, kind)
            kept = density if kind in PRUNING else None
            rank = _add_merged(studio, "sweep", kind, weights, kept, seed)
            try:
                losses = {task: studio.loss("sweep", task) for task in ADAPTERS}
            finally:
                _drop(studio, "sweep")
            rows.append(_row(kind, losses, density="–" if kept is None else f"{kept:g}", rank=rank))
            points.append(_point(kind, "sweep", losses))
    best = min(rows, key=lambda r: r["mean"])
    return {"weights": weights, "density": density, "rows": rows, "points": points, "best": best["model"]}


def mixed_generations(studio: Studio, prompts: Sequence[str], max_new_tokens: int = 16) -> dict:
    """One mixed batch (rows recsys, e2e, merged, base; each on every prompt), greedy, and each row against the
    same adapter's own single run: same text, and max |Δlogit| of one forward over the prompts."""
    _check_ready(studio)
    if studio.merged is None:
        reject("merged", None, "merge the two adapters first: the mixed batch has a 'merged' row")
    if isinstance(prompts, str) or not isinstance(prompts, (list, tuple)) or not 1 <= len(prompts) <= 4 or not all(
            isinstance(p, str) and p.strip() for p in prompts):
        reject("prompts", prompts, "1 to 4 non-empty prompts")
    model, tok, prompts = studio.model, studio.tokenizer, list(prompts)
    names = [studio.merged if row == "merged" else row for row in MIXED_ROWS]
    rows_names = [n for n in names for _ in prompts]                        # one name per example
    rows_prompts = prompts * len(names)
    ids, mask = left_pad([encode_prompt(tok, p) for p in rows_prompts], tok.pad_token_id)  # (N, T) each
    device = next(model.parameters()).device
    ids, mask = ids.to(device), mask.to(device)
    with studio._lock, torch.no_grad():
        model.eval()
        with mixed_batch(model, rows_names):
            mixed = generate(model, tok, rows_prompts, max_new_tokens, batch_size=len(rows_prompts))
            mixed_logits = model(input_ids=ids, attention_mask=mask).logits.float()      # (N, T, V)
        single, single_logits = [], []
        for i, name in enumerate(names):  # rows i·n to (i+1)·n ran `name` in the mixed batch
            with _running(model, name):
                single += generate(model, tok, prompts, max_new_tokens)
                rows = slice(i * len(prompts), (i + 1) * len(prompts))
                single_logits.append(model(input_ids=ids[rows], attention_mask=mask[rows]).logits.float())
    gap = float((mixed_logits - torch.cat(single_logits)).abs()[mask.bool()].max())
    n = len(prompts)
    table = [{"row": row, **{f"prompt {j + 1}": text for j, text in enumerate(mixed[i * n:(i + 1) * n])},
              "same as its own run": "yes" if mixed[i * n:(i + 1) * n] == single[i * n:(i + 1) * n] else "no"}
             for i, row in enumerate(MIXED_ROWS)]
    return {"rows": table, "prompts": prompts, "same": sum(a == b for a, b in zip(mixed, single, strict=True)),
            "total": len(mixed), "max_abs_dlogit": gap}
