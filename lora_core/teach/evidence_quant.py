"""Quantization, precision and memory evidence: NF4 against other 4-bit grids, merging into a 4-bit
base, what each dtype holds, and training memory by method.

    from lora_core.teach import evidence_quant
    evidence_quant.codebook_comparison()["neighbour_ratios"]["log4"]   # a log grid: one constant ratio
    evidence_quant.qlora_merge_error()["nf4_requantized"]             # merge error, in units of ‖ΔW‖

Everything is computed with `quant/codebook.py` (NF4 from scratch) and `quant/memory.py` (the byte
ledger). Caches are keyed on numbers only: a weight passed in is measured on each call, never cached.
References: QLoRA (arXiv 2305.14314), LoRA (arXiv 2106.09685).
"""

from __future__ import annotations

import functools
import math

import torch

from ..quant import codebook as quant
from ..quant import memory


# --- quantization -----------------------------------------------------------------------------------
def codebook_comparison(weight: torch.Tensor | None = None, block_size: int = 64) -> dict:
    """NF4 against a uniform and a logarithmic 4-bit grid: how the levels are spaced, and the error.

    NF4's positive levels sit at evenly spaced probabilities: Φ(level · Φ⁻¹(offset)) steps by a
    constant. A log grid's neighbours have a constant *ratio* instead. Errors are measured on a
    seeded N(0, 0.02²) matrix (cached per block size), and on `weight` too when one is given
    (measured now: a cache keyed on a tensor would keep it alive and find it only by identity).
    """
    control = _control_comparison(block_size)
    if weight is None:
        return control
    w = weight.detach().float()
    real = [{"weights": "real weight", "codebook": name, **quant.quantization_error(w, cb, block_size)}
            for name, cb in control["books"].items()]
    return control | {"errors": control["errors"] + real}


@functools.lru_cache(maxsize=4)
def _control_comparison(block_size: int) -> dict:
    books = quant.codebooks()
    z_max = torch.special.ndtri(torch.tensor(quant.NF4_OFFSET, dtype=torch.float64))
    positive = books["NF4"][books["NF4"] > 0].double()
    prob_steps = torch.special.ndtr(torch.cat([torch.zeros(1, dtype=torch.float64), positive]) * z_max).diff()
    ratios = {name: (lv[lv > 0][1:] / lv[lv > 0][:-1]).tolist() for name, lv in books.items()}
    control = quant.normal_weights()
    errors = [{"weights": "N(0, 0.02²) control", "codebook": name, **quant.quantization_error(control, cb, block_size)}
              for name, cb in books.items()]
    absmax = quant.block_normalize(control, block_size)[1]
    dq = quant.double_quantize(absmax, 256, block_size)
    return {"books": books, "density": quant.normal_density_on_codebook_scale(),
            "nf4_probability_steps": prob_steps.tolist(), "neighbour_ratios": ratios, "errors": errors,
            "bits_plain": quant.constant_bits_per_param(block_size, False),
            "bits_double": quant.constant_bits_per_param(block_size, True),
            "bits_double_measured": dq.bits_per_param(), "double_quant_max_rel_error": dq.max_relative_error(absmax),
            "block_size": block_size}


@functools.lru_cache(maxsize=2)
def qlora_merge_error(r: int = 8, relative_update: float = 0.01, seed: int = 0) -> dict:
    """What merging a LoRA update into a 4-bit base costs: error relative to ‖ΔW‖.

    The served weight is Ŵ + ΔW (Ŵ the dequantized NF4 base). Merging and storing the sum back in
    NF4 rounds it again; storing it in bf16 rounds far less; keeping the adapter apart is exact.
    """
    W = quant.normal_weights(seed=seed)
    g = torch.Generator().manual_seed(seed + 1)
    delta = torch.randn(W.shape[0], r, generator=g) @ torch.randn(r, W.shape[1], generator=g)  # rank r
    delta *= relative_update * W.norm() / delta.norm()
    nf4 = quant.nf4_codebook()
    w_hat = quant.dequantize(quant.quantize_blockwise(W, nf4))
    target = w_hat + delta
    requant = quant.dequantize(quant.quantize_blockwise(target, nf4))
    bf16 = target.to(torch.bfloat16).float()
    rel = lambda approx: float((approx - target).norm() / delta.norm())
    return {"r": r, "relative_update": relative_update, "nf4_requantized": rel(requant), "bf16": rel(bf16),
            "adapter_kept": 0.0}


# --- precision and memory ------------------------------------------------------------------------
def dtype_facts(model: str = "Llama-2-7b") -> list[dict]:
    """Bits, precision and range of fp32/bf16/fp16 (torch.finfo), and what `model` weighs in each."""
    rows = []
    for name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16), ("fp16", torch.float16)):
        info = torch.finfo(dtype)
        full = memory.estimate_memory(memory.MemoryConfig(model=model, method="full", weight_dtype=name))
        lora = memory.estimate_memory(memory.MemoryConfig(model=model, method="lora", weight_dtype=name))
        rows.append({"dtype": name, "bits": info.bits, "mantissa bits": round(-math.log2(info.eps)),
                     "eps (gap after 1)": info.eps, "largest": info.max,
                     f"{model} weights (GiB)": memory.gib(full.weights),
                     "full FT step (GiB)": memory.gib(full.total), "LoRA step (GiB)": memory.gib(lora.total)})
    return rows


def method_memory(cfg: memory.MemoryConfig = memory.SEED_002_QLORA) -> dict:
    """Full fine-tuning, LoRA and QLoRA on the same setup: estimates, and how many layers hold LoRA."""
    estimates = memory.compare_methods(cfg)
    return {"estimates": estimates, "layers_with_lora": estimates["qlora"].layers_with_lora,
            "num_layers": estimates["qlora"].num_layers, "trainable": estimates["qlora"].trainable_params,
            "base_params": estimates["qlora"].base_params}
