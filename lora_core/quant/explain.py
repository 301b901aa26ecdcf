"""Measured beside estimated: per component both numbers, their ratio, and an explanation for every
difference over 10%, built from what was measured (which tensors, in which dtype, saved by which module).

The estimate is quant/memory.py's formula (activations after Korthikanti et al. 2022, arXiv 2205.05198);
the measurement is quant/measure.py's training step.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import replace
from typing import TYPE_CHECKING

from .memory import MemoryEstimate, estimate_memory

if TYPE_CHECKING:
    from .measure import MeasuredMemory

TOLERANCE = 0.10  # differences above 10% get an explanation
MB = 1e6


# --- measured beside estimated ----------------------------------------------------------------------------------------
def compare(measured: MeasuredMemory, estimate: MemoryEstimate) -> list[dict]:
    """Per component: the measured and estimated bytes, their ratio, and for every difference over 10%
    an explanation built from what was measured (which tensors, which dtype, which module saved them)."""
    est = estimate.breakdown()
    rows = []
    for component, got in [*measured.breakdown().items(), ("total", measured.total)]:
        want = estimate.total if component == "total" else est[component]
        ratio = got / want if want else (1.0 if got == 0 else float("inf"))
        off = abs(ratio - 1) > TOLERANCE
        why = _EXPLAIN[component](measured, estimate) if off and component != "total" else ""
        if off and component == "total":
            why = "the sum of the differences above"
        rows.append({"component": component, "measured MB": got / MB, "estimated MB": want / MB, "ratio": ratio,
                     "explanation": why})
    return rows


def _dtypes(parts: dict[str, int]) -> str:
    return ", ".join(f"{k} {v / MB:.2f} MB" for k, v in sorted(parts.items(), key=lambda kv: -kv[1])) or "nothing"


def _explain_weights(m: MeasuredMemory, e: MemoryEstimate) -> str:
    return (f"measured {_dtypes(m.detail['weights'])}; the estimate counts {e.formulas['weights']}. "
            f"Unique parameters here: {m.counts['unique parameters']:,} against P = {e.base_params:,}.")


def _explain_constants(m: MeasuredMemory, e: MemoryEstimate) -> str:
    q = m.counts["quantized weights"]
    bits = 8 * m.quant_constants / q if q else 0.0
    text = f"measured {_dtypes(m.detail['quantization constants'])}, {bits:.4f} bits per 4-bit weight"
    if any(k.startswith("absmax float32") for k in m.detail["quantization constants"]) and e.config.double_quant:
        text += (f": lora_core's NF4Linear keeps one fp32 absmax per block of {e.config.quant_block_size} "
                 f"(32/{e.config.quant_block_size} bits) and does not double-quantize, while the estimate assumes "
                 "double quantization (8-bit constants plus fp32 constants of constants)")
    return text + f"; the estimate: {e.formulas['quantization constants']}."


def _explain_gradients(m: MeasuredMemory, e: MemoryEstimate) -> str:
    return f"measured {_dtypes(m.detail['gradients'])}; the estimate counts {e.formulas['gradients']}."


def _explain_optimizer(m: MeasuredMemory, e: MemoryEstimate) -> str:
    t = max(m.counts["trainable parameters"], 1)
    states = _dtypes(m.detail["optimizer states"])
    return (f"measured {m.optimizer / t:.2f} B per trainable parameter ({states}), read from optimizer.state; "
            f"the estimate counts {e.optimizer / t:.2f} B ({e.formulas['optimizer states']}).")


def _explain_activations(m: MeasuredMemory, e: MemoryEstimate) -> str:
    cfg, vocab = e.config, None
    s = cfg.seq_len
    logits = [t for t in m.saved if t.dtype == "float32" and len(t.shape) >= 2 and t.shape[-1] > 10_000]
    if logits:
        vocab = logits[0].shape[-1]
    scores = [t for t in m.saved if len(t.shape) >= 2 and t.shape[-2:] == (s, s)]
    masks = [t for t in m.saved if t.dtype == "bool"]
    kept = [t for t in m.saved if t.via == "checkpoint input"]
    lora = [t for t in m.saved if t.kind.startswith("Lora") and t.shape and t.shape[-1] == cfg.r]
    parts = [f"measured {m.activations / MB:.1f} MB in {len(m.saved)} saved storages against the estimate's "
             f"{e.activations / MB:.1f} MB"]
    top = m.saved_by_site(3)
    parts.append("the largest savers: " + "; ".join(
        f"{r['module kind']} ({r['dtype']}, {r['tensors']} tensors) {r['MB']:.1f} MB" for r in top))
    if logits and not any(t.shape[-1:] == (vocab,) and t.dtype != "float32" for t in m.saved):
        parts.append(f"no {cfg.weight_dtype} copy of the logits was saved: the model returns them (alive until its "
                     "output is dropped) but backward needs only the fp32 log-softmax")
    if logits:
        parts.append(f"the loss keeps the logits as fp32 (the log-softmax of {len(logits)} tensor(s) of width "
                     f"{vocab:,}, {sum(t.bytes for t in logits) / MB:.1f} MB): transformers upcasts the logits before "
                     "cross-entropy, so it is s·b·V·4 bytes whatever the weight dtype")
    if scores:
        dts = sorted({t.dtype for t in scores})
        parts.append(f"{len(scores)} saved s×s attention tensors ({', '.join(dts)}, "
                     f"{sum(t.bytes for t in scores) / MB:.1f} MB): this attention kernel keeps its scores and "
                     "probabilities (and dropout's), the 5·a·s/h term of Korthikanti et al.; a fused kernel "
                     "(FlashAttention) would not")
    elif not cfg.flash_attention:
        flash = estimate_memory(replace(cfg, flash_attention=True)).activations
        parts.append("no s×s attention tensor was saved: this attention kernel (SDPA's fused path) keeps no scores, "
                     f"as FlashAttention does; the estimate with flash_attention=True is {flash / MB:.1f} MB "
                     f"(measured / that = {m.activations / flash:.2f})")
    if cfg.weight_dtype != "fp32":  # 16-bit compute, yet some modules keep fp32 copies for backward
        counted = {id(t) for t in [*logits, *scores]}
        upcast: dict[str, int] = defaultdict(int)
        for t in m.saved:
            if t.dtype == "float32" and id(t) not in counted and t.via == "autograd":
                lora_a = "lora_A" in t.module.split(".")[-2:]  # the module `...lora_A.<adapter name>`
                upcast["LoRA A's input, cast to fp32" if lora_a else t.kind] += t.bytes
        big = sorted(((v, k) for k, v in upcast.items() if v > 0.01 * m.activations), reverse=True)
        if big:
            parts.append(f"fp32 copies kept under {cfg.weight_dtype} compute, where the estimate counts "
                         f"{cfg.act_bytes} B per value: " + ", ".join(f"{k} {v / MB:.1f} MB" for v, k in big))
    if masks:
        parts.append(f"dropout masks stored as bool, 1 B per element ({len(masks)} masks, "
                     f"{sum(t.bytes for t in masks) / MB:.1f} MB)")
    if lora:
        parts.append(f"LoRA's A outputs (width r={cfg.r}): {len(lora)} tensors, "
                     f"{sum(t.bytes for t in lora) / MB:.2f} MB")
    if kept:
        parts.append(f"checkpointed layers keep their inputs: {len(kept)} tensors, "
                     f"{sum(t.bytes for t in kept) / MB:.1f} MB")
    return "; ".join(parts) + "."


_EXPLAIN = {"weights": _explain_weights, "quantization constants": _explain_constants,
            "gradients": _explain_gradients, "optimizer states": _explain_optimizer,
            "activations": _explain_activations}
