"""NF4, blockwise absmax and double quantization (QLoRA, arXiv 2305.14314), checked against
bitsandbytes' published NF4 table and against brute-force references."""

import pytest
import torch

from lora_core.quant import codebook

# bitsandbytes' NF4 table (functional.py / the QLoRA paper's appendix): the oracle, used only here.
BNB_NF4 = [-1.0, -0.6961928009986877, -0.5250730514526367, -0.39491748809814453, -0.28444138169288635,
           -0.18477343022823334, -0.09105003625154495, 0.0, 0.07958029955625534, 0.16093020141124725,
           0.24611230194568634, 0.33791524171829224, 0.44070982933044434, 0.5626170039176941,
           0.7229568362236023, 1.0]


def test_nf4_codebook_matches_bitsandbytes_table():
    levels = codebook.nf4_codebook()
    assert levels.shape == (16,) and levels.dtype == torch.float32
    torch.testing.assert_close(levels, torch.tensor(BNB_NF4), atol=1e-6, rtol=0)


def test_nf4_levels_sit_at_evenly_spaced_normal_probabilities():
    normal = torch.distributions.Normal(0.0, 1.0)
    z_max = normal.icdf(torch.tensor(codebook.NF4_OFFSET, dtype=torch.float64))
    probs = normal.cdf(codebook.nf4_codebook().double() * z_max)
    torch.testing.assert_close(probs[8:], torch.linspace(0.5, codebook.NF4_OFFSET, 9, dtype=torch.float64)[1:],
                               atol=1e-6, rtol=0)
    upper = torch.linspace(0.5, codebook.NF4_OFFSET, 8, dtype=torch.float64)[1:]
    torch.testing.assert_close(1 - probs[:7], upper.flip(0),
                               atol=1e-6, rtol=0)


def test_nf4_is_asymmetric_with_an_exact_zero():
    levels = codebook.nf4_codebook()
    assert (levels > 0).sum() == 8 and (levels < 0).sum() == 7 and (levels == 0).sum() == 1
    assert levels.min() == -1.0 and levels.max() == 1.0


def test_uniform_int4_is_evenly_spaced_and_log4_halves():
    int4 = codebook.uniform_int4_codebook()
    assert int4.numel() == 16 and int4[0] == -1 and int4[-1] == 1
    torch.testing.assert_close(int4.diff(), torch.full((15,), 2 / 15))
    log4 = codebook.log4_codebook()
    positive = log4[log4 > 0]
    assert log4.numel() == 16 and positive.numel() == 8 and positive.max() == 1.0
    torch.testing.assert_close(positive[1:] / positive[:-1], torch.full((7,), 2.0))
    # "Logarithmic" and NF4 are different grids: NF4's positive levels are not a geometric series.
    nf4 = codebook.nf4_codebook()
    assert (nf4[9:] / nf4[8:-1]).std() > 0.1


def test_codes_are_the_nearest_level_of_each_absmax_scaled_block():
    w = torch.randn(37, 29, generator=torch.Generator().manual_seed(0))  # 1073 values: last block padded
    levels = codebook.nf4_codebook()
    q = codebook.quantize_blockwise(w, levels, block_size=64)
    flat = torch.nn.functional.pad(w.reshape(-1), (0, 64 * 17 - w.numel())).view(17, 64)
    absmax = flat.abs().amax(dim=1)
    torch.testing.assert_close(q.absmax, absmax)
    nearest = (flat[..., None] / absmax[:, None, None] - levels).abs().argmin(dim=-1)
    assert torch.equal(q.codes.long(), nearest)
    assert q.codes.dtype == torch.uint8 and q.codes.shape == (17, 64)
    w_hat = codebook.dequantize(q)
    assert w_hat.shape == w.shape and w_hat.dtype == w.dtype
    torch.testing.assert_close(w_hat, (levels[nearest] * absmax[:, None]).reshape(-1)[: w.numel()].view_as(w))


def test_each_block_keeps_its_largest_weight_exactly():
    w = torch.randn(4, 64, generator=torch.Generator().manual_seed(1)) * torch.tensor([[1e-3], [1.0], [50.0], [7.0]])
    w_hat = codebook.dequantize(codebook.quantize_blockwise(w, codebook.nf4_codebook(), 64))
    idx = w.abs().argmax(dim=1)
    assert torch.equal(w_hat[torch.arange(4), idx], w[torch.arange(4), idx])
    # Per-block scaling: the tiny block is not flattened by the huge one.
    assert (w_hat[0] - w[0]).abs().max() < 1e-3


def test_values_on_the_grid_round_trip_exactly_and_zero_blocks_stay_zero():
    levels = codebook.uniform_int4_codebook()
    w = torch.cat([levels * 3.0, levels * 0.5, torch.zeros(16)])
    assert torch.equal(codebook.dequantize(codebook.quantize_blockwise(w, levels, 16)), w)


def test_error_is_at_most_half_the_largest_gap_times_absmax():
    w = torch.randn(1000, generator=torch.Generator().manual_seed(2))
    levels = codebook.nf4_codebook()
    q = codebook.quantize_blockwise(w, levels, 50)
    bound = (levels.diff().max() / 2) * q.absmax.repeat_interleave(50)[: w.numel()]
    assert ((codebook.dequantize(q) - w).abs() <= bound + 1e-6).all()


def test_nf4_beats_int4_and_log4_on_normal_weights():
    w = codebook.normal_weights((576, 576), std=0.02, seed=0)
    errors = {name: codebook.quantization_error(w, cb, 64) for name, cb in codebook.codebooks().items()}
    assert errors["NF4"]["rmse"] < 0.95 * errors["int4 (uniform)"]["rmse"]
    assert errors["NF4"]["rmse"] < 0.6 * errors["log4"]["rmse"]
    assert errors["NF4"]["code_entropy_bits"] > errors["int4 (uniform)"]["code_entropy_bits"]
    assert errors["NF4"]["code_entropy_bits"] <= 4.0


def test_nf4_beats_int4_and_log4_on_a_real_smollm2_weight():
    import lora_core as lc
    try:
        model, _ = lc.load_model("smollm2-135m")
    except lc.ModelUnavailableError as err:
        pytest.skip(str(err))
    w = model.get_submodule("model.layers.15.self_attn.q_proj").weight
    before = w.detach().clone()
    rmse = {name: codebook.quantization_error(w, cb, 64)["rmse"] for name, cb in codebook.codebooks().items()}
    assert rmse["NF4"] < rmse["int4 (uniform)"] < rmse["log4"]
    assert torch.equal(w, before)  # measuring never writes the weight


def test_quantization_error_metrics_agree_with_the_round_trip():
    w = torch.randn(128, 96, generator=torch.Generator().manual_seed(3))
    cb = codebook.nf4_codebook()
    err = codebook.round_trip_error(w, cb, 64)
    m = codebook.quantization_error(w, cb, 64)
    assert m["rmse"] == pytest.approx(err.pow(2).mean().sqrt().item(), rel=1e-5)
    assert m["max_abs_error"] == pytest.approx(err.abs().max().item(), rel=1e-6)
    assert m["relative_frobenius_error"] == pytest.approx((err.norm() / w.norm()).item(), rel=1e-5)
    assert 0 < m["mean_abs_error"] < m["rmse"] < m["max_abs_error"]


def test_smaller_blocks_give_smaller_error_on_heavy_tailed_weights():
    g = torch.Generator().manual_seed(4)
    w = torch.randn(256, 256, generator=g)
    w[::7, ::11] *= 30  # sparse outliers, as in real LLM weights
    rmse = [codebook.quantization_error(w, codebook.nf4_codebook(), b)["rmse"] for b in (16, 64, 1024)]
    assert rmse[0] < rmse[1] < rmse[2]


def test_constant_bits_per_param_matches_the_paper():
    assert codebook.constant_bits_per_param(64, double_quant=False) == 0.5
    assert codebook.constant_bits_per_param(64, double_quant=True) == pytest.approx(8 / 64 + 32 / (64 * 256))
    assert round(codebook.constant_bits_per_param(64, double_quant=True), 3) == 0.127
    assert codebook.constant_bits_per_param(128, double_quant=False) == 0.25


def test_double_quantization_measured_bits_and_reconstruction():
    w = codebook.normal_weights((1024, 1024), std=0.02, seed=5)
    q = codebook.quantize_blockwise(w, codebook.nf4_codebook(), 64)
    dq = codebook.double_quantize(q.absmax, block_size=256, weight_block_size=64)
    assert dq.mean == pytest.approx(q.absmax.mean().item())
    assert dq.q.codes.shape == (64, 256) and dq.q.code_bits == 8     # 16,384 constants in blocks of 256
    # Measured storage: 8-bit codes + one fp32 per 256 constants + the mean; the formula ignores the mean.
    assert dq.bits_per_param() == pytest.approx(codebook.constant_bits_per_param(64, True), abs=1e-4)
    assert dq.bits_per_param() < q.storage_bits()["constants"] / q.numel / 3
    assert dq.max_relative_error(q.absmax) < 0.02
    assert dq.max_relative_error(q.absmax) > 0          # it is lossy, and the test can tell


def test_value_histogram_counts_every_value():
    x = torch.randn(10_000, generator=torch.Generator().manual_seed(6))
    edges, counts = codebook.value_histogram(x, bins=40)
    assert edges.numel() == 41 and counts.sum().item() == 10_000
    edges, counts = codebook.value_histogram(x, bins=10, limit=1.0)
    assert edges[0] == -1 and edges[-1] == 1 and counts.sum().item() == (x.abs() <= 1).sum().item()


@pytest.mark.parametrize(("call", "field"), [
    (lambda: codebook.quantize_blockwise(torch.ones(8), torch.ones(4, 4)), "codebook"),
    (lambda: codebook.quantize_blockwise(torch.ones(8), torch.tensor([0.0, 2.0])), "codebook"),
    (lambda: codebook.quantize_blockwise(torch.ones(8), codebook.nf4_codebook(), 0), "block_size"),
    (lambda: codebook.quantize_blockwise(torch.ones(0), codebook.nf4_codebook()), "w"),
    (lambda: codebook.double_quantize(torch.ones(2, 2)), "absmax"),
    (lambda: codebook.constant_bits_per_param(64, True, dq_block=0), "dq_block"),
    (lambda: codebook.value_histogram(torch.ones(3), bins=0), "bins"),
    (lambda: codebook.nf4_codebook(offset=1.5), "offset"),
], ids=["codebook-2d", "codebook-outside-[-1,1]", "block_size=0", "empty-w", "absmax-2d", "dq_block=0", "bins=0",
        "offset=1.5"])
def test_bad_input_names_the_field(call, field):
    with pytest.raises(ValueError, match=rf"^{field}="):
        call()


def test_the_module_names_qloras_three_ideas_and_attributes_blockwise_and_the_offset():
    doc = codebook.__doc__
    assert "NF4, double quantization and paged optimizers" in doc
    assert "Blockwise absmax** (from arXiv 2110.02861)" in doc
    assert "create_normal_map" in doc and "gives no value for it" in doc
    assert codebook.NF4_OFFSET == pytest.approx(1 - 0.5 * (1 / 30 + 1 / 32), abs=1e-7)
