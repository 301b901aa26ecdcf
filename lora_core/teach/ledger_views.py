"""What the Parameters and Anatomy pages show about targets and ledgers, computed once here.

    targets, note = resolve_targets(["c_attn"], regex="")        # what the target widgets mean
    rows = ledger_table(count_lora_parameters("distilgpt2", cfg))  # one row per module kind
    claim = seed_000_claim()                                      # seed 000's count against the ledger

A LoRA pair on a layer (in → out) adds r·(in + out) parameters (LoRA, arXiv 2106.09685); every
count below comes from the ledger (counting.py), built on the meta device.
"""

from __future__ import annotations

import dataclasses

import torch.nn as nn

from ..config import ALL_LINEAR, LoraConfig
from ..counting import Ledger, LedgerRow, count_lora_parameters
from ..inject import DEFAULT_TARGETS, candidate_modules
from .anatomy import block_prefix, explain_claimed_count, percent_of_weight, standard_target_sets

RANKS = [1, 2, 4, 8, 16, 32, 64, 128, 256]
# Seed 000's claim, quoted so that the page can set the computed count beside it.
SEED_000 = {"model": "distilgpt2", "r": 8, "lora_alpha": 16, "target_modules": ["c_attn"],
            "claimed": 98_304, "claimed_percent": "0.12%"}
SQUARE_TARGET = r".*\.attn\.c_proj"  # distilgpt2's square 768×768 attention output


def model_facts(model: nn.Module) -> dict:
    """What the target widgets offer for a (meta) model: candidate names, layer count (and the last index),
    the model type, and PEFT's default targets among the candidates."""
    candidates = candidate_modules(model)
    defaults = DEFAULT_TARGETS.get(model.config.model_type, candidates[:1])
    layers = model.config.num_hidden_layers
    return {"candidates": candidates, "layers": layers, "last_layer": layers - 1,
            "model_type": model.config.model_type, "default_targets": [t for t in defaults if t in candidates]}


def target_options(models: list[nn.Module]) -> list[str]:
    """'all-linear' and every candidate module name of any of `models`, sorted."""
    return [ALL_LINEAR, *sorted({name for model in models for name in candidate_modules(model)})]


def resolve_targets(picked: list[str], regex: str = "") -> tuple[list[str] | str, str | None]:
    """target_modules from the widgets: a regex when one is typed, else 'all-linear' if picked, else the names.

    Returns the targets and a note when a choice was ignored ('all-linear' already covers the names).
    """
    if regex.strip():
        return regex, None
    if ALL_LINEAR in picked:
        note = ("`all-linear` already covers every Linear/Conv1D layer except the output layer; the other names "
                "are ignored.") if len(picked) > 1 else None
        return ALL_LINEAR, note
    return picked, None


def block_layers(model: nn.Module, names: list[str], block: int) -> tuple[str, list[str]]:
    """(the prefix of block `block`, e.g. 'model.layers.3.', and the names in `names` under it, prefix removed)."""
    prefix = block_prefix(model, block) + "."
    return prefix, [n.removeprefix(prefix) for n in names if n.startswith(prefix)]


def ledger_table(book: Ledger) -> list[dict]:
    """One row per module kind: its type, shape, how many, r·(in+out) and the LoRA parameters it adds."""
    return [{"module": row.module, "type": row.layer_type, "shape (in→out)": f"{row.in_features}→{row.out_features}",
             "count": row.count, "r·(in+out)": row.lora_per_module, "LoRA params": row.lora_params}
            for row in book.rows]


def sweep_configs(cfg: LoraConfig, model_type: str) -> tuple[tuple[str, LoraConfig], ...]:
    """The r-sweep's target sets: the user's choice and the standard ones, with r and α set to 1.

    The sweep does not depend on r or α, so normalising them lets a cache reuse it as r moves.
    """
    sets = {"your choice": cfg} | {label: dataclasses.replace(cfg, target_modules=t)
                                    for label, t in standard_target_sets(model_type).items()}
    return tuple((label, dataclasses.replace(c, r=1, lora_alpha=1)) for label, c in sets.items())


def seed_000_claim() -> dict:
    """Seed 000's trainable count set against the ledger (see anatomy.explain_claimed_count)."""
    cfg = LoraConfig(r=SEED_000["r"], lora_alpha=SEED_000["lora_alpha"], target_modules=SEED_000["target_modules"])
    return {**explain_claimed_count(SEED_000["model"], cfg, SEED_000["claimed"]),
            "claimed_percent_text": SEED_000["claimed_percent"]}


def seed_000_shapes() -> dict[str, LedgerRow | float]:
    """Seed 000's worked example: LoRA on a square matrix (right), and on c_attn, which is not square."""
    square = count_lora_parameters(SEED_000["model"], LoraConfig(r=SEED_000["r"], target_modules=SQUARE_TARGET))
    fused = count_lora_parameters(SEED_000["model"], LoraConfig(r=SEED_000["r"], target_modules=["c_attn"]))
    return {"square": square.rows[0], "fused": fused.rows[0], "square_percent": percent_of_weight(square.rows[0])}
