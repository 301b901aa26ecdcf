"""What the pages show about one adapter: what it holds (config, ledger, ΔW's spectrum layer by layer) and
what it does (the same prompt with the adapter on and off). Used by Load an adapter and Live fine-tuning.

    loaded = load_adapter_upload(base, zip_bytes, "distilgpt2-random", max_bytes=50_000_000)
    rows = spectrum_rows(loaded["report"])
    on, off = generate_both_ways(loaded["model"], tokenizer, "User likes cooking videos.", 24)

ΔW's singular values come from the factors (spectrum.py), never from the full (out × in) matrix.
"""

from __future__ import annotations

import torch.nn as nn
from transformers import PreTrainedTokenizerBase

from ..counting import ledger_of
from ..inject import adapter_config
from ..merging import disable_lora
from ..serve.uploads import load_adapter_zip
from ..sharing import shared_base_copy
from ..spectrum import adapter_report, effective_rank, numerical_rank
from ..training.metrics import generate

FIRST_LAYERS = 8  # layers drawn in a spectrum figure when nothing else is chosen


def load_adapter_upload(base: nn.Module, data: bytes, model_name: str, max_bytes: int,
                        max_r: int | None = None, source: str = "adapter upload") -> dict:
    """Check an uploaded adapter .zip against `base`, then load it into a new module tree over `base`.

    `base` (a cached, shared model) is never written: the adapter goes into `shared_base_copy(base)`.
    `source` names the .zip in error messages (an upload, or the adapter trained in this session).
    Returns the adapted model (in eval mode), its config, its ledger and its per-layer spectrum report.
    """
    adapted = load_adapter_zip(shared_base_copy(base), data, max_bytes, max_r, source).eval()
    return {"model": adapted, "config": adapter_config(adapted), "ledger": ledger_of(adapted, model_name),
            "report": adapter_report(adapted)}


def spectrum_rows(report: list[dict]) -> list[dict]:
    """One row per adapted layer: ‖ΔW‖_F, its size against ‖W‖_F, numerical and effective rank."""
    return [{"layer": row["layer"], "‖ΔW‖_F": row["delta_norm"], "‖ΔW‖_F / ‖W‖_F": row["relative"],
             "numerical rank": numerical_rank(row["singular_values"]),
             "effective rank": round(effective_rank(row["singular_values"]), 2)} for row in report]


def layer_spectra(report: list[dict], layers: list[str] | None = None) -> dict:
    """{layer: σ(ΔW)} for the chosen layers (default: the first FIRST_LAYERS), plus every layer's relative size."""
    chosen = [row for row in report if row["layer"] in layers] if layers is not None else report[:FIRST_LAYERS]
    return {"spectra": {row["layer"]: row["singular_values"] for row in chosen},
            "layers": [row["layer"] for row in report], "relative": [row["relative"] for row in report]}


def generate_both_ways(model: nn.Module, tokenizer: PreTrainedTokenizerBase, prompt: str,
                       max_new_tokens: int = 24) -> tuple[str, str]:
    """(with the adapter, without it): greedy completions of `prompt`, the adapter switched off for the second."""
    on = generate(model, tokenizer, [prompt], max_new_tokens)[0]
    with disable_lora(model):
        off = generate(model, tokenizer, [prompt], max_new_tokens)[0]
    return on, off
