"""Live fine-tuning: a small Trainer with step() -> metrics, plus held-out loss, generation, BLEU, perplexity.

    lc.inject_lora(model, lc.LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "v_proj"]))
    trainer = Trainer(model, tok, load_dataset("recommendations"), TrainConfig(steps=40))
    trainer.run(40, callback=lambda m: print(m["step"], m["loss"]))
    trainer.evaluate("test", bleu=True)["bleu"]

Like minGPT's mingpt/trainer.py the Trainer knows nothing about the model beyond "a causal LM whose
trainable parameters are the adapter": LoRA (Hu et al. 2021, arXiv 2106.09685) is injected first
with `lc.inject_lora`, and AdamW (Loshchilov & Hutter, arXiv 1711.05101) sees only what requires grad.
`TrainConfig(optimizer="loraplus")` gives B a learning rate `loraplus_lr_ratio` times A's (LoRA+, arXiv
2402.12354) and `optimizer="lorafa"` freezes every A and projects B's gradient (LoRA-FA, arXiv 2308.03303),
both as PEFT builds them (lora_core/optimizers.py); the schedule scales every parameter group alike.

Everything random (data order, dropout masks) comes from the Trainer's own streams, seeded by
cfg.seed and kept in the Trainer, so the same seed gives the same losses, and a run paused
(stop calling step()) and resumed, even after other code used torch's RNG, continues exactly as
if it had never stopped. `state_dict()` carries all of it to another Trainer.

Dropout is the one place torch gives no `generator=` (nn.Dropout, and the dropout inside
scaled_dot_product_attention, draw from the process-wide generator). So for the length of a step the
global generator holds this Trainer's stream and gets the caller's state back afterwards; a lock keeps
two Trainers on two threads (two learners on one server) from ever drawing from each other's stream.
Building a Trainer touches no global state at all.

A non-finite loss or gradient raises TrainingDiverged after putting back the adapter weights
of the last step whose loss was finite.
"""

from __future__ import annotations

import contextlib
import copy
import math
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass

import torch
import torch.nn as nn
from transformers import PreTrainedTokenizerBase

from ..device import autocast, pick_device
from ..inject import lora_layers
from ..optimizers import create_lorafa_optimizer, create_loraplus_optimizer
from . import metrics as ev
from .data import IGNORE_INDEX, Dataset, collate, encode_pair
from .metrics import token_nll

# Held while torch's global generator carries one Trainer's dropout stream (see the module docstring).
_GLOBAL_RNG_LOCK = threading.Lock()
OPTIMIZERS = ("adamw", "loraplus", "lorafa")


class TrainingDiverged(RuntimeError):
    """The loss or gradient stopped being finite; the adapter was restored to its last good weights.

    `reason` says what happened in words any reader follows ("the loss became nan at step 7 (learning
    rate 3)"); the message adds what a script should do next. A UI shows `reason` with its own advice.
    """

    def __init__(self, message: str, reason: str = ""):
        super().__init__(message)
        self.reason = reason or message


def _positive_int(name: str, value, minimum: int = 1) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name}={value!r} is not allowed: use an integer >= {minimum}")


def _number(name: str, value, low: float, high: float = math.inf, low_open: bool = False) -> None:
    ok = not isinstance(value, bool) and isinstance(value, (int, float)) and math.isfinite(value)
    if not ok or value < low or (low_open and value == low) or value > high:
        bound = f"> {low}" if low_open else f">= {low}"
        raise ValueError(f"{name}={value!r} is not allowed: use a finite number {bound}"
                         + (f" and <= {high}" if high < math.inf else ""))


@dataclass
class TrainConfig:
    """How to train. Every field is checked in `__post_init__`."""

    lr: float = 2e-3                   # peak AdamW learning rate, reached after warmup
    steps: int = 40                    # length of the schedule: warmup, then cosine decay to its end
    batch_size: int = 8                # examples per micro-batch
    seq_len: int = 64                  # tokens per example (prompt + completion + EOS), cut on the right
    warmup_steps: int | None = None    # linear warmup up to lr; None: 10% of steps (at least 1)
    weight_decay: float = 0.0          # AdamW's decoupled decay on the LoRA factors
    grad_accum: int = 1                # micro-batches per optimizer step (effective batch = batch_size * this)
    max_grad_norm: float | None = 1.0  # clip the global gradient norm to this; None: never clip
    seed: int = 0                      # seeds data order and dropout masks
    device: str | None = None          # None: train where the model already is
    log_every: int = 1                 # run() calls its callback every log_every steps (and on the last)
    min_lr_ratio: float = 0.1          # the cosine ends at lr * min_lr_ratio, then stays there
    optimizer: str = "adamw"           # "adamw" | "loraplus" (B at loraplus_lr_ratio * lr) | "lorafa" (A frozen)
    loraplus_lr_ratio: float = 16.0    # LoRA+'s lr_B / lr_A (read only with optimizer="loraplus")

    def __post_init__(self) -> None:
        _number("lr", self.lr, 0.0, low_open=True)
        for name in ("steps", "batch_size", "grad_accum", "log_every"):
            _positive_int(name, getattr(self, name))
        _positive_int("seq_len", self.seq_len, 2)  # one token to read, one to predict
        if self.warmup_steps is None:
            self.warmup_steps = max(1, self.steps // 10)
        _positive_int("warmup_steps", self.warmup_steps, 0)
        if self.warmup_steps > self.steps:
            raise ValueError(f"warmup_steps={self.warmup_steps} is not allowed: "
                             f"it must be <= steps={self.steps}")
        _number("weight_decay", self.weight_decay, 0.0)
        if self.max_grad_norm is not None:
            _number("max_grad_norm", self.max_grad_norm, 0.0, low_open=True)
        _positive_int("seed", self.seed, 0)
        if self.device is not None and not isinstance(self.device, str):
            raise ValueError(f"device={self.device!r} is not allowed: use None, 'cpu', 'cuda' or 'mps'")
        _number("min_lr_ratio", self.min_lr_ratio, 0.0, 1.0)
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer={self.optimizer!r} is not allowed: use one of {', '.join(OPTIMIZERS)}")
        _number("loraplus_lr_ratio", self.loraplus_lr_ratio, 0.0, low_open=True)


def lr_at(cfg: TrainConfig, step: int) -> float:
    """Learning rate for optimizer step `step` (0-based): linear warmup, then cosine to lr * min_lr_ratio."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    progress = min(1.0, (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps))
    cosine = 0.5 * (1.0 + math.cos(math.pi * progress))
    return cfg.lr * (cfg.min_lr_ratio + (1.0 - cfg.min_lr_ratio) * cosine)


@torch.no_grad()
def delta_norm(model: nn.Module) -> float:
    """Mean ‖ΔW‖_F over the LoRA layers' active adapters, from the factors alone (no (out, in) matrix is built).

    ‖B A‖_F² = tr(Aᵀ Bᵀ B A) = Σ_ij (BᵀB)_ij (A Aᵀ)_ij, two (r, r) Gram matrices.
    """
    norms = []
    for _, layer in lora_layers(model):
        for name in (n for n in layer.active_adapters if n in layer.r):
            B, A = (f.float() for f in layer.factors(name))  # (out, r), (r, in)
            squared = ((B.T @ B) * (A @ A.T)).sum()          # (r, r) * (r, r) -> ‖BA‖_F²
            norms.append(layer.scaling[name] * squared.clamp_min(0).sqrt())  # clamp: rounding can dip below 0
    return torch.stack(norms).mean().item() if norms else 0.0  # one device sync, not one per layer


def _max_positions(model: nn.Module) -> int | None:
    config = getattr(model, "config", None)
    return getattr(config, "max_position_embeddings", None) or getattr(config, "n_positions", None)


class Trainer:
    """Trains the trainable parameters (the adapter) of `model` on `dataset.train`."""

    def __init__(self, model: nn.Module, tokenizer: PreTrainedTokenizerBase, dataset: Dataset,
                 cfg: TrainConfig | None = None, full_finetune: bool = False):
        """`full_finetune=True` trains whatever requires grad without an adapter: full fine-tuning, the
        baseline the research replays compare LoRA with. Otherwise the model must carry a LoRA adapter.
        With cfg.optimizer="lorafa" the Trainer freezes every LoRA A of `model` (LoRA-FA trains B alone)."""
        self.cfg = cfg = cfg or TrainConfig()
        self.model, self.tokenizer, self.dataset = model, tokenizer, dataset
        trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
        if not trainable or not (full_finetune or hasattr(model, "lora_configs")):
            raise ValueError("model has no LoRA adapter to train: call lc.inject_lora(model, cfg) first")
        if full_finetune and cfg.optimizer != "adamw":
            raise ValueError(f"optimizer={cfg.optimizer!r} is not allowed with full_finetune=True: LoRA+ and LoRA-FA "
                             "act on LoRA's factors; use 'adamw'")
        self.names = [n for n, _ in trainable]
        self.params = [p for _, p in trainable]
        first = next(model.parameters())
        self.device = pick_device(cfg.device) if cfg.device is not None else first.device
        if first.device != self.device:
            model.to(self.device)
        if (limit := _max_positions(model)) is not None and cfg.seq_len > limit:
            raise ValueError(f"seq_len={cfg.seq_len} is not allowed: this model reads at most {limit} positions")
        if tokenizer.pad_token_id is None:
            raise ValueError("tokenizer has pad_token_id=None: set tokenizer.pad_token (e.g. to its EOS)")
        if not dataset.train:
            raise ValueError(f"dataset {dataset.name!r} has an empty train split: nothing to train on")
        self.examples = [encode_pair(tokenizer, p, c, cfg.seq_len) for p, c in dataset.train]
        empty = [i for i, (_, lab) in enumerate(self.examples) if all(t == IGNORE_INDEX for t in lab[1:])]
        if empty:
            raise ValueError(f"seq_len={cfg.seq_len} leaves no completion token in {len(empty)} of "
                             f"{len(self.examples)} training examples (e.g. #{empty[0]}): raise seq_len")
        # Built last, once every check has passed: LoRA-FA freezes the A factors, so the model changes only here.
        self.optimizer = self._build_optimizer(model)
        if cfg.optimizer == "lorafa":  # what still trains: B (and any magnitude, bias or saved module)
            self.names = [n for n, p in model.named_parameters() if p.requires_grad]
            self.params = [p for p in model.parameters() if p.requires_grad]
        # Each group's share of the scheduled lr (LoRA+'s B groups: loraplus_lr_ratio; AdamW's one group: 1).
        self._lr_ratios = [group["lr"] / cfg.lr for group in self.optimizer.param_groups]
        self.step_count = 0           # optimizer steps taken
        self.diverged = False
        self.history: list[dict] = []
        # Private random streams: the data order, and the dropout stream (what torch.manual_seed(seed)
        # would give the global generators, built on local ones so the process-wide state is not touched).
        self._order_rng = torch.Generator().manual_seed(cfg.seed)
        self._queue: list[int] = []   # example indices still to be served this epoch
        self._rng_state = {"cpu": torch.Generator().manual_seed(cfg.seed).get_state()}
        if self.device.type == "cuda":
            self._rng_state["cuda"] = torch.Generator(device=self.device).manual_seed(cfg.seed).get_state()
        self._last_good = self._snapshot()

    def _build_optimizer(self, model: nn.Module) -> torch.optim.Optimizer:
        """AdamW over what trains, or PEFT's LoRA+ groups, or LoRA-FA's optimizer (which freezes every A)."""
        cfg = self.cfg
        if cfg.optimizer == "loraplus":
            return create_loraplus_optimizer(model, torch.optim.AdamW, lr=cfg.lr,
                                             loraplus_lr_ratio=cfg.loraplus_lr_ratio,
                                             loraplus_weight_decay=cfg.weight_decay)
        if cfg.optimizer == "lorafa":
            # create_lorafa_optimizer checks that every layer holds this r and α (one scaling per B, as PEFT's)
            first = next((layer.adapter(n) for _, layer in lora_layers(model) for n in layer.active_adapters
                          if n in layer.r), None)
            if first is None:
                raise ValueError("optimizer='lorafa' needs an active LoRA adapter: this model has none active")
            return create_lorafa_optimizer(model, first.r, first.lora_alpha, cfg.lr, cfg.weight_decay)
        return torch.optim.AdamW(self.params, lr=cfg.lr, weight_decay=cfg.weight_decay)

    # --- randomness and snapshots ------------------------------------------------------------
    def _rng_devices(self) -> list:
        return [self.device] if self.device.type == "cuda" else []

    def _get_rng(self) -> dict:
        state = {"cpu": torch.get_rng_state()}
        if self.device.type == "cuda":
            state["cuda"] = torch.cuda.get_rng_state(self.device)
        return state

    @contextlib.contextmanager
    def _own_rng(self) -> Iterator[None]:
        """Run dropout from the Trainer's stream; the global generator gets the caller's state back."""
        with _GLOBAL_RNG_LOCK, torch.random.fork_rng(devices=self._rng_devices()):
            torch.set_rng_state(self._rng_state["cpu"])
            if "cuda" in self._rng_state:
                torch.cuda.set_rng_state(self._rng_state["cuda"], self.device)
            yield
            self._rng_state = self._get_rng()

    def _snapshot(self) -> list[torch.Tensor]:
        return [p.detach().clone() for p in self.params]

    def _restore(self, tensors: list[torch.Tensor]) -> None:
        with torch.no_grad():
            for p, t in zip(self.params, tensors, strict=True):
                p.copy_(t)

    def _next_batch(self) -> dict[str, torch.Tensor]:
        while len(self._queue) < self.cfg.batch_size:  # epochs run into each other: no batch is short
            self._queue += torch.randperm(len(self.examples), generator=self._order_rng).tolist()
        picked, self._queue = self._queue[:self.cfg.batch_size], self._queue[self.cfg.batch_size:]
        batch = collate([self.examples[i] for i in picked], self.tokenizer.pad_token_id)
        return {k: v.to(self.device) for k, v in batch.items()}

    def _diverge(self, what: str, value: float, lr: float) -> None:
        self.optimizer.zero_grad(set_to_none=True)
        self._restore(self._last_good)
        self.diverged = True
        self.model.eval()
        reason = (f"{what} became {value} at step {self.step_count + 1} (learning rate {lr:.3g}), so training "
                  f"stopped and the adapter was restored to the weights step {self.step_count} ran with "
                  "(the last finite loss)")
        raise TrainingDiverged(f"{reason}. Try a lower lr or max_grad_norm, then start a new Trainer.", reason)

    # --- training ------------------------------------------------------------------------------
    def step(self) -> dict:
        """One optimizer step (grad_accum micro-batches); leaves the model in eval mode.

        Returns {"step", "loss" (nats per completion token), "lr", "grad_norm" (before clipping),
        "tokens" (non-padding tokens read), "seconds", "tokens_per_s", "delta_norm" (mean ‖ΔW‖_F)}.
        """
        if self.diverged:
            raise TrainingDiverged("this Trainer has diverged; its adapter holds the last good weights. "
                                   "Start a new Trainer (e.g. with a lower lr) to go on.")
        cfg, model = self.cfg, self.model
        start = time.perf_counter()
        lr = lr_at(cfg, self.step_count)
        for group, ratio in zip(self.optimizer.param_groups, self._lr_ratios, strict=True):
            group["lr"] = lr if ratio == 1.0 else lr * ratio  # the schedule scales every group alike
        queue, order = list(self._queue), self._order_rng.get_state()
        before = self._snapshot()
        try:
            loss_sum, tokens, norm = self._forward_backward(lr)
        except TrainingDiverged:
            raise
        except BaseException:
            # An aborted step (an error, an interrupt) leaves nothing half-done: no partial gradients,
            # the weights it started from, the same batches and dropout next time.
            self.optimizer.zero_grad(set_to_none=True)
            self._restore(before)
            self._queue = queue
            self._order_rng.set_state(order)
            model.eval()
            raise
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        model.eval()
        self._last_good = before  # these weights gave a finite loss
        self.step_count += 1
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)  # honest timings: wait for the GPU
        seconds = time.perf_counter() - start
        metrics = {"step": self.step_count, "loss": loss_sum, "lr": lr, "grad_norm": norm.item(),
                   "tokens": tokens, "seconds": seconds, "tokens_per_s": tokens / seconds,
                   "delta_norm": delta_norm(model)}
        self.history.append(metrics)
        return metrics

    def _forward_backward(self, lr: float) -> tuple[float, int, torch.Tensor]:
        """The step's micro-batches forward and backward, then clipping: (loss, tokens, grad norm)."""
        cfg, model = self.cfg, self.model
        batches = [self._next_batch() for _ in range(cfg.grad_accum)]
        # Normalise by the step's total number of target tokens, so accumulation gives the same
        # gradient as one big batch (a per-micro-batch mean would weight short batches up).
        n_targets = sum(int((b["labels"][:, 1:] != IGNORE_INDEX).sum()) for b in batches)
        loss_sum, tokens = 0.0, 0
        model.train()
        with self._own_rng():
            for b in batches:
                with autocast(self.device):
                    logits = model(input_ids=b["input_ids"], attention_mask=b["attention_mask"],
                                   use_cache=False).logits  # (B, T, V)
                loss = token_nll(logits, b["labels"]) / n_targets
                if not torch.isfinite(loss):
                    self._diverge("the loss", loss.item(), lr)
                loss.backward()
                loss_sum += loss.item()
                tokens += int(b["attention_mask"].sum())
        norm = torch.nn.utils.clip_grad_norm_(self.params, cfg.max_grad_norm or math.inf)
        if not torch.isfinite(norm):
            self._diverge("the gradient norm", norm.item(), lr)
        return loss_sum, tokens, norm

    def run(self, n: int, callback: Callable[[dict], bool | None] | None = None) -> list[dict]:
        """Take n steps; call callback(metrics) every cfg.log_every steps and on the last.

        A callback that returns False stops the run early (a "stop" button).
        """
        _positive_int("n", n, 0)
        out = []
        for i in range(n):
            metrics = self.step()
            out.append(metrics)
            if callback is not None and (metrics["step"] % self.cfg.log_every == 0 or i == n - 1):
                if callback(metrics) is False:
                    break
        return out

    # --- evaluation --------------------------------------------------------------------------
    def evaluate(self, split: str = "test", bleu: bool = False, limit: int | None = None,
                 max_new_tokens: int = 24) -> dict:
        """Mean completion loss on `split`; with bleu=True also greedy generations and corpus BLEU (0–100).

        `limit` keeps the first `limit` pairs (generation is the slow part on a CPU).
        """
        pairs = self.dataset.split(split)
        if limit is not None:
            _positive_int("limit", limit)
            pairs = pairs[:limit]
        if not pairs:
            raise ValueError(f"split={split!r} of dataset {self.dataset.name!r} is empty: nothing to evaluate")
        loss, tokens = ev.completion_loss(self.model, self.tokenizer, pairs, self.cfg.seq_len, self.cfg.batch_size)
        out = {"split": split, "loss": loss, "tokens": tokens, "pairs": len(pairs)}
        if bleu:
            prompts = [p for p, _ in pairs]
            references = [c for _, c in pairs]
            predictions = self.generate(prompts, max_new_tokens)
            out |= {"bleu": ev.bleu(predictions, references), "prompts": prompts,
                    "predictions": predictions, "references": references}
        return out

    def generate(self, prompts: list[str], max_new_tokens: int = 24) -> list[str]:
        """Greedy completions of `prompts` (deterministic)."""
        # Wide batches: decoding on a CPU is bound by reading the weights once per token, so 64
        # prompts cost little more than one.
        return ev.generate(self.model, self.tokenizer, prompts, max_new_tokens, batch_size=64)

    def perplexity(self, text: str) -> float:
        """Perplexity of the adapted model on `text` (e.g. data.general_english(), for learn vs forget)."""
        return ev.perplexity(self.model, self.tokenizer, text)

    # --- stop / resume ------------------------------------------------------------------------
    def state_dict(self) -> dict:
        """Everything a new Trainer on the same model and data needs to continue exactly."""
        return copy.deepcopy({
            "config": asdict(self.cfg), "step_count": self.step_count,
            "adapter": {n: p.detach().cpu() for n, p in zip(self.names, self.params, strict=True)},
            "last_good": [t.cpu() for t in self._last_good],
            "optimizer": self.optimizer.state_dict(), "order_rng": self._order_rng.get_state(),
            "queue": list(self._queue), "rng": self._rng_state, "history": self.history,
        })

    def load_state_dict(self, state: dict) -> None:
        """Continue from `state_dict()`: adapter weights, optimizer, step counter and random streams."""
        if sorted(state["adapter"]) != sorted(self.names):
            raise ValueError("state does not fit this model: its trainable parameters differ "
                             f"({len(state['adapter'])} saved, {len(self.names)} here)")
        if state["config"] != asdict(self.cfg):
            raise ValueError("state was saved with a different TrainConfig: build the Trainer with "
                             f"TrainConfig(**state['config']) ({state['config']})")
        state = copy.deepcopy(state)
        self._restore([state["adapter"][n] for n in self.names])
        self._last_good = [t.to(self.device) for t in state["last_good"]]
        self.optimizer.load_state_dict(state["optimizer"])
        self.step_count, self.history = state["step_count"], state["history"]
        self._order_rng.set_state(state["order_rng"])
        self._queue, self._rng_state = state["queue"], state["rng"]
        self.diverged = False
