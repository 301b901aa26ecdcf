"""One adapter merged at weight 1.0, by lora_core and by PEFT, on the same weights (PEFT issue 3761).

    one_adapter_check(r=4)   # rows: ‖ΔW'‖/‖ΔW‖ and max |Δlogit| of the merged copy, rsLoRA off and on, per library

Merging a single adapter with weight 1.0 must give it back unchanged. lora_core does; PEFT's add_weighted_adapter
gives the copy scaling 1 where an rsLoRA source had α/√r, so the copy's ΔW is √r times its source's. The Merging
studio page shows both results side by side; tests/test_merging_studio.py pins both.
"""

from __future__ import annotations

import importlib
import importlib.util
import math
import warnings

import torch
import torch.nn as nn
from torch.overrides import TorchFunctionMode

from ..adapters import add_adapter, set_adapter
from ..config import LoraConfig, reject
from ..inject import inject_lora, lora_layers
from ..weighted import add_weighted_adapter
from .seeded import generator, materialize_gpt2, random_ids, tiny_gpt2, tiny_gpt2_on_meta

ONE_ADAPTER_TARGETS = ["c_attn", "c_proj"]                           # every Conv1D of the tiny GPT-2
RATIO, DLOGIT = "‖ΔW'‖ / ‖ΔW‖", "max |Δlogit| vs source"             # the check's two measures


# --- one adapter at weight 1.0: lora_core against PEFT (PEFT issue 3761) ---------------------------------------
# The torch functions that draw from the global generator unless handed `generator=` (what a layer's init calls).
_DRAWS = frozenset({"uniform_", "normal_", "kaiming_uniform_", "kaiming_normal_", "bernoulli_", "rand", "randn"})


class _LocalDraws(TorchFunctionMode):
    """Inside, a draw that would come from torch's global generator comes from `gen` instead.

    PEFT's add_weighted_adapter builds the new adapter's nn.Linear, whose init draws from the global generator (the
    values are then overwritten). A torch function mode is thread-local, so another learner's thread is untouched.
    """

    def __init__(self, gen: torch.Generator):
        super().__init__()
        self.gen = gen

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if getattr(func, "__name__", "") in _DRAWS and kwargs.get("generator") is None:
            kwargs = {**kwargs, "generator": self.gen}
        return func(*args, **kwargs)


Side = tuple[list[torch.Tensor], torch.Tensor, float]  # one adapter as measured: ΔW per layer, logits, scaling


def _measure(library: str, rslora: bool, source: Side, merged: Side) -> dict:
    """One row: ‖ΔW'‖/‖ΔW‖ over every adapted layer, max |Δlogit| of the merged adapter against its source."""
    def norm(deltas: list[torch.Tensor]) -> float:
        return math.sqrt(sum(float(d.float().norm()) ** 2 for d in deltas))
    return {"rsLoRA": "on" if rslora else "off", "library": library, "source scaling": source[2],
            "merged scaling": merged[2], RATIO: norm(merged[0]) / norm(source[0]),
            DLOGIT: float((merged[1] - source[1]).abs().max())}


@torch.no_grad()
def _ours(model: nn.Module, name: str, ids: torch.Tensor) -> Side:
    layers = [layer for _, layer in lora_layers(model) if name in layer.r]
    set_adapter(model, name, inference_mode=True)
    return [layer.delta_weight(name) for layer in layers], model(input_ids=ids).logits, layers[0].scaling[name]


@torch.no_grad()
def _theirs(peft, twin: nn.Module, name: str, ids: torch.Tensor) -> Side:
    layers = [m for m in twin.modules() if isinstance(m, peft.tuners.lora.LoraLayer) and name in m.r]
    twin.set_adapter(name)
    return [layer.get_delta_weight(name) for layer in layers], twin(input_ids=ids).logits, layers[0].scaling[name]


def one_adapter_check(r: int = 4) -> dict:
    """Merge ONE adapter with weight 1.0 (rsLoRA off, then on) in lora_core and in PEFT, on the same weights.

    A tiny seeded GPT-2 holds two adapters, "plain" and "rslora" (r, α = 2r, both factors random so ΔW ≠ 0);
    PEFT's twin is built on the meta device (no draws) and loads our state dict, so both start equal. Returns the
    table rows, and {"ours"|"peft": {False|True: row}} by rsLoRA. PEFT's rows are absent when it is not installed.
    """
    if isinstance(r, bool) or not isinstance(r, int) or not 1 <= r <= 64:
        reject("r", r, "an integer from 1 to 64")
    fields = dict(r=r, lora_alpha=2 * r, target_modules=ONE_ADAPTER_TARGETS, init_lora_weights=False)
    seed = 0  # the same tiny model and adapters every time
    ours = tiny_gpt2(seed)
    gen = generator(seed + 1)
    inject_lora(ours, LoraConfig(**fields), adapter_name="plain", generator=gen)
    add_adapter(ours, "rslora", LoraConfig(**fields, use_rslora=True), generator=gen)
    ids = random_ids(ours.config.vocab_size, (2, 12), seed + 2)              # (2, 12)
    peft = importlib.import_module("peft") if importlib.util.find_spec("peft") else None
    twin = _peft_twin(peft, fields, ours.state_dict(), seed) if peft is not None else None
    result: dict = {"r": r, "sqrt_r": math.sqrt(r), "available": peft is not None, "rows": [], "ours": {}, "peft": {}}
    for source, rslora in (("plain", False), ("rslora", True)):
        merged = f"{source}_merged"
        add_weighted_adapter(ours, [source], [1.0], merged, combination_type="linear")
        result["ours"][rslora] = _measure("lora_core", rslora, _ours(ours, source, ids), _ours(ours, merged, ids))
        result["rows"].append(result["ours"][rslora])
        if twin is not None:
            with warnings.catch_warnings(), _LocalDraws(generator(seed + 3)):
                warnings.simplefilter("ignore")
                twin.add_weighted_adapter([source], [1.0], merged, combination_type="linear")
            result["peft"][rslora] = _measure("PEFT", rslora, _theirs(peft, twin, source, ids),
                                              _theirs(peft, twin, merged, ids))
            result["rows"].append(result["peft"][rslora])
    return result


def _peft_twin(peft, fields: dict, state: dict, seed: int) -> nn.Module:
    """PEFT's model with the same two adapters and weights: wrapped on meta (no draws), then our state dict loaded."""
    def config(rslora: bool):
        return peft.LoraConfig(**fields, use_rslora=rslora, fan_in_fan_out=True)
    with warnings.catch_warnings(), torch.device("meta"):
        warnings.simplefilter("ignore")
        twin = peft.get_peft_model(tiny_gpt2_on_meta(), config(False), adapter_name="plain")
        twin.add_adapter("rslora", config(True))
    twin = materialize_gpt2(twin, seed).eval()  # eval: GPT-2's dropout would draw from the global RNG
    twin.base_model.model.load_state_dict(state)
    return twin
