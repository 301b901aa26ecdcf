"""Merged against unmerged: the same logits, and what merging does to generation speed.

After `merge_lora`, each adapted layer is one matmul again (W + ΔW) instead of a matmul plus the
LoRA branch, so inference costs exactly what the base model costs (LoRA, arXiv 2106.09685, §4.1).
This module measures that claim on a real model instead of asserting it.
"""

from __future__ import annotations

import time

import torch
import torch.nn as nn
from transformers import PreTrainedTokenizerBase

from ..inject import lora_layers
from ..merging import merge_lora, unmerge_lora
from ..training.metrics import generate


def _timed_generate(model: nn.Module, tokenizer: PreTrainedTokenizerBase, prompts: list[str],
                    max_new_tokens: int, repeats: int) -> tuple[float, list[str]]:
    """(best prompts·max_new_tokens per second over `repeats` runs, the greedy texts)."""
    best, out = 0.0, []
    for _ in range(repeats):
        start = time.perf_counter()
        out = generate(model, tokenizer, prompts, max_new_tokens)
        best = max(best, len(prompts) * max_new_tokens / (time.perf_counter() - start))
    return best, out


def merge_report(model: nn.Module, tokenizer: PreTrainedTokenizerBase, prompts: list[str],
                 max_new_tokens: int = 16, repeats: int = 2) -> dict:
    """Merge, compare, unmerge. Returns max |Δlogit| and greedy tokens/s both ways (best of `repeats`).

    The model ends as it started (unmerge restores the original weights bit for bit).
    """
    if not lora_layers(model):
        raise ValueError("model has no LoRA layers to merge: inject or load an adapter first")
    if any(layer.merged for _, layer in lora_layers(model)):
        raise ValueError("model is already merged: unmerge_lora(model) first")
    batch = tokenizer(prompts, return_tensors="pt", padding=True)
    device = next(model.parameters()).device
    batch = {k: v.to(device) for k, v in batch.items()}
    was_training = model.training
    model.eval()
    with torch.no_grad():
        unmerged_logits = model(**batch).logits.float()
        unmerged_speed, unmerged_text = _timed_generate(model, tokenizer, prompts, max_new_tokens, repeats)
        merge_lora(model)
        try:
            merged_logits = model(**batch).logits.float()
            merged_speed, merged_text = _timed_generate(model, tokenizer, prompts, max_new_tokens, repeats)
        finally:
            unmerge_lora(model)
    model.train(was_training)
    mask = batch["attention_mask"].bool()
    return {"max_abs_dlogit": float((merged_logits - unmerged_logits).abs()[mask].max()),
            "unmerged_tokens_per_s": unmerged_speed, "merged_tokens_per_s": merged_speed,
            "same_generations": merged_text == unmerged_text, "generations": merged_text}
