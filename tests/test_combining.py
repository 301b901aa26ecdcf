"""lora_core.combining equals peft.utils.merge_utils (PEFT 0.21) value for value, and DARE's masks bit for bit.

PEFT draws DARE's masks from torch's global RNG, so those comparisons seed it, inside `torch.random.fork_rng()`
so the global state is restored afterwards. Our tensors come from a local generator.
"""

import warnings

import pytest
import torch
from peft.utils import merge_utils as peft_mu

from lora_core import combining as cb

DENSITIES = [0.1, 0.5, 1.0]
WEIGHTS = [[1.0, 0.5], [0.7, -1.3], [1.0, -0.5, 2.0], [0.3, 0.3, 0.3]]  # 2 and 3 tensors, with negatives
SIGN_METHODS = ["total", "frequency"]


def _tensors(n: int, shape=(8, 16), seed: int = 0, dtype=torch.float32) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(shape, generator=g).to(dtype) for _ in range(n)]


def _peft(fn, *args, **kwargs):
    """Call PEFT, silencing its 'density >= 1, no pruning' UserWarning."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return fn(*args, **kwargs)


def _peft_seeded(seed: int, fn, *args, **kwargs):
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return _peft(fn, *args, **kwargs)


def _ours_seeded(seed: int, fn, *args, **kwargs):
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return fn(*args, **kwargs)


# ---------------------------------------------------------------------------------------------------------------
# Deterministic functions: torch.equal with PEFT


@pytest.mark.parametrize("density", [*DENSITIES, 0.29, 0.05])
@pytest.mark.parametrize("shape", [(8, 16), (10, 10), (3, 3), (4, 2, 5)])
def test_magnitude_based_pruning_equals_peft(density, shape):
    t = _tensors(1, shape, seed=1)[0]
    ours = cb.magnitude_based_pruning(t, density)
    assert torch.equal(ours, peft_mu.magnitude_based_pruning(t, density))
    assert torch.equal(cb.prune(t, density, "magnitude"), _peft(peft_mu.prune, t, density, "magnitude"))
    assert int((ours != 0).sum()) == int(density * t.numel())  # k rounds down


def test_k_rounds_down_and_can_be_zero():
    t = _tensors(1, (10, 10))[0]
    assert int((cb.magnitude_based_pruning(t, 0.29) != 0).sum()) == 28  # 0.29 · 100 = 28.999999999999996
    small = _tensors(1, (3, 3))[0]
    assert torch.equal(cb.magnitude_based_pruning(small, 0.1), torch.zeros(3, 3))   # int(0.9) = 0: nothing kept
    assert torch.equal(peft_mu.magnitude_based_pruning(small, 0.1), torch.zeros(3, 3))
    # TIES of all-zero trimmed tensors is 0, not 0/0: the agreeing count is clamped to 1
    merged = cb.ties(_tensors(2, (3, 3)), [1.0, 1.0], 0.1)
    assert torch.equal(merged, torch.zeros(3, 3))
    assert torch.equal(merged, peft_mu.ties(_tensors(2, (3, 3)), torch.tensor([1.0, 1.0]), 0.1))


def test_trimming_keeps_the_largest_magnitudes():
    t = torch.tensor([[0.1, -5.0, 0.3], [2.0, -0.2, 0.0]])
    assert torch.equal(cb.trim(t, 0.5), torch.tensor([[0.0, -5.0, 0.3], [2.0, 0.0, 0.0]]))
    assert cb.trim is cb.magnitude_based_pruning


@pytest.mark.parametrize("method", SIGN_METHODS)
@pytest.mark.parametrize("n", [2, 3])
def test_majority_sign_mask_equals_peft(method, n):
    stacked = torch.stack(_tensors(n, seed=n))
    stacked[:, 0, :4] = 0.0                                   # pruned entries never agree
    stacked[:, 1, 0] = torch.tensor([1.0, -1.0, 0.0][:n])     # a tie (sum 0 and equal counts) elects +1
    ours = cb.calculate_majority_sign_mask(stacked, method)
    assert ours.dtype == torch.bool
    assert torch.equal(ours, peft_mu.calculate_majority_sign_mask(stacked, method))
    assert not ours[:, 0, :4].any()
    assert int(cb.elect_sign(stacked, method)[1, 0]) == 1


def test_total_and_frequency_elect_differently():
    stacked = torch.tensor([[5.0], [-1.0], [-1.0]])  # the sum says +, the head count says -
    assert cb.elect_sign(stacked, "total").tolist() == [1]
    assert cb.elect_sign(stacked, "frequency").tolist() == [-1]


@pytest.mark.parametrize("n", [2, 3])
def test_disjoint_merge_equals_peft(n):
    stacked = torch.stack(_tensors(n, seed=10 + n))
    mask = peft_mu.calculate_majority_sign_mask(stacked)
    assert torch.equal(cb.disjoint_merge(stacked, mask), peft_mu.disjoint_merge(stacked, mask))


@pytest.mark.parametrize("weights", WEIGHTS, ids=str)
def test_task_arithmetic_equals_peft(weights):
    ts = _tensors(len(weights), seed=2)
    w = torch.tensor(weights)
    assert torch.equal(cb.task_arithmetic(ts, w), peft_mu.task_arithmetic(ts, w))
    assert torch.equal(cb.task_arithmetic(ts, weights), peft_mu.task_arithmetic(ts, w))  # a list works too


@pytest.mark.parametrize("density", DENSITIES)
@pytest.mark.parametrize("weights", WEIGHTS, ids=str)
def test_magnitude_prune_equals_peft(weights, density):
    ts = _tensors(len(weights), seed=3)
    w = torch.tensor(weights)
    assert torch.equal(cb.magnitude_prune(ts, w, density), _peft(peft_mu.magnitude_prune, ts, w, density))


@pytest.mark.parametrize("method", SIGN_METHODS)
@pytest.mark.parametrize("density", DENSITIES)
@pytest.mark.parametrize("weights", WEIGHTS, ids=str)
def test_ties_equals_peft_and_its_steps(weights, density, method):
    ts = _tensors(len(weights), seed=4)
    w = torch.tensor(weights)
    expected = _peft(peft_mu.ties, ts, w, density, method)
    ours = cb.ties(ts, w, density, method)
    assert torch.equal(ours, expected)
    steps = cb.ties_steps(ts, w, density, method)
    assert torch.equal(steps.merged, ours)
    assert steps.trimmed.shape == steps.weighted.shape == steps.majority_sign_mask.shape == (len(weights), 8, 16)
    assert steps.sign.shape == steps.merged.shape == (8, 16)
    trimmed = torch.stack([_peft(peft_mu.prune, t, density, "magnitude") for t in ts])
    assert torch.equal(steps.trimmed, trimmed)
    assert torch.equal(steps.majority_sign_mask, peft_mu.calculate_majority_sign_mask(trimmed, method))
    assert set(steps.sign.unique().tolist()) <= {-1, 1}


# ---------------------------------------------------------------------------------------------------------------
# DARE: the same masks as PEFT under the same seed, from the global RNG or from a generator


@pytest.mark.parametrize("rescale", [False, True])
@pytest.mark.parametrize("density", DENSITIES)
def test_random_pruning_masks_equal_peft(density, rescale):
    t = _tensors(1, seed=5)[0]
    for seed in (0, 1, 1234):
        expected = _peft_seeded(seed, peft_mu.random_pruning, t, density, rescale)
        assert torch.equal(_ours_seeded(seed, cb.random_pruning, t, density, rescale), expected)
        g = torch.Generator().manual_seed(seed)
        assert torch.equal(cb.random_pruning(t, density, rescale, generator=g), expected)
    # via prune: density 1 skips the draw entirely, as PEFT's prune does
    expected = _peft_seeded(7, peft_mu.prune, t, density, "random", rescale)
    assert torch.equal(_ours_seeded(7, cb.prune, t, density, "random", rescale), expected)
    assert torch.equal(cb.prune(t, density, "random", rescale, torch.Generator().manual_seed(7)), expected)


def test_random_masks_depend_on_the_seed_and_keep_about_density():
    t = torch.randn(64, 64, generator=torch.Generator().manual_seed(0))
    a = cb.random_pruning(t, 0.3, False, torch.Generator().manual_seed(0))
    b = cb.random_pruning(t, 0.3, False, torch.Generator().manual_seed(1))
    assert not torch.equal(a, b)
    assert abs(float((a != 0).float().mean()) - 0.3) < 0.03
    rescaled = cb.random_pruning(t, 0.3, True, torch.Generator().manual_seed(0))
    torch.testing.assert_close(rescaled, a / 0.3, rtol=0, atol=0)


def test_a_generator_leaves_the_global_rng_alone():
    ts = _tensors(3, seed=6)
    with torch.random.fork_rng():
        torch.manual_seed(0)
        before = torch.get_rng_state()
        cb.dare_ties(ts, [1.0, 1.0, 1.0], 0.5, generator=torch.Generator().manual_seed(0))
        assert torch.equal(torch.get_rng_state(), before)


@pytest.mark.parametrize("density", DENSITIES)
@pytest.mark.parametrize("weights", WEIGHTS, ids=str)
def test_dare_linear_equals_peft_under_the_same_seed(weights, density):
    ts = _tensors(len(weights), seed=7)
    w = torch.tensor(weights)
    for seed in (0, 42):
        expected = _peft_seeded(seed, peft_mu.dare_linear, ts, w, density)
        assert torch.equal(_ours_seeded(seed, cb.dare_linear, ts, w, density), expected)
        assert torch.equal(cb.dare_linear(ts, w, density, generator=torch.Generator().manual_seed(seed)), expected)


@pytest.mark.parametrize("method", SIGN_METHODS)
@pytest.mark.parametrize("density", DENSITIES)
@pytest.mark.parametrize("weights", WEIGHTS, ids=str)
def test_dare_ties_equals_peft_under_the_same_seed(weights, density, method):
    ts = _tensors(len(weights), seed=8)
    w = torch.tensor(weights)
    for seed in (0, 42):
        expected = _peft_seeded(seed, peft_mu.dare_ties, ts, w, density, method)
        assert torch.equal(_ours_seeded(seed, cb.dare_ties, ts, w, density, method), expected)
        g = torch.Generator().manual_seed(seed)
        assert torch.equal(cb.dare_ties(ts, w, density, method, generator=g), expected)


def test_density_one_draws_nothing():
    ts = _tensors(2, seed=9)
    with torch.random.fork_rng():
        torch.manual_seed(0)
        before = torch.get_rng_state()
        cb.dare_linear(ts, [1.0, 1.0], 1.0)
        cb.dare_ties(ts, [1.0, 1.0], 1.0)
        assert torch.equal(torch.get_rng_state(), before)
    assert torch.equal(cb.dare_linear(ts, [1.0, 2.0], 1.0), cb.task_arithmetic(ts, [1.0, 2.0]))
    assert torch.equal(cb.dare_ties(ts, [1.0, 2.0], 1.0), cb.ties(ts, [1.0, 2.0], 1.0))


# ---------------------------------------------------------------------------------------------------------------
# PEFT's surprises, pinned


def test_ties_votes_before_weighting_so_a_negative_weight_does_not_flip_the_vote():
    a = torch.tensor([[1.0, 2.0]])
    b = torch.tensor([[3.0, -1.0]])
    steps = cb.ties_steps([a, b], [1.0, -1.0], 1.0)
    assert steps.sign.tolist() == [[1, 1]]           # the sign of a + b, not of a - b = [[-2, 3]]
    # entry 0: both agree (+), weighted values 1 and -3 -> mean -1; entry 1: only a agrees -> 2
    assert steps.merged.tolist() == [[-1.0, 2.0]]
    assert torch.equal(steps.merged, _peft(peft_mu.ties, [a, b], torch.tensor([1.0, -1.0]), 1.0))
    # negating the tensor instead of its weight changes the vote and the result
    assert not torch.equal(cb.ties([a, -b], [1.0, 1.0], 1.0), steps.merged)


def test_ties_averages_where_the_others_sum():
    ts = [torch.tensor([[1.0, -2.0]])] * 2
    assert cb.ties(ts, [1.0, 1.0], 1.0).tolist() == [[1.0, -2.0]]           # mean of agreeing values
    assert cb.task_arithmetic(ts, [1.0, 1.0]).tolist() == [[2.0, -4.0]]     # sum
    assert cb.magnitude_prune(ts, [1.0, 1.0], 1.0).tolist() == [[2.0, -4.0]]


def test_dtype_promotion_matches_peft():
    ts = _tensors(2, seed=11, dtype=torch.bfloat16)
    w32, w16 = torch.tensor([1.0, -0.5]), torch.tensor([1.0, -0.5], dtype=torch.bfloat16)
    assert cb.task_arithmetic(ts, w32).dtype == peft_mu.task_arithmetic(ts, w32).dtype == torch.float32
    assert cb.task_arithmetic(ts, w16).dtype == torch.bfloat16
    # TIES divides by clamp(int64 count, min=1.0), a float32 tensor: bf16 in, float32 out even with bf16 weights
    assert cb.ties(ts, w16, 0.5).dtype == peft_mu.ties(ts, w16, 0.5).dtype == torch.float32
    assert torch.equal(cb.ties(ts, w16, 0.5), peft_mu.ties(ts, w16, 0.5))
    expected = _peft_seeded(3, peft_mu.dare_linear, ts, w16, 0.1)  # p = 0.1 is stored as bf16 0.10009765625
    assert torch.equal(cb.dare_linear(ts, w16, 0.1, generator=torch.Generator().manual_seed(3)), expected)
    assert expected.dtype == torch.bfloat16
    double = [t.double() for t in ts]
    assert cb.ties(double, w32, 0.5).dtype == torch.float64


def test_peft_lets_density_zero_through_to_nan_and_we_refuse_it():
    ts = _tensors(2)
    assert _peft(peft_mu.dare_linear, ts, torch.tensor([1.0, 1.0]), 0.0).isnan().all()
    with pytest.raises(ValueError, match="density"):
        cb.dare_linear(ts, [1.0, 1.0], 0.0)


# ---------------------------------------------------------------------------------------------------------------
# Bad input: a ValueError naming the field


@pytest.mark.parametrize("density", [0.0, -0.1, 1.5, float("nan")])
def test_density_outside_zero_one_is_refused(density):
    t = _tensors(1)[0]
    ts = _tensors(2)
    calls = [
        lambda: cb.magnitude_based_pruning(t, density),
        lambda: cb.random_pruning(t, density, True),
        lambda: cb.prune(t, density, "magnitude"),
        lambda: cb.magnitude_prune(ts, [1.0, 1.0], density),
        lambda: cb.ties(ts, [1.0, 1.0], density),
        lambda: cb.ties_steps(ts, [1.0, 1.0], density),
        lambda: cb.dare_linear(ts, [1.0, 1.0], density),
        lambda: cb.dare_ties(ts, [1.0, 1.0], density),
    ]
    for call in calls:
        with pytest.raises(ValueError, match=r"density=.*0 < density <= 1"):
            call()


def test_unknown_methods_are_refused_with_the_allowed_values():
    t = _tensors(1)[0]
    ts = _tensors(2)
    with pytest.raises(ValueError, match=r"method='bogus'.*'magnitude', 'random'"):
        cb.prune(t, 1.0, "bogus")  # PEFT returns t here: it checks density >= 1 first
    for call in [
        lambda: cb.calculate_majority_sign_mask(torch.stack(ts), "bogus"),
        lambda: cb.elect_sign(torch.stack(ts), "bogus"),
        lambda: cb.ties(ts, [1.0, 1.0], 0.5, "bogus"),
        lambda: cb.dare_ties(ts, [1.0, 1.0], 0.5, "bogus"),
    ]:
        with pytest.raises(ValueError, match=r"majority_sign_method='bogus'.*'total', 'frequency'"):
            call()


@pytest.mark.parametrize(
    "call",
    [
        lambda ts, w: cb.task_arithmetic(ts, w),
        lambda ts, w: cb.magnitude_prune(ts, w, 0.5),
        lambda ts, w: cb.ties(ts, w, 0.5),
        lambda ts, w: cb.dare_linear(ts, w, 0.5),
        lambda ts, w: cb.dare_ties(ts, w, 0.5),
    ],
    ids=["task_arithmetic", "magnitude_prune", "ties", "dare_linear", "dare_ties"],
)
def test_bad_task_tensors_or_weights_are_refused(call):
    ts = _tensors(3)
    with pytest.raises(ValueError, match="weights"):
        call(ts, [1.0, 1.0])
    with pytest.raises(ValueError, match="weights"):
        call(ts, torch.ones(3, 1))
    with pytest.raises(ValueError, match="task_tensors"):
        call([], [])
    with pytest.raises(ValueError, match=r"task_tensors.*one shape"):
        call([ts[0], ts[1][:4]], [1.0, 1.0])
