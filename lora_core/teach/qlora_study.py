"""What the QLoRA page shows: NF4 built live and measured on a real weight, double quantization, and the
memory of a training step under full fine-tuning, LoRA and QLoRA (QLoRA, arXiv 2305.14314).

    w = weight_to_study(model, "model.layers.0.self_attn.q_proj")   # or CONTROL, a seeded normal matrix
    res = study(w, block_size=64)        # the first weights round-tripped, error per codebook, histograms
    rank = codebook_ranking(res["table"])
    cfg, by_method = memory_comparison(model="Llama-2-7b", method="qlora", r=64, ...)

Every number comes from quant/codebook.py and quant/memory.py; this module only arranges them.
"""

from __future__ import annotations

from dataclasses import replace

import torch
import torch.nn as nn

from ..quant import codebook, memory

MODEL = "smollm2-135m"
LAYERS = ["model.layers.0.self_attn.q_proj", "model.layers.15.self_attn.q_proj", "model.layers.15.mlp.up_proj",
          "model.layers.29.mlp.down_proj", "model.embed_tokens"]
CONTROL = "control: seeded N(0, 0.02²), 576×576"
BLOCK_SIZES = [16, 32, 64, 128, 256, 1024, 4096]
FIRST_WEIGHTS = 8                      # weights of block 0 shown round-tripped
ERROR_COLUMNS = {"mean_abs_error": "mean |ŵ−w|", "rmse": "RMSE", "max_abs_error": "max |ŵ−w|",
                 "relative_frobenius_error": "‖ŵ−w‖/‖w‖", "code_entropy_bits": "code entropy (bits)"}
DQ_BLOCK = 256                         # QLoRA quantizes the block constants in blocks of 256


def weight_to_study(model: nn.Module | None, name: str) -> torch.Tensor:
    """The weight `name` of `model` (read only), or the seeded normal control when name is CONTROL."""
    if name == CONTROL:
        return codebook.normal_weights()
    if model is None:
        raise ValueError(f"name={name!r} needs a model: only {CONTROL!r} works without one")
    return model.get_submodule(name).weight


def codebook_table() -> list[dict]:
    """The 16 levels of each codebook (NF4, uniform int4, log4), one row per code."""
    books = codebook.codebooks()
    return [{"code": i, **{name: round(levels[i].item(), 7) for name, levels in books.items()}} for i in range(16)]


def study(w: torch.Tensor, block_size: int) -> dict:
    """Blockwise absmax and NF4 on `w`: the first weights round-tripped, errors per codebook, histograms,
    and double quantization of the block constants, measured."""
    books = codebook.codebooks()
    normalized, absmax = codebook.block_normalize(w, block_size)
    q = codebook.quantize_blockwise(w, books["NF4"], block_size)
    w_hat = codebook.dequantize(q).reshape(-1)
    flat = w.reshape(-1)
    first = [{"w": flat[i].item(), "w / absmax": normalized[0, i].item(), "NF4 code": q.codes[0, i].item(),
              "level": q.codebook[q.codes[0, i].long()].item(), "ŵ = level·absmax": w_hat[i].item()}
             for i in range(min(FIRST_WEIGHTS, flat.numel()))]
    errors = {k: codebook.round_trip_error(w, cb, block_size) for k, cb in books.items()}
    limit = max(e.abs().max().item() for e in errors.values())
    dq = codebook.double_quantize(q.absmax, DQ_BLOCK, block_size)
    return {"shape": tuple(w.shape), "first": first, "absmax0": absmax[0].item(), "n_blocks": absmax.numel(),
            "hist": codebook.value_histogram(normalized, bins=101, limit=1.0),
            "table": {k: codebook.quantization_error(w, cb, block_size) for k, cb in books.items()},
            "error_hists": {k: codebook.value_histogram(e, bins=81, limit=limit) for k, e in errors.items()},
            "dq_bits": dq.bits_per_param(), "dq_error": dq.max_relative_error(q.absmax),
            "storage": q.storage_bits()}


def error_table(table: dict[str, dict[str, float]]) -> list[dict]:
    """`study(...)["table"]` as rows with readable column names."""
    return [{"codebook": k, **{ERROR_COLUMNS[m]: v for m, v in row.items()}} for k, row in table.items()]


def codebook_ranking(table: dict[str, dict[str, float]]) -> dict:
    """Which codebook has the lowest RMSE, how many times worse the others are, their code entropy, and
    the log grid's crowding: the level inside which it keeps 8 of 16 levels and the gap between its top two."""
    best = min(table, key=lambda k: table[k]["rmse"])
    log_levels = codebook.codebooks()["log4"].tolist()
    return {"best": best,
            "ratios": {k: row["rmse"] / table[best]["rmse"] for k, row in table.items() if k != best},
            "entropy": {k: row["code_entropy_bits"] for k, row in table.items()},
            "log_inner_level": log_levels[11], "log_top_gap": log_levels[15] - log_levels[14]}


def block_sweep(w: torch.Tensor, block_sizes: list[int] = BLOCK_SIZES) -> list[dict]:
    """NF4's RMSE on `w` per block size, against what its constants cost per weight (plain and double)."""
    nf4 = codebook.nf4_codebook()
    return [{"block size": b, "NF4 RMSE": codebook.quantization_error(w, nf4, b)["rmse"],
             "constant bits / weight": codebook.constant_bits_per_param(b, False),
             "with double quantization": codebook.constant_bits_per_param(b, True)} for b in block_sizes]


# --- memory ---------------------------------------------------------------------------------------
def parse_targets(text: str) -> list[str] | str | None:
    """The target_modules text box: empty is PEFT's default (None), 'all-linear', or comma-separated names."""
    text = text.strip()
    if not text:
        return None
    return "all-linear" if text == "all-linear" else [t.strip() for t in text.split(",")]


def memory_comparison(targets: str, **fields) -> tuple[memory.MemoryConfig, dict[str, memory.MemoryEstimate]]:
    """The estimate for one setup under full fine-tuning, LoRA and QLoRA.

    `targets` is the text box's content; `fields` are MemoryConfig's other fields (checked there).
    """
    cfg = memory.MemoryConfig(target_modules=parse_targets(targets), **fields)
    return cfg, memory.compare_methods(cfg)


def dtype_table(cfg: memory.MemoryConfig) -> list[dict]:
    """The same setup in each weight dtype: GiB per component and the total."""
    rows = []
    for dtype in memory.DTYPE_BYTES:
        est = memory.estimate_memory(replace(cfg, weight_dtype=dtype))
        rows.append({"dtype": dtype, **{k: round(memory.gib(v), 3) for k, v in est.breakdown().items()},
                     "total GiB": round(memory.gib(est.total), 3)})
    return rows


def seed_002() -> dict[str, memory.MemoryEstimate]:
    """Seed 002's QLoRA setup as estimated, and with gradient checkpointing."""
    return {"as given": memory.estimate_memory(memory.SEED_002_QLORA),
            "with checkpointing": memory.estimate_memory(replace(memory.SEED_002_QLORA, gradient_checkpointing=True))}


# --- paged optimizers -----------------------------------------------------------------------------
LONG_SEQ_FACTOR = 4   # "a long batch": this many times the setup's sequence length


def paged_optimizer_view(cfg: memory.MemoryConfig, long_seq_factor: int = LONG_SEQ_FACTOR) -> dict:
    """What a paged optimizer (QLoRA §3) may move off the GPU for `cfg`, beside the spike one long batch brings.

    Paged optimizers allocate the optimizer states in NVIDIA unified memory: under memory pressure the driver
    evicts them to CPU RAM and pages them back for the optimizer step. So the bytes that can leave the GPU are
    the optimizer states; the pressure comes from activations, which grow with the sequence length.
    """
    if long_seq_factor < 2:
        raise ValueError(f"long_seq_factor={long_seq_factor!r} is not allowed: use an integer ≥ 2")
    usual = memory.estimate_memory(cfg)
    long = memory.estimate_memory(replace(cfg, seq_len=cfg.seq_len * long_seq_factor))
    return {"optimizer": usual.optimizer, "total": usual.total, "long_seq_len": long.config.seq_len,
            "long_total": long.total, "spike": long.activations - usual.activations,
            "optimizer_share": usual.optimizer / usual.total}
