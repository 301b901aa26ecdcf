"""The merging walkthroughs (lora_core.teach.merging_steps) and their figures (lora_core.viz.merging).

TIES's steps are those of lora_core.combining, which tests/test_combining.py pins to PEFT 0.21; here the
walkthrough must give the same merge on the same tensors, count what each step did correctly on a hand-made
example, and show DARE's rescaled drop to be unbiased. Nothing may draw from the global RNG.
"""

import json
import math

import pytest
import torch
from peft.utils import merge_utils as peft_mu

from lora_core import combining, viz
from lora_core.teach import merging_steps as ms

# Two 2×3 task tensors, density 0.5 (k = 3 of 6 kept). Trimmed:
#   τ1 -> [[4, 0, 2], [0, -3, 0]]    τ2 -> [[0, 5, -3], [2, 0, 0]]
# Raw, the adapters disagree in sign at 4 entries; after the trim only at (0, 2): +2 against -3.
# "total" elects -1 there (2 - 3 < 0) and overrules τ1's 2; "frequency" ties (+1 - 1 = 0), elects +1 and
# overrules τ2's -3. Entry (1, 2) was trimmed away in both: TIES gives 0 there.
TAU1 = [[4.0, -1.0, 2.0], [0.5, -3.0, 0.1]]
TAU2 = [[-1.0, 5.0, -3.0], [2.0, 0.2, 0.3]]


def hand_made(method: str = "total", weights=None) -> dict:
    return ms.ties_walkthrough_of([torch.tensor(TAU1), torch.tensor(TAU2)], weights, 0.5, method)


# --- TIES -------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("method", ["total", "frequency"])
@pytest.mark.parametrize(("n", "weights", "density"),
                         [(3, None, 0.5), (3, [1.0, -0.5, 2.0], 0.3), (2, [0.7, 1.3], 1.0)])
@pytest.mark.filterwarnings("ignore:The density 1.0:UserWarning")  # PEFT's "no pruning" note
def test_the_walkthrough_equals_ties_on_the_same_tensors(method, n, weights, density):
    walk = ms.ties_walkthrough(n_adapters=n, shape=(5, 7), density=density, weights=weights,
                               majority_sign_method=method, seed=4)
    tensors = list(torch.tensor(walk["task_tensors"]))
    assert all(torch.equal(a, b) for a, b in zip(tensors, ms.task_tensors(n, (5, 7), seed=4), strict=True))
    w = weights or [1.0] * n
    merged = torch.tensor(walk["merged"])
    assert torch.equal(merged, combining.ties(tensors, w, density, method))
    assert torch.equal(merged, peft_mu.ties(tensors, torch.tensor(w), density, method))  # the oracle itself
    assert torch.equal(torch.tensor(walk["plain_sum"]), combining.task_arithmetic(tensors, w))
    steps = combining.ties_steps(tensors, w, density, method)
    assert torch.equal(torch.tensor(walk["trimmed"]), steps.trimmed)
    assert torch.equal(torch.tensor(walk["sign"]), steps.sign)
    assert torch.equal(torch.tensor(walk["agreeing"]), steps.weighted * steps.majority_sign_mask)
    assert walk["summary"]["max_abs_difference"] == pytest.approx(float((merged - torch.tensor(walk["plain_sum"]))
                                                                         .abs().max()))
    assert json.loads(json.dumps(walk)) == walk  # plain lists and numbers only


def test_the_counts_on_a_hand_made_example_with_one_sign_conflict():
    walk = hand_made("total")
    assert walk["k"] == 3 and walk["summary"]["entries"] == 6
    assert walk["steps"]["trim"] == {"kept": [3, 3], "zeroed": [3, 3]}
    assert walk["trimmed"] == [[[4, 0, 2], [0, -3, 0]], [[0, 5, -3], [2, 0, 0]]]
    assert walk["steps"]["elect"] == {"conflicts_before_trim": 4, "conflicts": 1, "positive": 4, "negative": 2}
    assert walk["sign"] == [[1, 1, -1], [1, -1, 1]]  # (1, 2): all trimmed, Σ = 0 elects +1
    assert walk["steps"]["merge"] == {"dropped": [1, 0], "dropped_total": 1, "agreeing_total": 5, "empty": 1}
    assert walk["merged"] == [[4, 5, -3], [2, -3, 0]]  # the mean of the agreeing values: one each here
    assert torch.allclose(torch.tensor(walk["plain_sum"]), torch.tensor([[3, 4, -1], [2.5, -2.8, 0.4]]))
    assert torch.allclose(torch.tensor(walk["abs_difference"]), torch.tensor([[1, 1, 2], [0.5, 0.2, 0.4]]))
    assert walk["summary"]["max_abs_difference"] == pytest.approx(2.0)
    assert walk["summary"]["sign_flips_vs_sum"] == 0


def test_frequency_overrules_the_other_adapter_on_a_tie_and_weights_come_after_the_vote():
    walk = hand_made("frequency")
    assert walk["sign"][0][2] == 1 and walk["steps"]["merge"]["dropped"] == [0, 1]
    assert walk["merged"] == [[4, 5, 2], [2, -3, 0]]
    # weights (1, -1): the vote still sees τ2's -3 as negative, so τ1's 2 is overruled; then -1·(-3) = +3
    weighted = hand_made("total", weights=[1.0, -1.0])
    assert weighted["sign"] == hand_made("total")["sign"] and weighted["merged"][0][2] == 3
    assert weighted["summary"]["sign_flips_vs_sum"] == 0
    assert weighted["plain_sum"][0][2] == pytest.approx(5.0)


def test_every_conflict_overrules_at_least_one_value_and_nothing_else_is_overruled():
    walk = ms.ties_walkthrough(n_adapters=4, shape=(8, 8), density=0.6, seed=1)
    trimmed, agrees = torch.tensor(walk["trimmed"]), torch.tensor(walk["agrees"])
    conflict = (trimmed > 0).any(0) & (trimmed < 0).any(0)
    overruled = ((trimmed != 0) & ~agrees).any(0)
    assert torch.equal(overruled, conflict) and walk["steps"]["elect"]["conflicts"] == int(conflict.sum()) > 0
    assert walk["steps"]["merge"]["dropped_total"] >= walk["steps"]["elect"]["conflicts"]
    assert walk["steps"]["trim"]["kept"] == [int(0.6 * 64)] * 4


# --- DARE -------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("density", "draws", "seed"), [(0.5, 200, 0), (0.2, 400, 3), (0.9, 50, 7)])
def test_the_dare_mean_converges_to_the_task_tensor(density, draws, seed):
    walk = ms.dare_walkthrough(shape=(6, 8), density=density, seed=seed, draws=draws)
    tau = torch.tensor(walk["original"])
    assert walk["expected_error_scale"] == pytest.approx(float(tau.abs().max()) * math.sqrt((1 - density) / density)
                                                         / math.sqrt(draws))
    assert 0 < walk["max_abs_error"] <= 5 * walk["expected_error_scale"]
    # without the 1/p the mean is p·τ, off by (1 - p)·|τ|: the bias DARE's rescale removes
    biased = (1 - density) * float(tau.abs().max())
    assert abs(walk["max_abs_error_without_rescale"] - biased) <= density * walk["max_abs_error"] + 1e-5
    one = torch.tensor(walk["dropped"])
    kept = one != 0
    assert torch.allclose(one[kept], tau[kept] / density) and walk["kept"] + walk["zeroed"] == 48
    assert walk["kept"] == int(kept.sum()) and 0 < walk["kept"] < 48
    assert json.loads(json.dumps(walk)) == walk


def test_the_dare_draw_is_combinings_random_pruning_from_the_seeded_generator():
    walk = ms.dare_walkthrough(shape=(4, 5), density=0.4, seed=11, draws=3)
    gen = torch.Generator().manual_seed(11)
    tau = torch.randn(4, 5, generator=gen)
    assert torch.equal(torch.tensor(walk["original"]), tau)
    assert torch.equal(torch.tensor(walk["dropped"]), combining.random_pruning(tau, 0.4, rescale=True, generator=gen))
    assert ms.dare_walkthrough(shape=(4, 5), density=0.4, seed=11, draws=3) == walk  # same seed, same walk
    assert ms.dare_walkthrough(shape=(4, 5), density=0.4, seed=12, draws=3)["dropped"] != walk["dropped"]


def test_density_one_keeps_everything_exactly():
    walk = ms.dare_walkthrough(density=1.0, draws=5)
    assert walk["dropped"] == walk["original"] and walk["kept"] == 48  # 1/p = 1: no change
    assert walk["max_abs_error"] < 1e-6 and walk["expected_error_scale"] == 0  # the mean rounds, nothing else


# --- no global RNG ------------------------------------------------------------------------------------------------
def test_the_walkthroughs_never_touch_the_global_rng(monkeypatch):
    state = torch.random.get_rng_state()
    for name in ("manual_seed", "seed", "set_rng_state"):
        monkeypatch.setattr(torch, name, lambda *a, _name=name, **k: pytest.fail(f"torch.{_name} was called"))
    ms.ties_walkthrough(seed=5)
    ms.dare_walkthrough(seed=5, draws=20)
    assert torch.equal(torch.random.get_rng_state(), state)


# --- figures ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("n", [2, 3])
def test_the_ties_figure_has_a_row_per_adapter_and_the_merge_row(n):
    walk = ms.ties_walkthrough(n_adapters=n, shape=(4, 6), weights=[1.0, -0.5, 2.0][:n])
    fig = viz.ties_steps_figure(walk)
    assert len(fig.data) == 3 * n + 3 and all(t.type == "heatmap" for t in fig.data)
    titles = [a.text for a in fig.layout.annotations]
    assert len(titles) == 3 * n + 3
    assert titles[:3] == ["adapter 1: task tensor τ1", "1. trim: 12 of 24 kept",
                          f"3. agreeing, × w=1: {walk['steps']['merge']['dropped'][0]} overruled"]
    assert titles[-3].startswith("2. elected sign") and titles[-2].startswith("3. TIES merge")
    assert titles[-1].startswith("plain Σ wᵢ·τᵢ")
    assert "trim → elect sign → disjoint merge" in fig.layout.title.text
    limits = {(t.zmin, t.zmax) for t in fig.data if t.name != "elected sign"}
    assert len(limits) == 1 and (lim := limits.pop())[0] == -lim[1] > -math.inf  # one range, centred at 0
    trimmed = next(t for t in fig.data if t.name == "τ1 trimmed")
    assert sum(v is None for row in trimmed.z for v in row) == 12  # zeroed cells left out (grey)


def test_the_dare_figure_shows_the_tensor_one_draw_and_the_mean():
    walk = ms.dare_walkthrough(shape=(5, 5), density=0.5, draws=100)
    fig = viz.dare_figure(walk)
    assert [t.name for t in fig.data] == ["τ", "dropped and rescaled", "mean over 100 draws"]
    titles = [a.text for a in fig.layout.annotations]
    assert titles[0] == "task tensor τ" and titles[1].startswith(f"one draw: {walk['zeroed']} dropped")
    assert titles[2].startswith("mean of 100 draws") and len({(t.zmin, t.zmax) for t in fig.data}) == 1
    assert fig.layout.title.text.startswith("DARE on one 5×5 task tensor, keep p = 0.5")


# --- validation ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("kwargs", "field"), [
    (dict(n_adapters=1), "n_adapters"), (dict(n_adapters=9), "n_adapters"), (dict(n_adapters=True), "n_adapters"),
    (dict(shape=(6,)), "shape"), (dict(shape=(0, 4)), "shape"), (dict(shape=(4, 33)), "shape"),
    (dict(density=0), "density"), (dict(density=1.5), "density"), (dict(density=float("nan")), "density"),
    (dict(weights=[1.0, 2.0]), "weights"), (dict(weights=[1.0, float("inf"), 1.0]), "weights"),
    (dict(weights="abc"), "weights"), (dict(majority_sign_method="mean"), "majority_sign_method"),
    (dict(seed=-1), "seed"), (dict(seed=1.5), "seed"),
])
def test_ties_walkthrough_refuses_bad_input_naming_the_field(kwargs, field):
    with pytest.raises(ValueError, match=rf"^{field}=.* is not allowed"):
        ms.ties_walkthrough(**kwargs)


@pytest.mark.parametrize(("kwargs", "field"), [
    (dict(shape=[2, 2, 2]), "shape"), (dict(density=-0.1), "density"), (dict(seed="0"), "seed"),
    (dict(draws=0), "draws"), (dict(draws=10.0), "draws"),
])
def test_dare_walkthrough_refuses_bad_input_naming_the_field(kwargs, field):
    with pytest.raises(ValueError, match=rf"^{field}=.* is not allowed"):
        ms.dare_walkthrough(**kwargs)


@pytest.mark.parametrize("tensors", [[], torch.zeros(2, 3), [torch.zeros(2, 3), torch.zeros(3, 2)],
                                     [torch.zeros(6)]])
def test_ties_walkthrough_of_refuses_bad_tensors(tensors):
    with pytest.raises(ValueError, match=r"^tensors=.* is not allowed"):
        ms.ties_walkthrough_of(tensors)
