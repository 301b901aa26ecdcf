"""QLoRA from scratch: the frozen base stored in NF4, dequantized on the fly, LoRA trained on top.

QLoRA (Dettmers et al. 2023, arXiv 2305.14314) keeps every frozen Linear weight as 4-bit NF4 codes
plus one fp32 absmax per block of 64 (blockwise quantization, from the 8-bit optimizers work,
arXiv 2110.02861), and trains ordinary LoRA factors (in fp32 here) beside it:

    h = dequant(W_nf4) x + B A x · scaling

The weight is rebuilt for each matmul and thrown away again. The backward pass needs W too (for
∂L/∂x = ∂L/∂h · W); the autograd Function below dequantizes it a second time instead of keeping the
full-precision copy alive between forward and backward. That is where the memory saving comes
from: 4.5 bits per weight at rest instead of 16 or 32.
"""

from __future__ import annotations

import torch
import torch.nn as nn
from transformers.pytorch_utils import Conv1D

from ..layers import LoraLinear
from ..sharing import shared_base_copy
from ..targets import register_dispatch
from .codebook import nf4_codebook, quantize_blockwise


class _DequantMatmul(torch.autograd.Function):
    """y = x @ dequant(W)ᵀ, saving the 4-bit codes (not W) for the backward pass."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, layer: NF4Linear) -> torch.Tensor:
        ctx.layer = layer
        return x @ layer.dequantized(x.dtype).T            # (..., in) @ (in, out) -> (..., out)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return grad @ ctx.layer.dequantized(grad.dtype), None  # (..., out) @ (out, in) -> (..., in)


class NF4Linear(nn.Module):
    """A frozen linear layer whose weight (out, in) is stored as packed NF4 codes + block absmax."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None = None, block_size: int = 64):
        super().__init__()
        self.out_features, self.in_features = weight.shape
        self.block_size = block_size
        q = quantize_blockwise(weight.detach().float(), nf4_codebook(), block_size)
        codes = q.codes                                                   # (n_blocks, block) uint8 in [0, 16)
        self.register_buffer("packed", (codes[:, 0::2] << 4) | codes[:, 1::2])  # two codes per byte
        self.register_buffer("absmax", q.absmax)
        self.register_buffer("codebook", q.codebook)
        self.bias = nn.Parameter(bias.detach(), requires_grad=False) if bias is not None else None

    def dequantized(self, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """W rebuilt from its codes: codebook[code] · absmax of its block, shape (out, in)."""
        codes = torch.stack([self.packed >> 4, self.packed & 0xF], dim=-1).flatten(1)  # (n_blocks, block)
        values = self.codebook[codes.long()] * self.absmax[:, None]
        n = self.out_features * self.in_features
        return values.reshape(-1)[:n].view(self.out_features, self.in_features).to(dtype)

    @property
    def weight(self) -> torch.Tensor:
        """The dequantized weight, read-only (for norms and reports; never trained). Builds all of W:
        for its device and dtype alone, ask `weight_device_dtype()`."""
        return self.dequantized()

    def weight_device_dtype(self) -> tuple[torch.device, torch.dtype]:
        """Where W lives and the dtype it is rebuilt in (fp32), without rebuilding it."""
        return self.packed.device, torch.float32  # dequantized() rebuilds W in fp32 by default

    def storage_bytes(self) -> int:
        """Bytes held at rest: packed codes, absmax constants, codebook and bias."""
        tensors = [self.packed, self.absmax, self.codebook] + ([self.bias] if self.bias is not None else [])
        return sum(t.numel() * t.element_size() for t in tensors)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = _DequantMatmul.apply(x, self)
        return y + self.bias.to(y.dtype) if self.bias is not None else y

    def extra_repr(self) -> str:
        return f"in={self.in_features}, out={self.out_features}, nf4, block_size={self.block_size}"


class LoraNF4Linear(LoraLinear):
    """LoRA on a 4-bit base (QLoRA): the same forward; merging is refused.

    W + ΔW would have to be quantized again, and rounding to 16 levels per block would lose most of ΔW.
    """

    def merge(self, adapter_names: list[str] | None = None) -> None:
        raise ValueError("merge is not allowed on a 4-bit (NF4) base: W + ΔW would have to be quantized "
                         "again, losing most of ΔW. Merge into a full-precision copy of the model instead.")


register_dispatch(NF4Linear, LoraNF4Linear)


def quantize_model(model: nn.Module, skip: tuple[str, ...] = ("lm_head",), block_size: int = 64) -> nn.Module:
    """A copy of `model` with every Linear/Conv1D (except `skip`) stored as NF4; `model` is untouched.

    GPT-2's Conv1D keeps its weight as (in, out), so it is transposed once here and stored (out, in).
    Embeddings, norms and the output layer stay in full precision, as in QLoRA.
    """
    out = shared_base_copy(model)
    targets = [(name, m) for name, m in out.named_modules()
               if isinstance(m, (nn.Linear, Conv1D)) and name.rsplit(".", 1)[-1] not in skip]
    for name, m in targets:
        weight = m.weight.T if isinstance(m, Conv1D) else m.weight  # (out, in)
        parent, _, child = name.rpartition(".")
        setattr(out.get_submodule(parent) if parent else out, child, NF4Linear(weight, m.bias, block_size))
    return out


def weight_bytes(model: nn.Module) -> int:
    """Bytes of every unique parameter and buffer: what the base weights occupy in memory."""
    seen, total = set(), 0
    for t in list(model.parameters()) + list(model.buffers()):
        if t.data_ptr() not in seen:
            seen.add(t.data_ptr())
            total += t.numel() * t.element_size()
    return total


PRECISIONS = ("fp32", "bf16", "nf4")


def base_in_precision(model: nn.Module, precision: str) -> nn.Module:
    """The frozen base as fp32 (itself), a bf16 copy, or an NF4 copy (QLoRA). `model` is never changed."""
    if precision == "fp32":
        return model
    if precision == "bf16":
        return shared_base_copy(model).to(torch.bfloat16)  # new bf16 tensors in the copy only
    if precision == "nf4":
        return quantize_model(model)
    raise ValueError(f"precision={precision!r} is not allowed: use one of {', '.join(PRECISIONS)}")
