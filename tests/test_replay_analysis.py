"""What the research replays compute, on inputs whose answer is known: φ, amplification, direction overlap and
ranks (research/analysis.py), the generated E2E-style task (research/e2e.py), multi-reference BLEU and per-seed
spreads (research/runs.py), and the verdict rules (research/verdicts.py). No model is loaded here.
"""

import math
import re

import pytest
import torch

from lora_core.research.analysis import (
    amplification,
    direction_overlap,
    phi_grid,
    phi_random_baseline,
    random_factor,
    rank_for_energy,
    rank_profile,
)
from lora_core.research.e2e import make_task, venue_names
from lora_core.research.runs import multi_bleu, spread
from lora_core.research.verdicts import HELD, NOT_HELD, SMALLER, VERDICTS, disagreements, verdict


def orthonormal(n: int, k: int, seed: int) -> torch.Tensor:
    """k orthonormal columns in R^n, from a local generator."""
    Q, _ = torch.linalg.qr(torch.randn(n, n, generator=torch.Generator().manual_seed(seed)))
    return Q[:, :k]


def known_svd(out: int = 10, inp: int = 8, sv=(10.0, 5.0, 2.0, 1.0, 0.5, 0.2, 0.1, 0.05)):
    """(W, U, V): W = U diag(sv) Vᵀ with U (out, k), V (in, k) orthonormal, k = len(sv)."""
    U, V = orthonormal(out, len(sv), 0), orthonormal(inp, len(sv), 1)
    return (U * torch.tensor(sv)) @ V.T, U, V


# --- φ, the subspace similarity --------------------------------------------------------------------------------------
def test_phi_of_an_adapter_with_itself_is_one_everywhere():
    A = random_factor((6, 40), seed=0)
    torch.testing.assert_close(torch.tensor(phi_grid(A, A)), torch.ones(6, 6), rtol=0, atol=1e-5)


def test_phi_is_one_everywhere_for_a_rotated_basis_of_the_same_rows():
    A = random_factor((6, 40), seed=0)
    Q = orthonormal(6, 6, seed=2)  # Q A has the same AᵀA, so the same right singular vectors
    torch.testing.assert_close(torch.tensor(phi_grid(A, Q @ A)), torch.ones(6, 6), rtol=0, atol=1e-5)


def test_phi_over_the_whole_span_is_one_for_any_basis_of_the_same_rows():
    A = random_factor((6, 40), seed=0)
    M = torch.randn(6, 6, generator=torch.Generator().manual_seed(3)) + 3 * torch.eye(6)  # invertible
    grid = torch.tensor(phi_grid(A, M @ A))
    # the top-i directions of one lie inside the other's full 6-dim span: the last row and column are 1
    torch.testing.assert_close(grid[:, -1], torch.ones(6), rtol=0, atol=1e-4)
    torch.testing.assert_close(grid[-1, :], torch.ones(6), rtol=0, atol=1e-4)
    assert grid[0, 0] < 0.99  # while the top directions themselves differ: a real change of basis


def test_random_baseline_is_max_i_j_over_n():
    grid = phi_random_baseline(2, 3, 10)
    torch.testing.assert_close(torch.tensor(grid), torch.tensor([[0.1, 0.2, 0.3], [0.2, 0.2, 0.3]]))


def test_random_gaussian_adapters_come_close_to_the_baseline_on_average():
    n, seeds = 64, 20
    sampled = sum(torch.tensor(phi_grid(random_factor((4, n), 2 * s), random_factor((8, n), 2 * s + 1)))
                  for s in range(seeds)) / seeds
    torch.testing.assert_close(sampled, torch.tensor(phi_random_baseline(4, 8, n)), rtol=0, atol=0.03)


@pytest.mark.parametrize("field,value", [("r1", 0), ("r2", 2.0), ("n", True), ("n", -1)])
def test_bad_baseline_sizes_raise_naming_the_field(field, value):
    with pytest.raises(ValueError, match=field):
        phi_random_baseline(**{"r1": 2, "r2": 2, "n": 8} | {field: value})


# --- amplification and direction overlap ----------------------------------------------------------------------------
def test_an_update_along_ws_top_direction_is_not_amplified():
    W, U, V = known_svd()
    dW = 1.0 * torch.outer(U[:, 0], V[:, 0])
    row = amplification(W, dW, r=1)
    assert row["proj_delta_dirs"] == pytest.approx(10.0, rel=1e-5)  # ΔW's direction is W's σ = 10 one
    assert row["factor"] == pytest.approx(1.0 / 10.0, rel=1e-5)     # ‖ΔW‖ / σ_top < 1
    assert row["delta_norm"] == pytest.approx(1.0, rel=1e-6)


def test_an_update_along_ws_weakest_direction_is_amplified():
    W, U, V = known_svd()
    dW = 1.0 * torch.outer(U[:, -1], V[:, -1])
    row = amplification(W, dW, r=1)
    assert row["proj_delta_dirs"] == pytest.approx(0.05, rel=1e-4)
    assert row["factor"] == pytest.approx(1.0 / 0.05, rel=1e-4)
    assert row["factor"] > 100 * amplification(W, torch.outer(U[:, 0], V[:, 0]), r=1)["factor"]


def test_proj_on_ws_own_directions_is_the_root_of_its_top_r_energy():
    W, U, V = known_svd()
    row = amplification(W, torch.outer(U[:, 3], V[:, 3]), r=2)
    assert row["proj_W_dirs"] == pytest.approx(math.sqrt(10.0 ** 2 + 5.0 ** 2), rel=1e-5)
    assert row["W_norm"] == pytest.approx(float(W.norm()), rel=1e-6)
    assert 0 < row["proj_random_dirs"] < row["proj_W_dirs"]  # Eckart–Young: no rank-2 pair beats W's own
    assert row["r"] == 2


def test_bad_amplification_inputs_raise():
    W, _, _ = known_svd()
    with pytest.raises(ValueError, match="r="):
        amplification(W, W, r=0)
    with pytest.raises(ValueError, match="r="):
        amplification(W, W, r=9)  # min(10, 8) = 8
    with pytest.raises(ValueError, match="dW"):
        amplification(W, W[:, :4], r=1)


def test_direction_overlap_is_one_inside_ws_top_subspace_and_zero_outside():
    W, U, V = known_svd()
    M = torch.randn(3, 3, generator=torch.Generator().manual_seed(4))
    inside = U[:, :3] @ M @ V[:, :3].T        # every left direction lies in span(u_1, u_2, u_3)
    outside = U[:, 4:7] @ M @ V[:, 4:7].T     # every left direction is orthogonal to it
    assert direction_overlap(W, inside, k=3) == pytest.approx([1.0] * 3, abs=1e-5)
    assert direction_overlap(W, outside, k=3) == pytest.approx([0.0] * 3, abs=1e-5)


# --- ranks -----------------------------------------------------------------------------------------------------------
def test_rank_for_energy_on_a_known_spectrum():
    sv = torch.tensor([4.0, 3.0])  # energies 16 and 9 of 25: the first holds 64%
    assert rank_for_energy(sv, 0.5) == 1
    assert rank_for_energy(sv, 0.64) == 1  # reaching the fraction exactly is enough
    assert rank_for_energy(sv, 0.9) == 2
    assert rank_for_energy(sv, 1.0) == 2
    assert rank_for_energy(torch.ones(4), 0.5) == 2


def test_rank_for_energy_of_a_zero_matrix_is_zero():
    assert rank_for_energy(torch.zeros(5), 0.9) == 0


@pytest.mark.parametrize("fraction", [0.0, -0.1, 1.5])
def test_bad_energy_fraction_raises_naming_it(fraction):
    with pytest.raises(ValueError, match="fraction"):
        rank_for_energy(torch.ones(3), fraction)


def test_rank_profile_of_a_rank_two_update():
    U, V = orthonormal(6, 2, 0), orthonormal(5, 2, 1)
    dW = (U * torch.tensor([4.0, 3.0])) @ V.T   # (6, 5), σ = 4, 3, 0, 0, 0
    profile = rank_profile(dW)
    assert (profile["rank_50"], profile["rank_90"], profile["rank_99"]) == (1, 2, 2)
    assert profile["full_rank"] == 5
    assert profile["singular_values"][:2] == pytest.approx([4.0, 3.0], rel=1e-5)
    assert len(profile["singular_values"]) == 5
    p = torch.tensor([4.0, 3.0]) / 7
    assert profile["effective_rank"] == pytest.approx(math.exp(float(-(p * p.log()).sum())), rel=1e-4)


# --- the generated E2E-style task -------------------------------------------------------------------------------------
MR = re.compile(r"([\w ]+)\[([^\]]*)\]")
SAYS = {  # how a reference says a slot whose value is not copied word for word
    ("familyFriendly", "yes"): ("is family-friendly", "welcomes families"),
    ("familyFriendly", "no"): ("is not family-friendly", "does not welcome children"),
}


def slots(mr: str) -> dict[str, str]:
    return {slot.strip(): value for slot, value in MR.findall(mr)}


@pytest.fixture(scope="module")
def task():
    return make_task(seed=0, n_train=300, n_test=60)


def test_make_task_is_the_same_for_a_seed_and_differs_between_seeds(task):
    again = make_task(seed=0, n_train=300, n_test=60)
    assert again.dataset.train == task.dataset.train and again.dataset.test == task.dataset.test
    assert again.references == task.references
    assert make_task(seed=1, n_train=300, n_test=60).dataset.train != task.dataset.train


def test_sizes_follow_the_arguments(task):
    assert len(task.dataset.train) == 300 and len(task.dataset.test) == len(task.references) == 60


def test_test_venues_never_appear_in_training(task):
    _, test_names = venue_names(0)
    seen = {slots(mr)[slot] for mr, _ in task.dataset.train for slot in ("name", "near") if slot in slots(mr)}
    assert not seen & set(test_names)
    training_text = "\n".join(p + "\n" + c for p, c in task.dataset.train)
    assert not [name for name in test_names if name in training_text]
    assert all(slots(mr)["name"] in test_names for mr, _ in task.dataset.test)


def test_every_test_input_has_references_and_its_first_is_the_test_completion(task):
    for (mr, completion), refs in zip(task.dataset.test, task.references, strict=True):
        assert 1 <= len(refs) <= 3 and len(set(refs)) == len(refs), mr
        assert completion == refs[0]


def test_every_slot_of_a_test_input_is_said_in_each_of_its_references(task):
    for (mr, _), refs in zip(task.dataset.test, task.references, strict=True):
        for slot, value in slots(mr).items():
            phrases = SAYS.get((slot, value), (value,))
            for ref in refs:
                assert any(p in ref for p in phrases), (slot, value, ref)


@pytest.mark.parametrize("field,value", [("n_train", 0), ("n_train", 2.5), ("n_train", True),
                                         ("n_test", 0), ("n_references", -1)])
def test_bad_sizes_raise_naming_the_field(field, value):
    with pytest.raises(ValueError, match=field):
        make_task(**{field: value})


# --- multi-reference BLEU and spreads --------------------------------------------------------------------------------
REFS = [["the cat sat on the mat today", "a cat was sitting on the mat"],
        ["there is a dog in the garden now", "a dog plays in the garden", "the garden has a dog in it"]]


def test_perfect_predictions_score_100():
    assert multi_bleu([REFS[0][0], REFS[1][0]], REFS) == pytest.approx(100.0)


def test_matching_any_reference_scores_100_with_unequal_reference_counts():
    assert multi_bleu([REFS[0][1], REFS[1][2]], REFS) == pytest.approx(100.0)
    assert multi_bleu([REFS[0][1], REFS[1][0]], [REFS[0], REFS[1][:1]]) == pytest.approx(100.0)


def test_a_wrong_prediction_scores_below_100():
    assert multi_bleu(["the mat sat on the cat today", REFS[1][0]], REFS) < 100.0


@pytest.mark.parametrize("predictions,references", [(["one two three four"], REFS), ([], [])])
def test_mismatched_or_empty_lists_raise(predictions, references):
    with pytest.raises(ValueError, match="predictions"):
        multi_bleu(predictions, references)


def test_spread_of_one_value_has_zero_std():
    assert spread([2.5]) == {"mean": 2.5, "std": 0.0, "min": 2.5, "max": 2.5, "n": 1}


def test_spread_skips_none_and_nan():
    s = spread([1.0, None, float("nan"), 3.0, float("inf")])
    assert (s["mean"], s["min"], s["max"], s["n"]) == (2.0, 1.0, 3.0, 2)
    assert s["std"] == pytest.approx(math.sqrt(2.0))
    assert spread([None, float("nan")]) == {"mean": None, "std": None, "min": None, "max": None, "n": 0}


# --- verdicts ---------------------------------------------------------------------------------------------------------
def loss(mean: float, std: float = 0.01, n: int = 3) -> dict:
    return {"mean": mean, "std": std, "min": mean - std, "max": mean + std, "n": n}


def rank_result(losses: dict[int, float]) -> dict:
    return {"name": "rank", "scale": "full",
            "results": {"ranks": [{"r": r, "test_loss": loss(m)} for r, m in losses.items()]}}


def amplification_result(small: float, large: float, aligned: float = 4.0) -> dict:
    """`aligned`: W's projection on ΔW's directions over its projection on random ones (the paper's is 16)."""
    ranks = [{"r": r, "modules": {"q_proj": {"table7": {"r": r, "factor": f, "proj_delta_dirs": 0.5 * aligned,
                                                          "proj_random_dirs": 0.5, "proj_W_dirs": 9.0,
                                                          "delta_norm": 1.0}}}}
             for r, f in ((4, small), (64, large))]
    return {"name": "amplification", "scale": "full", "results": {"layer": 3, "ranks": ranks}}


def learning_rate_result(ratio: float | None) -> dict:
    return {"name": "learning_rate", "scale": "quick",
            "results": {"best_ratio": ratio, "attention_vs_all": {"attention only": {"test_loss": loss(1.2)},
                                                                  "all-linear": {"test_loss": loss(1.1)}}}}


@pytest.mark.parametrize("result,expected", [
    (rank_result({1: 2.0, 2: 1.5, 4: 1.005, 8: 1.0, 64: 1.0}), HELD),      # r=4 within noise of the best
    (rank_result({1: 2.0, 4: 1.5, 8: 1.3, 16: 1.0, 64: 1.0}), SMALLER),    # r=16 needed, still below r=64
    (rank_result({1: 3.0, 4: 2.0, 8: 1.5, 16: 1.2, 64: 1.0}), NOT_HELD),   # only the biggest rank is enough
    (amplification_result(20.0, 3.0), HELD),
    (amplification_result(6.0, 3.0), SMALLER),
    (amplification_result(2.0, 4.0), NOT_HELD),
    (amplification_result(20.0, 3.0, aligned=0.9), NOT_HELD),              # no better aligned with W than random
    (learning_rate_result(10.0), HELD),
    (learning_rate_result(2.0), SMALLER),
    (learning_rate_result(0.5), NOT_HELD),
    (learning_rate_result(None), NOT_HELD),                                  # every sweep diverged
], ids=["rank-held", "rank-smaller", "rank-not", "amp-held", "amp-smaller", "amp-not", "amp-random",
        "lr-held", "lr-smaller", "lr-not", "lr-undefined"])
def test_verdicts_follow_their_rules(result, expected):
    v = verdict(result)
    assert v["verdict"] == expected and v["verdict"] in VERDICTS
    assert v["ours"].strip() and v["rule"].strip()


def test_an_unknown_replay_name_raises_naming_it():
    with pytest.raises(ValueError, match="nope"):
        verdict({"name": "nope"})
    with pytest.raises(ValueError, match="None"):
        verdict({})


def test_disagreements_are_empty_when_verdicts_agree_and_name_both_scales_when_not():
    held, not_held = learning_rate_result(10.0), learning_rate_result(0.5)
    assert disagreements(held, learning_rate_result(12.0)) == []
    [sentence] = disagreements(held | {"scale": "full"}, not_held)
    assert "full" in sentence and "quick" in sentence and HELD in sentence and NOT_HELD in sentence
