"""NF4 and double quantization from scratch: QLoRA's 4-bit base, without bitsandbytes.

QLoRA (Dettmers et al. 2023, arXiv 2305.14314, section 3) stores the frozen base in 4 bits so that
LoRA (Hu et al. 2021, arXiv 2106.09685) can fine-tune a 65B model on one GPU. Its three ideas are
NF4, double quantization and paged optimizers; this module builds the first two (paged optimizers
move optimizer states between GPU and CPU memory and need no code here: see quant/memory.py and
lesson 08). Both rest on blockwise absmax quantization, which QLoRA takes from the earlier 8-bit
optimizers work (Dettmers et al. 2021, arXiv 2110.02861):

* **Blockwise absmax** (from arXiv 2110.02861): the weights are cut into blocks of 64; each block
  is divided by its own largest |w| (one fp32 constant per block), so one outlier only coarsens
  its own 64 neighbours.
* **NF4 (4-bit NormalFloat):** 16 levels placed at quantiles of N(0, 1), so that weights drawn
  from a normal distribution land in each level about equally often. The levels come from the
  inverse normal CDF; there is nothing logarithmic about them (seed 002 says otherwise).
* **Double quantization:** the fp32 block constants are themselves quantized to 8 bits in
  blocks of 256, which brings their cost from 32/64 = 0.5 to 8/64 + 32/(64·256) ≈ 0.127 bits
  per weight.

The construction of the NF4 table follows bitsandbytes' `create_normal_map` (the code
released with the paper); tests check all 16 values against bitsandbytes' table. Its edge
probability, offset = 0.9677083 = 1 − ½(1/30 + 1/32), is that function's default argument: the
paper describes quantiles of N(0, 1) but gives no value for it. Codes are kept one per uint8 here
for clarity; bitsandbytes packs two 4-bit codes into each byte, and the bit counts below assume
that packing.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ..config import reject

NF4_OFFSET = 0.9677083  # the edge probability: bitsandbytes' create_normal_map default, not a value from the paper
FP32_BITS = 32


# ---------------------------------------------------------------- codebooks ---


def nf4_codebook(offset: float = NF4_OFFSET) -> torch.Tensor:
    """The 16 NF4 levels, sorted, in [-1, 1], with an exact 0.

    Asymmetric on purpose: 8 positive levels are Φ⁻¹ of 9 evenly spaced probabilities from
    `offset` down to 0.5 (the last one, Φ⁻¹(0.5) = 0, is dropped), 7 negative levels mirror
    Φ⁻¹ of 8 probabilities from `offset` to 0.5 (again without 0.5), and 0 itself is the 16th.
    A 4-bit code has 16 values: a symmetric table with an exact zero would waste one.
    Dividing by Φ⁻¹(offset) puts the extreme levels at exactly ±1, where absmax scaling puts
    each block's largest weight.
    """
    if not 0.5 < offset < 1.0:
        reject("offset", offset, "a probability in (0.5, 1)")
    # float64 throughout: Φ⁻¹ is steep near `offset`, and we want bitsandbytes' values to 1e-7.
    positive = torch.special.ndtri(torch.linspace(offset, 0.5, 9, dtype=torch.float64)[:-1])   # (8,)
    negative = -torch.special.ndtri(torch.linspace(offset, 0.5, 8, dtype=torch.float64)[:-1])  # (7,)
    levels = torch.cat([positive, torch.zeros(1, dtype=torch.float64), negative]).sort().values
    return (levels / levels.max()).float()


def uniform_int4_codebook() -> torch.Tensor:
    """16 evenly spaced levels from -1 to 1 (step 2/15): plain symmetric 4-bit integers.

    Symmetric means no exact zero: the two middle levels are ±1/15.
    """
    return torch.linspace(-1.0, 1.0, 16)


def log4_codebook() -> torch.Tensor:
    """A logarithmic 4-bit grid: a sign bit and a 3-bit exponent, ±2⁻ᵏ for k = 0..7.

    This is what "logarithmic scaling" would mean: every level is half the next one. It is
    here only to compare with NF4, which is built from normal quantiles instead.
    """
    magnitudes = 2.0 ** -torch.arange(7, -1, -1, dtype=torch.float32)  # 1/128 ... 1
    return torch.cat([-magnitudes.flip(0), magnitudes])


def codebooks() -> dict[str, torch.Tensor]:
    """The three 4-bit codebooks the app compares, by display name."""
    return {"NF4": nf4_codebook(), "int4 (uniform)": uniform_int4_codebook(), "log4": log4_codebook()}


def normal_density_on_codebook_scale(offset: float = NF4_OFFSET, points: int = 201
                                     ) -> tuple[torch.Tensor, torch.Tensor]:
    """(x, pdf) of N(0, 1) drawn on NF4's [-1, 1] axis, i.e. z = x·Φ⁻¹(offset).

    The density is per unit of x, so it is the distribution NF4 is designed for after the
    normalisation that put its extreme levels at ±1.
    """
    z_max = torch.special.ndtri(torch.tensor(offset, dtype=torch.float64))
    x = torch.linspace(-1.0, 1.0, points, dtype=torch.float64)
    z = x * z_max
    pdf = torch.exp(-0.5 * z**2) / math.sqrt(2 * math.pi) * z_max  # change of variable dz = z_max·dx
    return x.float(), pdf.float()


def _check_codebook(codebook: torch.Tensor) -> torch.Tensor:
    if not isinstance(codebook, torch.Tensor) or codebook.ndim != 1 or not 2 <= codebook.numel() <= 256:
        reject("codebook", getattr(codebook, "shape", codebook), "a 1-D tensor of 2 to 256 levels")
    levels = codebook.detach().float().cpu().sort().values
    if not torch.isfinite(levels).all() or levels.abs().max() > 1.0 + 1e-6 or (levels.diff() <= 0).any():
        reject("codebook", levels.tolist(), "distinct finite levels within [-1, 1]")
    return levels


def _check_block_size(block_size: int, name: str = "block_size") -> int:
    if isinstance(block_size, bool) or not isinstance(block_size, int) or block_size < 1:
        reject(name, block_size, "a positive integer such as 64")
    return block_size


# ------------------------------------------------------ blockwise quantization ---


@dataclass
class QuantizedTensor:
    """A tensor stored as codebook indices plus one absmax per block."""

    codes: torch.Tensor      # (n_blocks, block_size) uint8 indices into `codebook`
    absmax: torch.Tensor     # (n_blocks,) fp32: the largest |w| of each block
    shape: torch.Size        # the original shape; the last block is zero-padded
    block_size: int
    codebook: torch.Tensor   # (levels,) sorted, in [-1, 1]
    dtype: torch.dtype = torch.float32  # dtype of the original tensor, restored by dequantize

    @property
    def numel(self) -> int:
        return math.prod(self.shape)

    @property
    def code_bits(self) -> int:
        """Bits per code: 4 for a 16-level codebook."""
        return math.ceil(math.log2(self.codebook.numel()))

    def storage_bits(self) -> dict[str, int]:
        """Bits actually needed: packed codes (padding included) and fp32 block constants."""
        return {"codes": self.codes.numel() * self.code_bits, "constants": self.absmax.numel() * FP32_BITS}


def block_normalize(w: torch.Tensor, block_size: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    """Cut `w` into blocks and divide each by its absmax: (blocks in [-1, 1], absmax).

    Returns (n_blocks, block_size) and (n_blocks,). The tail is zero-padded; an all-zero block
    keeps absmax 0 and is divided by 1 instead, so it stays zero.
    """
    _check_block_size(block_size)
    flat = w.detach().reshape(-1).float()
    if flat.numel() == 0:
        reject("w", tuple(w.shape), "a tensor with at least one element")
    pad = (-flat.numel()) % block_size
    blocks = torch.nn.functional.pad(flat, (0, pad)).view(-1, block_size)  # (n_blocks, block_size)
    absmax = blocks.abs().amax(dim=1)                                      # (n_blocks,)
    scale = torch.where(absmax > 0, absmax, torch.ones_like(absmax))
    return blocks / scale[:, None], absmax


def quantize_blockwise(w: torch.Tensor, codebook: torch.Tensor, block_size: int = 64) -> QuantizedTensor:
    """Round every weight, after dividing by its block's absmax, to the nearest codebook level."""
    normalized, absmax = block_normalize(w, block_size)
    levels = _check_codebook(codebook).to(normalized.device)                # checked on the CPU, used beside w
    # Nearest level = which gap between midpoints the value falls in: O(n) memory, unlike
    # an (n, 16) distance matrix, so a 28M-entry embedding quantizes too.
    midpoints = (levels[1:] + levels[:-1]) / 2                               # (levels - 1,)
    codes = torch.bucketize(normalized, midpoints).to(torch.uint8)           # (n_blocks, block_size)
    return QuantizedTensor(codes, absmax, w.shape, block_size, levels, w.dtype)


def dequantize(q: QuantizedTensor) -> torch.Tensor:
    """ŵ = codebook[code] · absmax of its block, back in the original shape and dtype."""
    values = q.codebook[q.codes.long()] * q.absmax[:, None]                  # (n_blocks, block_size)
    return values.reshape(-1)[: q.numel].reshape(q.shape).to(q.dtype)


# ------------------------------------------------------- double quantization ---


def int8_codebook() -> torch.Tensor:
    """255 evenly spaced levels in [-1, 1] with an exact 0, used for the block constants.

    bitsandbytes quantizes the constants with its 8-bit dynamic map instead; either way each
    constant costs 8 bits, which is all the bit count below depends on.
    """
    return torch.linspace(-1.0, 1.0, 255)


@dataclass
class DoubleQuantized:
    """Block constants stored in 8 bits: codes, one fp32 absmax per 256 of them, and their mean."""

    q: QuantizedTensor        # the centred constants, quantized in blocks of `q.block_size`
    mean: float               # subtracted first: the constants are all positive, so centring
                              # them uses the signed 8-bit range fully (QLoRA, section 3)
    weight_block_size: int    # the block size of the weights these constants scale

    def dequantize(self) -> torch.Tensor:
        """The reconstructed fp32 block constants."""
        return dequantize(self.q) + self.mean

    def max_relative_error(self, absmax: torch.Tensor) -> float:
        """Largest |reconstructed − original| / original over the non-zero block constants."""
        original = absmax.float()
        nonzero = original > 0
        if not nonzero.any():
            return 0.0
        return ((self.dequantize() - original).abs()[nonzero] / original[nonzero]).max().item()

    def bits_per_param(self) -> float:
        """Bits spent on constants per weight: 8-bit codes + fp32 second-level absmax + the mean."""
        n_constants = self.q.numel
        bits = n_constants * 8 + self.q.absmax.numel() * FP32_BITS + FP32_BITS
        return bits / (n_constants * self.weight_block_size)


def double_quantize(absmax: torch.Tensor, block_size: int = 256, weight_block_size: int = 64) -> DoubleQuantized:
    """Quantize fp32 block constants to 8 bits in blocks of `block_size`, after subtracting the mean."""
    _check_block_size(block_size)
    _check_block_size(weight_block_size, "weight_block_size")
    if not isinstance(absmax, torch.Tensor) or absmax.ndim != 1 or absmax.numel() == 0:
        reject("absmax", getattr(absmax, "shape", absmax), "a 1-D tensor of block constants")
    mean = absmax.float().mean().item()
    return DoubleQuantized(quantize_blockwise(absmax.float() - mean, int8_codebook(), block_size), mean,
                           weight_block_size)


def constant_bits_per_param(block_size: int = 64, double_quant: bool = False, dq_block: int = 256) -> float:
    """Bits per weight spent on block constants.

    Without double quantization: one fp32 absmax per block, 32 / block_size (0.5 at 64).
    With it: an 8-bit code per block plus one fp32 constant per `dq_block` blocks,
    8 / block_size + 32 / (block_size · dq_block) (≈ 0.127 at 64 and 256).
    """
    _check_block_size(block_size)
    _check_block_size(dq_block, "dq_block")
    if not double_quant:
        return FP32_BITS / block_size
    return 8 / block_size + FP32_BITS / (block_size * dq_block)


# ------------------------------------------------------------ measurements ---


def round_trip_error(w: torch.Tensor, codebook: torch.Tensor, block_size: int = 64) -> torch.Tensor:
    """ŵ − w in fp32, same shape as w: what quantizing and dequantizing does to each weight."""
    return dequantize(quantize_blockwise(w, codebook, block_size)).float() - w.detach().float()


def quantization_error(w: torch.Tensor, codebook: torch.Tensor, block_size: int = 64) -> dict[str, float]:
    """How far the 4-bit round trip moves `w`, plus how evenly the codes are used.

    Keys: mean_abs_error, rmse, max_abs_error, relative_frobenius_error (‖w − ŵ‖_F / ‖w‖_F), and
    code_entropy_bits: the entropy of the code histogram. A codebook whose levels are all used
    equally often reaches log2(levels) = 4 bits, the most information 4 bits can carry.
    """
    q = quantize_blockwise(w, codebook, block_size)
    x = w.detach().float()
    err = dequantize(q).float() - x
    counts = torch.bincount(q.codes.reshape(-1)[: q.numel].long(), minlength=q.codebook.numel()).double()
    p = counts[counts > 0] / q.numel
    return {
        "mean_abs_error": err.abs().mean().item(),
        "rmse": err.pow(2).mean().sqrt().item(),
        "max_abs_error": err.abs().max().item(),
        "relative_frobenius_error": (err.norm() / x.norm().clamp_min(torch.finfo(torch.float32).tiny)).item(),
        "code_entropy_bits": -(p * p.log2()).sum().item(),
    }


def value_histogram(values: torch.Tensor, bins: int = 80, limit: float | None = None
                    ) -> tuple[torch.Tensor, torch.Tensor]:
    """(bin edges, counts) of `values` over [-limit, limit] (default: the largest |value|).

    Counting here, not in the browser, keeps a million-entry weight out of the figure's JSON.
    """
    if isinstance(bins, bool) or not isinstance(bins, int) or bins < 1:
        reject("bins", bins, "a positive integer")
    x = values.detach().reshape(-1).float()
    hi = float(limit) if limit is not None else x.abs().max().item() or 1.0
    counts = torch.histc(x, bins=bins, min=-hi, max=hi)
    return torch.linspace(-hi, hi, bins + 1), counts


def normal_weights(shape: tuple[int, ...] = (576, 576), std: float = 0.02, seed: int = 0) -> torch.Tensor:
    """A seeded N(0, std²) matrix: the idealised weight NF4 was designed for, as a control."""
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(shape, generator=generator) * std
