"""LoraConfig: the one place where the rules about r, alpha, dropout, bias and init live.

Field names and meanings follow HF PEFT's `LoraConfig` (peft/tuners/lora/config.py) so that an
`adapter_config.json` written by either library reads the same. References: LoRA, Hu et al. 2021
(arXiv 2106.09685); rsLoRA, Kalajdzievski 2023 (arXiv 2312.03732); PiSSA, Meng et al. 2024
(arXiv 2404.02948); DoRA, Liu et al. 2024 (arXiv 2402.09353).
"""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass, fields
from typing import Any, NoReturn

import torch.nn as nn

BIAS_MODES = ("none", "all", "lora_only")
ALL_LINEAR = "all-linear"
# PEFT 0.21's TaskType (peft/utils/peft_types.py). task_type picks PEFT's wrapper class (PeftModelFor...);
# three of those wrappers also train the model's head in full and save it with the adapter, by adding
# these names to modules_to_save (peft_model.py, the __init__ of each class).
TASK_TYPES = ("SEQ_CLS", "SEQ_2_SEQ_LM", "CAUSAL_LM", "TOKEN_CLS", "QUESTION_ANS", "FEATURE_EXTRACTION")
# The largest |lora_alpha| a config may hold. Published recipes use alpha in the ones to hundreds (alpha = 2r at
# r = 256 is 512; QLoRA uses 16 at r = 64), so 1e6 leaves three orders of magnitude of room, while the scale
# alpha / r (at most 1e6, at r = 1) stays a plain float32 number: alpha = 1e300 passed as "finite" and then
# overflowed when torch turned the scale into a float32 tensor.
MAX_LORA_ALPHA = 1e6
TASK_HEADS: dict[str, tuple[str, ...]] = {
    "SEQ_CLS": ("classifier", "score"),
    "TOKEN_CLS": ("classifier", "score"),
    "QUESTION_ANS": ("qa_outputs",),
}


def reject(name: str, value: Any, allowed: str) -> NoReturn:
    """Raise the ValueError every bad input gets: the field, the value, and what is allowed."""
    raise ValueError(f"{name}={value!r} is not allowed: {allowed}")


RESERVED_ADAPTER_NAMES = ("__base__",)  # PEFT's name for "no adapter" in a mixed batch


def check_adapter_name(name: object) -> None:
    """ValueError unless `name` can name an adapter: it keys nn.ModuleDicts and, when saved, a folder."""
    if not isinstance(name, str) or not name:
        reject("adapter_name", name, "give a non-empty string, e.g. 'default'")
    if "." in name or "/" in name or "\\" in name:
        reject("adapter_name", name, "it may not contain '.' (a module path separator) or '/' and '\\' (it names a "
                                     "folder when saved)")
    if name in RESERVED_ADAPTER_NAMES:
        reject("adapter_name", name, "'__base__' means the base model without any adapter in PEFT's mixed batches")
    if hasattr(nn.ModuleDict(), name) or hasattr(nn.ParameterDict(), name):
        reject("adapter_name", name, "it is an attribute of nn.ModuleDict, which cannot hold a module under that key")


def _names(value: Any) -> bool:
    """A list, tuple or set of strings (what a JSON file or a caller may give for module names)."""
    return isinstance(value, (list, tuple, set, frozenset)) and all(isinstance(v, str) for v in value)


@dataclass
class LoraConfig:
    """What to adapt and how. Every field is checked in `__post_init__`."""

    r: int = 8                      # rank of the update ΔW = B @ A; B is (out, r), A is (r, in)
    lora_alpha: float = 8           # ΔW is scaled by lora_alpha / r (or / sqrt(r) with use_rslora)
    target_modules: list[str] | str | None = None  # names, a regex (full match), "all-linear" or None
    lora_dropout: float = 0.0       # dropout on the LoRA branch's *input* x, in train mode only
    bias: str = "none"              # which biases also train: "none" | "all" | "lora_only"
    use_rslora: bool = False        # rank-stabilised scaling alpha / sqrt(r)
    use_dora: bool = False          # DoRA: W' = m * (W + ΔW) / ‖W + ΔW‖, a trained magnitude m per output feature
    init_lora_weights: bool | str = True  # True: A Kaiming-uniform, B zero | "gaussian" | False | "pissa" | "olora"
    layers_to_transform: list[int] | int | None = None  # only these layer indices (list targets)
    layers_pattern: list[str] | str | None = None       # the name before the index, e.g. "h" or "layers"
    modules_to_save: list[str] | None = None  # modules trained in full, as a trainable copy
    # Whether the base weight is stored (in, out), as GPT-2's Conv1D does. The layer type decides (Conv1D:
    # True, Linear: False); None says nothing, a value that contradicts a layer gets PEFT's warning.
    fan_in_fan_out: bool | None = None
    # PEFT's task: SEQ_CLS, TOKEN_CLS and QUESTION_ANS also train and save the head (TASK_HEADS)
    task_type: str | None = None
    base_model_name_or_path: str | None = None

    def __post_init__(self) -> None:
        if isinstance(self.r, bool) or not isinstance(self.r, int) or self.r <= 0:
            reject("r", self.r, "the rank must be a positive integer (1, 2, 4, 8, ...)")
        if isinstance(self.lora_alpha, bool) or not isinstance(self.lora_alpha, (int, float)) \
                or not math.isfinite(self.lora_alpha) or not 0 < self.lora_alpha <= MAX_LORA_ALPHA:
            reject("lora_alpha", self.lora_alpha, f"alpha must be a positive number, at most {MAX_LORA_ALPHA:,.0f}")
        if isinstance(self.lora_dropout, bool) or not isinstance(self.lora_dropout, (int, float)) \
                or not 0.0 <= self.lora_dropout < 1.0:
            reject("lora_dropout", self.lora_dropout, "dropout must be in [0, 1)")
        if not isinstance(self.use_rslora, bool):
            reject("use_rslora", self.use_rslora, "use true or false")
        if not isinstance(self.use_dora, bool):
            reject("use_dora", self.use_dora, "use true or false")
        if self.fan_in_fan_out is not None and not isinstance(self.fan_in_fan_out, bool):
            reject("fan_in_fan_out", self.fan_in_fan_out, "use true, false or None (decided by the layer type)")
        if self.task_type is not None:  # PEFT's PeftConfig.__post_init__ raises for any other value, too
            if not isinstance(self.task_type, str) or self.task_type not in TASK_TYPES:
                reject("task_type", self.task_type, f"use None or one of {', '.join(TASK_TYPES)}")
            self.task_type = TASK_TYPES[TASK_TYPES.index(self.task_type)]  # PEFT's TaskType member -> plain str
        if self.base_model_name_or_path is not None and not isinstance(self.base_model_name_or_path, str):
            reject("base_model_name_or_path", self.base_model_name_or_path, "a string or None")
        if self.bias not in BIAS_MODES:
            reject("bias", self.bias, f"use one of {', '.join(map(repr, BIAS_MODES))}")
        init = self.init_lora_weights
        if not (init is True or init is False or init in ("gaussian", "pissa", "olora")):
            reject("init_lora_weights", self.init_lora_weights, "use True, False, 'gaussian', 'pissa' or 'olora'")
        self.target_modules = self._check_targets(self.target_modules)
        if isinstance(self.layers_to_transform, int) and not isinstance(self.layers_to_transform, bool):
            self.layers_to_transform = [self.layers_to_transform]
        if self.layers_to_transform is not None:
            layers = list(self.layers_to_transform)
            if any(isinstance(i, bool) or not isinstance(i, int) or i < 0 for i in layers):
                reject("layers_to_transform", self.layers_to_transform, "a list of layer indices >= 0")
            self.layers_to_transform = layers or None
        if isinstance(self.layers_pattern, str):
            self.layers_pattern = [self.layers_pattern]
        if self.layers_pattern is not None and not _names(self.layers_pattern):
            reject("layers_pattern", self.layers_pattern, "a module name such as 'h' or 'layers', or a list of them")
        if isinstance(self.modules_to_save, str):
            self.modules_to_save = [self.modules_to_save]
        if self.modules_to_save is not None:
            if not _names(self.modules_to_save):
                reject("modules_to_save", self.modules_to_save, "a list of module names, e.g. ['lm_head']")
            # PEFT extends the list each time a task wrapper is built, so its files can repeat a name
            self.modules_to_save = list(dict.fromkeys(m for m in self.modules_to_save if m.strip())) or None

    @staticmethod
    def _check_targets(targets: Any) -> list[str] | str | None:
        if targets is None:
            return None
        if isinstance(targets, str):
            if targets.strip().lower() == ALL_LINEAR:
                return ALL_LINEAR
            if not targets.strip():
                reject("target_modules", targets, "an empty pattern matches nothing; give names or a regex")
            try:
                re.compile(targets)
            except re.error as e:
                reject("target_modules", targets, f"not a valid regular expression ({e})")
            return targets
        if not _names(targets):
            reject("target_modules", targets, "module names (strings), a regex, 'all-linear' or None")
        names = [t.strip() for t in targets]
        if not names or not all(names):
            reject("target_modules", list(targets),
                   "give at least one module name, e.g. ['q_proj', 'v_proj'] (Llama) or ['c_attn'] (GPT-2)")
        return sorted(set(names))  # PEFT stores the list as a set, too

    @property
    def task_heads(self) -> tuple[str, ...]:
        """The head names PEFT's wrapper for `task_type` adds to modules_to_save (none for most tasks)."""
        return TASK_HEADS.get(self.task_type, ())

    def saved_module_names(self) -> list[str] | None:
        """modules_to_save as PEFT's task wrapper leaves it: the given names, then the task's head names."""
        return list(dict.fromkeys([*(self.modules_to_save or []), *self.task_heads])) or None

    @property
    def scaling(self) -> float:
        """The factor in front of B @ A: alpha / r, or alpha / sqrt(r) with rsLoRA."""
        return self.lora_alpha / (math.sqrt(self.r) if self.use_rslora else self.r)

    # --- PEFT's adapter_config.json -------------------------------------------------------
    def to_peft_dict(self) -> dict[str, Any]:
        """The fields PEFT writes to adapter_config.json (defaults fill in the rest on load)."""
        d = asdict(self)
        d["fan_in_fan_out"] = bool(self.fan_in_fan_out)  # PEFT's default, False, where the layers said nothing
        d.update(peft_type="LORA", inference_mode=True, rank_pattern={}, alpha_pattern={},
                 lora_bias=False, target_parameters=None, exclude_modules=None)
        return d

    @classmethod
    def from_peft_dict(cls, d: dict[str, Any]) -> LoraConfig:
        """Read a PEFT adapter_config.json; refuse LoRA variants this library does not implement."""
        if d.get("peft_type", "LORA") != "LORA":
            reject("peft_type", d.get("peft_type"), "only LoRA adapters ('LORA') can be loaded")
        if d.get("use_dora"):  # PEFT's LoraConfig.__post_init__ refuses these with DoRA (peft/tuners/lora/config.py)
            for key in ("lora_bias", "megatron_config"):
                if d.get(key):
                    reject("use_dora", d["use_dora"], f"DoRA does not support {key}={d[key]!r} (as in PEFT); "
                                                      "set use_dora to false")
        for key, off in (("lora_bias", False), ("rank_pattern", {}),
                         ("alpha_pattern", {}), ("target_parameters", None)):
            if d.get(key) is not None and d.get(key) != off:
                reject(key, d.get(key), "this adapter uses a PEFT variant LoRA Lab does not implement")
        names = {f.name for f in fields(cls)}
        known = {k: v for k, v in d.items() if k in names}
        return cls(**known)
