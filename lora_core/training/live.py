"""A live fine-tuning run: the state behind the app's Fine-tuning page, with no UI in it.

    run = LiveRun.start(base_model, tokenizer, dataset, lora_cfg, train_cfg)   # measures "before"
    while run.status == "running":
        run.advance(seconds=1.0)          # as many steps as fit in the time box, then return
    run.finish()                          # measures "after": held-out loss, BLEU, perplexity

The run trains on its own module tree over the frozen base (`shared_base_copy`), so several runs
(or several users) can share one loaded model and nothing is ever written into it. Every few steps
it also records the perplexity of a fixed English text (does the model forget?) and greedy
completions of a few held-out prompts (what has it learned?).
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

import torch
import torch.nn as nn
from transformers import PreTrainedTokenizerBase

from ..config import LoraConfig
from ..inject import inject_lora, trainable_parameters
from ..sharing import shared_base_copy
from .data import Dataset, general_english
from .trainer import TrainConfig, Trainer, TrainingDiverged

STATUSES = ("running", "paused", "done", "stopped", "diverged")
DIVERGED_MESSAGE = "Training diverged: {reason}."  # a learner's words; the Trainer's message speaks to scripts


@dataclass
class LiveRun:
    """One fine-tuning run that a UI advances in small time boxes."""

    model: nn.Module
    tokenizer: PreTrainedTokenizerBase
    dataset: Dataset
    lora_config: LoraConfig
    train_config: TrainConfig
    trainer: Trainer
    eval_limit: int = 12           # held-out pairs scored for BLEU (generation is the slow part)
    probe_every: int = 10          # steps between perplexity/sample probes
    sample_prompts: list[str] = field(default_factory=list)
    status: str = "running"
    message: str = ""
    before: dict = field(default_factory=dict)
    after: dict = field(default_factory=dict)
    probes: list[dict] = field(default_factory=list)  # {"step", "ppl", "samples"}
    base_name: str = ""            # the base model's name, e.g. "distilgpt2-random" (set by the caller)
    base_precision: str = "fp32"   # how the frozen base is stored: fp32, bf16 or nf4 (set by the caller)
    base_bytes: int = 0            # its size in memory
    # One stepper at a time: a page's timed fragment and a full rerun may both call advance()
    _stepper: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    @classmethod
    def start(cls, base: nn.Module, tokenizer: PreTrainedTokenizerBase, dataset: Dataset, lora_config: LoraConfig,
              train_config: TrainConfig, eval_limit: int = 12, n_samples: int = 3, probe_every: int = 10,
              seed: int = 0) -> LiveRun:
        """Inject LoRA into a private copy of `base`, build the Trainer, and measure the start."""
        model = shared_base_copy(base)
        # A's Kaiming init from a local generator: repeatable, and no other session's RNG moves
        inject_lora(model, lora_config, generator=torch.Generator().manual_seed(seed))
        trainer = Trainer(model, tokenizer, dataset, train_config)
        test = dataset.test
        step = max(1, len(test) // max(1, n_samples))
        prompts = [p for p, _ in test[::step][:n_samples]] or [p for p, _ in dataset.train[:n_samples]]
        run = cls(model, tokenizer, dataset, lora_config, train_config, trainer, eval_limit, probe_every, prompts)
        run.before = run._measure()
        run._probe()
        return run

    # --- progress ----------------------------------------------------------------------------
    @property
    def step(self) -> int:
        return self.trainer.step_count

    @property
    def history(self) -> list[dict]:
        return self.trainer.history

    @property
    def parameters(self) -> tuple[int, int]:
        return trainable_parameters(self.model)

    def advance(self, seconds: float = 1.0) -> list[dict]:
        """Take steps until `seconds` have passed (at least one), the schedule ends or the run is paused.

        Safe to call from several threads: one steps, the others return [] at once instead of
        waiting (a UI's timer tick and a full rerun must not queue up behind each other, or both
        backpropagate through one graph).
        """
        if self.status != "running" or not self._stepper.acquire(blocking=False):
            return []
        try:
            return self._advance(seconds)
        finally:
            self._stepper.release()

    def _advance(self, seconds: float) -> list[dict]:
        out, start = [], time.perf_counter()
        while self.status == "running" and self.step < self.train_config.steps:
            try:
                out.append(self.trainer.step())
            except TrainingDiverged as err:
                self.status, self.message = "diverged", DIVERGED_MESSAGE.format(reason=err.reason)
                self._finish("diverged")  # the adapter is back at its last good weights: measure it like a stop
                return out
            if self.step % self.probe_every == 0:
                self._probe()
            if time.perf_counter() - start >= seconds:
                break
        if self.step >= self.train_config.steps:
            self._finish("done")
        return out

    def pause(self) -> None:
        """Pause after the step in progress, if any: when this returns no step runs, and `step` is final."""
        if self.status == "running":
            self.status = "paused"
        with self._stepper:  # a step on another thread finishes first (the loop checks the status per step)
            pass

    def resume(self) -> None:
        if self.status == "paused":
            self.status = "running"

    def stop(self) -> None:
        """Stop at once, without waiting for a step in progress; `finish()` measures the result later."""
        if self.status in ("running", "paused"):
            self.status = "stopped"

    def finish(self, status: str = "stopped") -> None:
        """End the run (keeping the adapter) and measure the "after" numbers once.

        Waits for a step in progress on another thread (at most one time box), then measures.
        """
        if status not in STATUSES:
            raise ValueError(f"status={status!r} is not allowed: use one of {STATUSES}")
        with self._stepper:
            self._finish(status)

    def _finish(self, status: str) -> None:
        if self.status in ("done", "stopped", "diverged") and self.after:
            return
        self.status = status if self.status != "diverged" else "diverged"
        if not self.probes or self.probes[-1]["step"] != self.step:
            self._probe()
        self.after = self._measure()

    # --- measurements ------------------------------------------------------------------------
    def _measure(self) -> dict:
        out = {"ppl_general": self.trainer.perplexity(general_english())}
        if self.dataset.test:
            ev = self.trainer.evaluate("test", bleu=True, limit=self.eval_limit)
            out |= {"heldout_loss": ev["loss"], "bleu": ev["bleu"], "prompts": ev["prompts"],
                    "predictions": ev["predictions"], "references": ev["references"]}
        return out

    def _probe(self) -> None:
        self.probes.append({"step": self.step, "ppl": self.trainer.perplexity(general_english()),
                            "samples": self.trainer.generate(self.sample_prompts, max_new_tokens=16)})
