"""A page's request must never change another learner's torch: the teaching code (claims check, quiz, evidence,
toy runs) neither reseeds nor draws from the global RNG, never sets the thread count, and keeps no caller's
tensor alive in a cache (issue 10, "process-wide state on a shared server")."""

import gc
import random
import weakref

import pytest
import torch

from lora_core.teach import anatomy, evidence, evidence_quant, merging_steps, toy, training_runs
from lora_core.teach.claims import check, counts, libraries, measured, second, second_measured
from lora_core.teach.interview import concepts, numeric, quiz

TEACH = (anatomy, toy, evidence, evidence_quant, training_runs, counts, measured, libraries, second, second_measured,
         numeric, concepts, merging_steps)


@pytest.fixture
def forbid_process_state(monkeypatch):
    """Any call that reseeds torch's global RNG or sets its thread count fails the test where it happens:
    restoring afterwards (fork_rng, a saved thread count) would hide it from a before/after comparison."""
    def refuse(name):
        def call(*args, **kwargs):
            raise AssertionError(f"{name} changes process-wide torch state")
        return call
    for module, name in ((torch, "manual_seed"), (torch.random, "manual_seed"), (torch, "set_rng_state"),
                         (torch.random, "set_rng_state"), (torch.random, "fork_rng"), (torch, "set_num_threads")):
        monkeypatch.setattr(module, name, refuse(f"torch.{name}"))


def _clear_teach_caches() -> None:
    """Measure from scratch: every functools cache in the teaching modules, and the claims check's own."""
    for module in (*TEACH, check):
        for value in vars(module).values():
            if callable(getattr(value, "cache_clear", None)):
                value.cache_clear()


def test_claims_quiz_and_evidence_leave_rng_and_threads_alone(forbid_process_state, tmp_path):
    _clear_teach_caches()
    rng, threads, py_random = torch.get_rng_state(), torch.get_num_threads(), random.getstate()
    weight = torch.randn(96, 64, generator=torch.Generator().manual_seed(3))
    rows = check.claims_check(weight=weight, runs_dir=tmp_path)
    bank = quiz.question_bank(seed=1)
    evidence_shown = [quiz.evidence_for(q) for q in bank]
    run = toy.train_toy(toy.ToyConfig(steps=3))
    assert len(rows) == 33 and len(bank) == len(evidence_shown) and len(run.losses) == 3
    assert torch.equal(torch.get_rng_state(), rng), "the global torch RNG was drawn from"
    assert torch.get_num_threads() == threads and random.getstate() == py_random


def test_a_weight_passed_to_the_claims_check_is_not_kept_alive():
    weight = torch.randn(64, 48, generator=torch.Generator().manual_seed(0))
    ref = weakref.ref(weight)
    real = check.claim(15, weight=weight)
    assert any(e["weights"] == "real weight" for e in real.evidence.table)
    assert "(64, 48) real weight" in check.claim(21, weight=weight).truth
    evidence_quant.codebook_comparison(weight)
    del weight
    gc.collect()
    assert ref() is None, "a cache keeps the tensor alive"
    assert all(e["weights"] != "real weight" for e in check.claim(15).evidence.table)  # the cached control
