"""The toy LoRA problem: deterministic, learns the target, and shows the scaling facts it is used for."""

import pytest
import torch

import lora_core as lc
from lora_core.teach import toy


def test_runs_are_deterministic_and_learn_the_rank4_target():
    a = toy.train_toy(toy.ToyConfig(r=8, lora_alpha=16, lr=2e-3, steps=200))
    b = toy.train_toy(toy.ToyConfig(r=8, lora_alpha=16, lr=2e-3, steps=200))
    assert a.losses == b.losses
    assert a.losses[-1] < 0.01 * toy.initial_loss(a.config)
    sv = lc.singular_values(a.layer)
    torch.testing.assert_close(sv[:3], torch.linalg.svdvals(a.target_delta)[:3], rtol=0.05, atol=0.01)


def test_first_step_depends_only_on_alpha_times_lr():
    one = toy.train_toy(toy.ToyConfig(r=8, lora_alpha=16, lr=1e-3, steps=3))
    two = toy.train_toy(toy.ToyConfig(r=8, lora_alpha=32, lr=5e-4, steps=3))
    assert one.losses[0] == pytest.approx(two.losses[0], rel=1e-6)   # B moves first; A's gradient is 0
    assert one.losses[2] != pytest.approx(two.losses[2], rel=1e-6)   # then A starts to move


def test_adam_equivalent_retraces_the_run():
    cfg = toy.ToyConfig(r=8, lora_alpha=16, lr=1e-3, steps=60)
    ref, twin = toy.train_toy(cfg), toy.train_toy(toy.adam_equivalent(cfg, 2.0))
    assert twin.config.lora_alpha == 32 and twin.config.lr == pytest.approx(1e-3 / 2 ** 0.5)
    assert twin.losses == pytest.approx(ref.losses, rel=1e-4)


def test_rslora_lets_higher_rank_learn_faster_than_alpha_over_r_does():
    def loss_at_20(r, rs):
        return toy.train_toy(toy.ToyConfig(r=r, lora_alpha=16, use_rslora=rs, lr=1e-3, steps=20)).losses[-1]
    spread_lora = loss_at_20(4, False) / loss_at_20(64, False)
    spread_rslora = loss_at_20(4, True) / loss_at_20(64, True)
    assert spread_rslora > 2 * spread_lora


@pytest.mark.parametrize("kw,match", [(dict(steps=0), "steps=0"), (dict(lr=0), "lr=0"),
                                      (dict(true_rank=500), "true_rank=500"), (dict(r=0), "r=0")],
                         ids=["steps=0", "lr=0", "true_rank=500", "r=0"])
def test_bad_toy_configs_are_refused(kw, match):
    with pytest.raises(ValueError, match=match):
        toy.train_toy(toy.ToyConfig(**kw))


def test_training_draws_from_its_own_generators_only(monkeypatch):
    monkeypatch.setattr(torch, "manual_seed", lambda *a: pytest.fail("torch.manual_seed reseeds every session"))
    state = torch.get_rng_state()
    run = toy.train_toy(toy.ToyConfig(r=4, steps=5))
    assert run.losses == toy.train_toy(toy.ToyConfig(r=4, steps=5)).losses
    assert torch.equal(torch.get_rng_state(), state)
