"""The parameter ledger: what LoRA adds, per module type, with PEFT's totals. No weights needed.

A LoRA pair on a layer (in → out) at rank r adds r·(in + out) parameters: A is (r, in), B is
(out, r). DoRA (arXiv 2402.09353) adds its magnitude m, one per output feature: out more, counted
as PEFT's get_nb_trainable_parameters counts them. The model is built on the meta device from its
config, so a 7B ledger takes milliseconds and no memory. The total counts every unique parameter
*after* injection, the adapter included, as PEFT's `print_trainable_parameters` does.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import torch.nn as nn
from transformers import PretrainedConfig

from .config import LoraConfig
from .inject import inject_lora, lora_layers, peft_line, trainable_parameters
from .layers import LoraLayer
from .models.sources import build_on_meta


@dataclass(frozen=True)
class LedgerRow:
    """All targeted modules of one kind, e.g. every `transformer.h.*.attn.c_attn`."""

    module: str            # name pattern with the layer index replaced by '*'
    layer_type: str        # Linear, Conv1D, Embedding, Conv2d
    in_features: int
    out_features: int
    count: int             # how many modules of this kind are wrapped
    r: int
    weight_params: int     # parameters in one frozen weight: in·out (times kh·kw for Conv2d)
    lora_per_module: int   # A and B of one module: r·(in + out) (A is r·in·kh·kw for Conv2d)
    adapter: str = "default"  # the adapter these factors belong to (one row per kind and adapter)
    magnitude_per_module: int = 0  # DoRA's m of one module: out (0 without DoRA)

    @property
    def lora_params(self) -> int:
        return self.count * (self.lora_per_module + self.magnitude_per_module)


@dataclass(frozen=True)
class Ledger:
    """Per-kind rows plus PEFT's (trainable, total)."""

    model: str
    rows: list[LedgerRow]
    trainable: int          # LoRA factors + trainable biases + modules_to_save copies
    total: int              # all unique parameters after injection (PEFT's "all params")
    base_total: int         # the model before LoRA
    wrapped: list[str] = field(repr=False, default_factory=list)
    frozen_lora: int = 0    # factors (and magnitudes) that do not train: inactive adapters, A under LoRA-FA

    @property
    def lora_params(self) -> int:
        return sum(row.lora_params for row in self.rows)

    @property
    def other_trainable(self) -> int:
        """Biases (bias='all'/'lora_only') and modules_to_save copies."""
        return self.trainable - (self.lora_params - self.frozen_lora)

    @property
    def trainable_percent(self) -> float:
        return 100 * self.trainable / self.total

    @property
    def peft_line(self) -> str:
        return peft_line(self.trainable, self.total)

    @property
    def adapters(self) -> list[str]:
        """The adapters in the rows, in order."""
        return list(dict.fromkeys(r.adapter for r in self.rows))

    def records(self) -> list[dict]:
        """One dict per row, for tables (with the adapter's name when there are several)."""
        named, dora = len(self.adapters) > 1, any(r.magnitude_per_module for r in self.rows)
        return [({"adapter": r.adapter} if named else {}) | {
            "module": r.module, "type": r.layer_type, "in": r.in_features, "out": r.out_features, "count": r.count,
            "weight params": r.weight_params, "r·(in+out)": r.lora_per_module}
            | ({"DoRA m": r.magnitude_per_module} if dora else {}) | {"LoRA params": r.lora_params}
            for r in self.rows]

    def __str__(self) -> str:
        head = f"{'module':<42} {'type':<9} {'in→out':>12} {'×':>4} {'r·(in+out)':>11} {'LoRA params':>13}"
        lines = [f"LoRA ledger for {self.model}", head, "-" * len(head)]
        named = len(self.adapters) > 1
        for r in self.rows:
            module = f"{r.module} [{r.adapter}]" if named else r.module
            per = f"{r.lora_per_module:,}" + (f"+{r.magnitude_per_module:,}" if r.magnitude_per_module else "")  # +m
            lines.append(f"{module:<42} {r.layer_type:<9} {f'{r.in_features}→{r.out_features}':>12} "
                         f"{r.count:>4} {per:>11} {r.lora_params:>13,}")
        lines.append("-" * len(head))
        lines.append(f"{'LoRA factors':<42} {'':<9} {'':>12} {'':>4} {'':>11} {self.lora_params:>13,}")
        if self.other_trainable:
            lines.append(f"{'other trainable (biases, saved modules)':<42} {'':<9} {'':>12} {'':>4} {'':>11} "
                         f"{self.other_trainable:>13,}")
        lines.append(self.peft_line)
        return "\n".join(lines)


def _kind(name: str) -> str:
    return re.sub(r"\.\d+\.", ".*.", name)


def _weight_params(layer: LoraLayer) -> int:
    """Parameters in the frozen weight, from its shape alone (a 4-bit base's `.weight` would rebuild W)."""
    if isinstance(layer.base_layer, nn.Conv2d):
        return layer.base_layer.weight.numel()  # (out, in, kh, kw)
    return layer.in_features * layer.out_features


def ledger_of(model: nn.Module, name: str = "model") -> Ledger:
    """Tabulate a model that already has LoRA injected (any device, meta included)."""
    groups: dict[tuple, int] = {}
    frozen = 0
    for layer_name, layer in lora_layers(model):
        for adapter in (layer.adapter(name) for name in layer.r):
            m = 0 if adapter.magnitude is None else adapter.magnitude.numel()  # DoRA: one per output feature
            key = (_kind(layer_name), type(layer.base_layer).__name__, layer.in_features, layer.out_features,
                   adapter.r, _weight_params(layer), adapter.A.numel() + adapter.B.numel(), adapter.name, m)
            groups[key] = groups.get(key, 0) + 1
            frozen += sum(p.numel() for p in adapter.parameters() if not p.requires_grad)
    rows = [LedgerRow(*k[:4], count, *k[4:]) for k, count in groups.items()]
    trainable, total = trainable_parameters(model)
    lora = sum(r.lora_params for r in rows)
    saved_copies = sum(p.numel() for n, p in model.named_parameters() if ".modules_to_save." in n)
    return Ledger(name, rows, trainable, total, total - lora - saved_copies,
                  [n for n, _ in lora_layers(model)], frozen)


def count_lora_parameters(model: str | PretrainedConfig | nn.Module, cfg: LoraConfig) -> Ledger:
    """The ledger for `cfg` on a shipped model name, a local model dir, a config, or a model.

    Built on the meta device, so it needs no weights and never touches the model you pass.
    """
    source = model
    if isinstance(model, nn.Module):
        source = getattr(model, "config", None)
        if source is None:
            raise ValueError(f"model={type(model).__name__} has no .config to rebuild it from: "
                             "pass a shipped model name, a local model directory or a transformers config")
    meta = build_on_meta(source)
    inject_lora(meta, cfg)
    name = model if isinstance(model, str) else getattr(source, "_name_or_path", "") or meta.config.model_type
    return ledger_of(meta, name)
