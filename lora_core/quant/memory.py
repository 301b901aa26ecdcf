"""Training memory for full fine-tuning, LoRA and QLoRA: a byte ledger with every formula stated.

    from lora_core import memory
    est = memory.estimate_memory(memory.SEED_002_QLORA)
    est.records()          # component, bytes, GiB and the formula with the numbers filled in

Parameter counts are never typed in: the model is built on the meta device from its config
(`build_on_meta`) and LoRA is injected there, so the counts are the ones PEFT would print.
The bytes follow these rules (P = base parameters, T = trainable, Q = quantized):

* weights: full and LoRA keep the base in `weight_dtype` (4 B fp32, 2 B bf16/fp16). QLoRA keeps
  every Linear/Conv1D weight except the output layer in NF4, 0.5 B per parameter (two 4-bit
  codes per byte), and the rest (embeddings, norms, output layer) in `weight_dtype`.
  LoRA factors are fp32 (4 B): PEFT upcasts 16-bit adapters by default (autocast_adapter_dtype).
* quantization constants (QLoRA): Q · constant_bits_per_param / 8 (see `codebook.py`).
* gradients: one per trainable parameter, in that parameter's dtype.
* optimizer states per trainable parameter, with `optimizer_precision` saying how full fine-tuning
  in 16 bits is counted (PRECISION_LABELS):
  - "param" (default): what torch.optim.AdamW does. Its exp_avg and exp_avg_sq are
    `zeros_like(param)`, so a bf16 parameter gets two bf16 moments: 2+2+2+2 = 8 B per parameter.
  - "fp32": fp32 moments beside 16-bit weights and gradients, 2+2+8 = 12 B. This is the QLoRA
    paper's accounting (">780 GB" for a 65B model, arXiv 2305.14314).
  - "mixed": mixed precision with an fp32 master copy of every weight, 2+2+4+8 = 16 B (ZeRO,
    Rajbhandari et al. 2019, arXiv 1910.02054).
  LoRA's factors are fp32 already, so for them all three give 4+4+8 = 16 B per trainable parameter.
  SGD (no momentum) keeps no state. 8-bit AdamW (Dettmers et al. 2021, arXiv 2110.02861) keeps two
  1-byte moments plus one fp32 constant per 2048 values, ≈ 2 B; "mixed" adds the 4 B master copy to
  it and to SGD.
* activations: a sum over the tensors autograd saves, site by site (`activations.py`). It follows
  Korthikanti et al. 2022 (arXiv 2205.05198, eq. 1) for GPT-style blocks. Llama-style blocks get our
  own derivation. A frozen projection keeps no input unless a LoRA A reads it, so LoRA keeps fewer
  activations than full fine-tuning. FlashAttention drops the s×s scores, and gradient checkpointing
  keeps each block's input plus one block while it is recomputed.

Left out: CUDA context, allocator fragmentation and temporary buffers (a dequantized 4-bit
weight, for one). References: LoRA (arXiv 2106.09685), QLoRA (arXiv 2305.14314).
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass, field, replace

from torch import nn
from transformers.pytorch_utils import Conv1D

from ..config import LoraConfig, reject
from ..counting import ledger_of
from ..inject import inject_lora
from ..models.sources import build_on_meta
from .activations import ADAPTER_BYTES, Block, Branch, activation_bytes, block_of, branch_of
from .codebook import constant_bits_per_param

METHODS = ("full", "lora", "qlora")
DTYPE_BYTES = {"fp32": 4, "bf16": 2, "fp16": 2}
OPTIMIZERS = ("adamw", "sgd", "adamw-8bit")
OPTIMIZER_PRECISIONS = ("param", "fp32", "mixed")
PRECISION_LABELS = {
    "param": "moments in the parameter's dtype, as torch.optim.AdamW keeps them: bf16 full FT 2+2+2+2 = 8 B/param",
    "fp32": "fp32 moments, 16-bit weights and gradients: 2+2+8 = 12 B/param (QLoRA paper's >780 GB for 65B)",
    "mixed": "mixed precision with fp32 master weights: 2+2+4+8 = 16 B/param (ZeRO, arXiv 1910.02054)",
}
NF4_BYTES = 0.5              # two 4-bit codes per byte
ADAM8_BLOCK = 2048           # bitsandbytes' 8-bit optimizers quantize states in blocks of 2048
COMPONENTS = ("weights", "quantization constants", "gradients", "optimizer states", "activations")
GIB = 2**30


def _positive_int(name: str, value) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        reject(name, value, "a positive integer")


@dataclass
class MemoryConfig:
    """One training setup. Every field is checked in `__post_init__`."""

    model: str = "Llama-2-7b"       # a shipped config (lc.available_configs()) or a local model directory
    method: str = "lora"            # "full" | "lora" | "qlora"
    r: int = 8                      # LoRA rank (lora, qlora)
    target_modules: list[str] | str | None = None  # as in LoraConfig; None = PEFT's default per architecture
    lora_alpha: float = 16          # changes no byte; kept so that a preset reads like its source
    lora_dropout: float = 0.0       # > 0 makes every LoRA branch store its dropped input
    weight_dtype: str = "bf16"      # base weights and activations; for QLoRA the compute dtype
    batch_size: int = 1
    seq_len: int = 512              # tokens per sequence
    optimizer: str = "adamw"        # "adamw" | "sgd" | "adamw-8bit"
    gradient_checkpointing: bool = False  # keep only each layer's input; recompute the rest
    flash_attention: bool = False   # do not store the s×s attention scores
    double_quant: bool = True       # QLoRA: quantize the fp32 block constants to 8 bits too
    quant_block_size: int = 64      # QLoRA: weights per absmax constant
    optimizer_precision: str = "param"  # full FT in 16 bits: "param" | "fp32" | "mixed" (PRECISION_LABELS)

    def __post_init__(self) -> None:
        if not isinstance(self.model, str) or not self.model.strip():
            reject("model", self.model, "a shipped config name or a local model directory")
        if self.method not in METHODS:
            reject("method", self.method, f"use one of {', '.join(map(repr, METHODS))}")
        if self.weight_dtype not in DTYPE_BYTES:
            reject("weight_dtype", self.weight_dtype, f"use one of {', '.join(map(repr, DTYPE_BYTES))}")
        if self.optimizer not in OPTIMIZERS:
            reject("optimizer", self.optimizer, f"use one of {', '.join(map(repr, OPTIMIZERS))}")
        if self.optimizer_precision not in OPTIMIZER_PRECISIONS:
            reject("optimizer_precision", self.optimizer_precision,
                   f"use one of {', '.join(map(repr, OPTIMIZER_PRECISIONS))}")
        for name in ("batch_size", "seq_len", "quant_block_size"):
            _positive_int(name, getattr(self, name))
        # r, alpha, dropout and the targets obey LoraConfig's rules and messages.
        self.target_modules = self.lora_config().target_modules

    def lora_config(self) -> LoraConfig:
        return LoraConfig(r=self.r, lora_alpha=self.lora_alpha, lora_dropout=self.lora_dropout,
                          target_modules=self.target_modules)

    @property
    def act_bytes(self) -> int:
        """Bytes per activation: training computes in `weight_dtype` (QLoRA's compute dtype)."""
        return DTYPE_BYTES[self.weight_dtype]


@dataclass(frozen=True)
class MemoryEstimate:
    """Bytes per component, the parameter counts they came from, and each formula in words."""

    config: MemoryConfig
    weights: int
    quant_constants: int
    gradients: int
    optimizer: int
    activations: int
    base_params: int          # P: the model before LoRA
    trainable_params: int     # T
    quantized_params: int     # Q: NF4 weights (QLoRA only)
    layers_with_lora: int     # transformer layers holding at least one LoRA pair
    num_layers: int
    formulas: dict[str, str] = field(default_factory=dict)

    @property
    def total(self) -> int:
        return self.weights + self.quant_constants + self.gradients + self.optimizer + self.activations

    @property
    def bytes_per_trainable_param(self) -> float:
        """Weights + gradients + optimizer states per trainable parameter, as the chosen recipe counts them."""
        own = DTYPE_BYTES[self.config.weight_dtype] if self.config.method == "full" else ADAPTER_BYTES
        return own + (self.gradients + self.optimizer) / self.trainable_params

    def breakdown(self) -> dict[str, int]:
        """Bytes per component, in the order of COMPONENTS."""
        values = (self.weights, self.quant_constants, self.gradients, self.optimizer, self.activations)
        return dict(zip(COMPONENTS, values, strict=True))

    def records(self) -> list[dict]:
        """One row per component, for tables."""
        rows = [{"component": k, "bytes": v, "GiB": v / GIB, "formula": self.formulas[k]}
                for k, v in self.breakdown().items()]
        return [*rows, {"component": "total", "bytes": self.total, "GiB": self.total / GIB, "formula": "sum"}]


@dataclass(frozen=True)
class _Shapes:
    params: int         # unique parameters (tied weights once)
    quantizable: int    # weights of Linear/Conv1D layers except the output layer
    block: Block        # the widths the activation sites depend on


@functools.lru_cache(maxsize=32)
def _shapes(model: str) -> _Shapes:
    meta = build_on_meta(model)
    out = meta.get_output_embeddings()
    # bitsandbytes quantizes the Linear (and GPT-2 Conv1D) weights; transformers keeps the
    # output layer in full precision, and embeddings, norms and biases are never quantized.
    quantizable = sum(m.weight.numel() for m in meta.modules()
                      if isinstance(m, (nn.Linear, Conv1D)) and m is not out)
    return _Shapes(sum(p.numel() for p in meta.parameters()), quantizable, block_of(meta))


@dataclass(frozen=True)
class _Adapter:
    params: int
    layers: int                          # distinct layer indices holding a LoRA pair
    branches: tuple[Branch, ...]         # where each pair sits and which input its A reads


@functools.lru_cache(maxsize=128)
def _adapter(model: str, r: int, targets: tuple[str, ...] | str | None) -> _Adapter:
    meta = build_on_meta(model)
    wrapped = set(inject_lora(meta, LoraConfig(r=r, target_modules=list(targets) if isinstance(targets, tuple)
                                                 else targets)))
    book = ledger_of(meta, model)
    layer_ids = {m.group(1) for name in book.wrapped if (m := re.search(r"\.(\d+)\.", name))}
    branches = tuple(branch_of(name, module, meta) for name, module in meta.named_modules() if name in wrapped)
    return _Adapter(book.lora_params, len(layer_ids), branches)


def _optimizer_states(cfg: MemoryConfig, T: int, t_bytes: int) -> tuple[float, str]:
    """Optimizer bytes and their formula, under `cfg.optimizer_precision` (PRECISION_LABELS)."""
    lora = "; LoRA factors are fp32, so every precision choice gives the same bytes" if t_bytes == 4 and \
        cfg.method != "full" else ""
    if cfg.optimizer == "sgd":
        per_param, text = 0.0, "0 (plain SGD keeps no state)"
    elif cfg.optimizer == "adamw-8bit":
        per_param, text = 2 + 2 * 4 / ADAM8_BLOCK, f"T·(2 + 8/{ADAM8_BLOCK}) B (two 8-bit moments + block constants)"
    elif cfg.optimizer_precision == "param" or t_bytes == 4:
        name = cfg.weight_dtype if cfg.method == "full" else "fp32"
        per_param = 2.0 * t_bytes
        text = (f"T·{2 * t_bytes} B: two {name} moments (torch.optim.AdamW keeps them in the parameter's dtype)")
    elif cfg.optimizer_precision == "fp32":
        per_param, text = 8.0, "T·8 B: two fp32 moments beside 16-bit weights (the QLoRA paper's accounting)"
    else:
        per_param, text = 8.0, "T·8 B: two fp32 moments"
    if cfg.optimizer_precision == "mixed" and t_bytes < 4:
        per_param += 4
        text += " + T·4 B: fp32 master weights (mixed precision, ZeRO's accounting)"
    return T * per_param, f"{text}; T = {T:,}{lora}"


def estimate_memory(cfg: MemoryConfig) -> MemoryEstimate:
    """Bytes of GPU memory one training step holds, by component (formulas in the module docstring)."""
    shapes = _shapes(cfg.model)
    d_w = DTYPE_BYTES[cfg.weight_dtype]
    adapter = None
    if cfg.method != "full":
        targets = tuple(cfg.target_modules) if isinstance(cfg.target_modules, list) else cfg.target_modules
        adapter = _adapter(cfg.model, cfg.r, targets)

    P, f = shapes.params, {}
    if cfg.method == "full":
        T, Q, t_bytes = P, 0, d_w
        weights = P * d_w
        f["weights"] = f"P·{d_w} B ({cfg.weight_dtype}); P = {P:,}"
    else:
        T, t_bytes = adapter.params, ADAPTER_BYTES
        Q = shapes.quantizable if cfg.method == "qlora" else 0
        weights = (Q * NF4_BYTES + (P - Q) * d_w) + T * t_bytes
        if Q:
            f["weights"] = (f"Q·0.5 B (NF4) + (P−Q)·{d_w} B ({cfg.weight_dtype}) + T·4 B (fp32 LoRA); "
                            f"Q = {Q:,}, P = {P:,}, T = {T:,}")
        else:
            f["weights"] = f"P·{d_w} B ({cfg.weight_dtype}) + T·4 B (fp32 LoRA); P = {P:,}, T = {T:,}"

    bits = constant_bits_per_param(cfg.quant_block_size, cfg.double_quant) if Q else 0.0
    constants = Q * bits / 8
    dq = "with" if cfg.double_quant else "without"
    f["quantization constants"] = (f"Q·{bits:.4f} bits / 8 ({dq} double quantization, blocks of "
                                   f"{cfg.quant_block_size})" if Q else "none: no 4-bit weights")
    gradients = T * t_bytes
    f["gradients"] = f"T·{t_bytes} B; T = {T:,}"

    optimizer, f["optimizer states"] = _optimizer_states(cfg, T, t_bytes)
    blk = shapes.block
    activations, f["activations"] = activation_bytes(
        blk, list(adapter.branches) if adapter else [], s=cfg.seq_len, b=cfg.batch_size, d=cfg.act_bytes, r=cfg.r,
        dropout=cfg.lora_dropout, full=adapter is None, flash=cfg.flash_attention,
        checkpointing=cfg.gradient_checkpointing)
    return MemoryEstimate(cfg, round(weights), round(constants), round(gradients), round(optimizer), activations,
                          P, T, Q, adapter.layers if adapter else 0, blk.layers, f)


def compare_methods(cfg: MemoryConfig) -> dict[str, MemoryEstimate]:
    """The same setup under full fine-tuning, LoRA and QLoRA."""
    return {m: estimate_memory(replace(cfg, method=m)) for m in METHODS}


def gib(n_bytes: float) -> float:
    """Bytes to GiB (2³⁰ bytes), the unit GPU memory is sold in."""
    return n_bytes / GIB


# Seed 002: QLoRA on Llama-2-7b. r=64, alpha=16, dropout 0.1, NF4 with fp16 compute, batch 4,
# use_nested_quant=False (no double quantization), no target_modules (PEFT's default: q_proj and
# v_proj for Llama). The seed gives no sequence length; we assume 512 tokens. It names no
# optimizer and no gradient checkpointing, so these stay at the Trainer's defaults (AdamW, off).
SEED_002_QLORA = MemoryConfig(model="Llama-2-7b", method="qlora", r=64, lora_alpha=16, lora_dropout=0.1,
                              target_modules=None, weight_dtype="fp16", batch_size=4, seq_len=512,
                              optimizer="adamw", gradient_checkpointing=False, double_quant=False)
