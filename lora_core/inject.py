"""Put LoRA into a model and take it out again, with PEFT's target matching and trainable marking.

    names = inject_lora(model, cfg)     # wraps matching layers in place, freezes everything else
    merge_lora(model) / unmerge_lora(model) / merge_and_unload(model)
    with disable_lora(model): ...       # the base model's behaviour, adapter kept

Matching follows peft/tuners/tuners_utils.py `check_target_module_exists`:
  * a list matches a module whose full name equals an entry or ends with "." + entry,
    so ["c_proj"] hits both attn.c_proj and mlp.c_proj;
  * a string is a regular expression that must match the full module name (within MATCH_SECONDS in
    all, patterns.py: a pattern that backtracks without end is a ValueError, not a frozen server);
  * "all-linear" means every Linear/Conv1D except the output layer (lm_head);
  * None means PEFT's default for the architecture (GPT-2: c_attn; Llama: q_proj, v_proj).

task_type follows peft_model.py: SEQ_CLS adds the head ("classifier", "score") to modules_to_save
before matching, so a target inside the head is skipped; TOKEN_CLS ("classifier", "score") and
QUESTION_ANS ("qa_outputs") add theirs after injection, so a LoRA target that is the head cannot be saved
in full: PEFT raises a TypeError there, we a ValueError before anything changes. The other task types
change nothing about the adapter.
"""

from __future__ import annotations

import copy
import dataclasses
import re
from collections.abc import Callable

import torch
import torch.nn as nn

from . import mixed_rows
from .config import ALL_LINEAR, LoraConfig, check_adapter_name
from .layers import LoraLayer, LoraLinear, check_lora_target, make_lora_layer
from .patterns import TimedPattern
from .targets import DISPATCH, LINEAR_TYPES, is_supported

# PEFT's TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING, for the architectures we ship.
DEFAULT_TARGETS: dict[str, list[str]] = {
    "gpt2": ["c_attn"],
    "llama": ["q_proj", "v_proj"],
    "mistral": ["q_proj", "v_proj"],
    "qwen2": ["q_proj", "v_proj"],
    "gemma": ["q_proj", "v_proj"],
    "phi3": ["qkv_proj"],
    "opt": ["q_proj", "v_proj"],
    "gpt_neox": ["query_key_value"],
    "bert": ["query", "value"],
}


class ModulesToSaveWrapper(nn.Module):
    """A module trained in full: a frozen `original_module` and a copy per adapter, as in PEFT
    (peft/utils/other.py, ModulesToSaveWrapper).

    `modules_to_save[name]` is adapter `name`'s own deep copy of the original, made when the adapter is added;
    at most one of them is active (`active_adapter`; None: the original runs) and only that one may train. The
    forward runs the active copy, or the original when the wrapper is disabled or holds no copy for the active
    adapter; with `adapter_names` (a mixed batch, mixed_rows.py) each row runs its own adapter's copy.
    """

    def __init__(self, module: nn.Module, adapter_name: str = "default", active: bool = True):
        super().__init__()
        self.original_module = module
        self.modules_to_save = nn.ModuleDict()
        self.active_adapter: str | None = adapter_name if active else None
        self.disabled = False
        self.update(adapter_name)

    def update(self, adapter_name: str) -> None:
        """Give adapter `adapter_name` its own copy of the original module, frozen (set_adapter trains it)."""
        self.modules_to_save[adapter_name] = copy.deepcopy(self.original_module).requires_grad_(False)

    def active_copy(self) -> nn.Module | None:
        """The active adapter's trained copy, or None when this wrapper holds none for it."""
        return self.modules_to_save[self.active_adapter] if self.active_adapter in self.modules_to_save else None

    def forward(self, *args, adapter_names: list[str] | None = None, **kwargs):
        if adapter_names is not None:
            return mixed_rows.mixed_saved_forward(self, adapter_names, *args, **kwargs)
        trained = None if self.disabled else self.active_copy()
        return (self.original_module if trained is None else trained)(*args, **kwargs)


# --- finding targets --------------------------------------------------------------------------
def candidate_modules(model: nn.Module) -> list[str]:
    """Short names of every layer LoRA can wrap, e.g. ['c_attn', 'c_fc', 'c_proj', 'lm_head', 'wpe', 'wte']."""
    return sorted({n.rsplit(".", 1)[-1] for n, m in model.named_modules() if n and is_supported(m)})


def output_layer_name(model: nn.Module) -> str | None:
    get = getattr(model, "get_output_embeddings", None)
    out = get() if callable(get) else None
    return next((n for n, m in model.named_modules() if m is out), None) if out is not None else None


def _layer_index(name: str, patterns: list[TimedPattern] | None) -> int | None:
    if not patterns:
        m = re.match(r".*?\.[^.]*\.(?P<idx>\d+)\.", name)  # the first numbered segment
    else:
        m = next((m for p in patterns if (m := p.match(name))), None)
    return int(m.group("idx")) if m else None


def _target_test(targets: list[str] | str, cfg: LoraConfig) -> Callable[[str], bool]:
    """PEFT's check_target_module_exists for one config, with user regexes under one time budget."""
    if isinstance(targets, str):
        pattern = TimedPattern("target_modules", targets)
        return lambda name: pattern.fullmatch(name) is not None
    layers = None if not cfg.layers_pattern else [
        TimedPattern("layers_pattern", rf"(?:^|.*?\.){p}\.(?P<idx>\d+)\.", shown=p) for p in cfg.layers_pattern]

    def test(name: str) -> bool:
        if name in targets:
            return True
        if not any(name.endswith("." + t) for t in targets):
            return False
        return cfg.layers_to_transform is None or _layer_index(name, layers) in cfg.layers_to_transform
    return test


def _resolved_targets(model: nn.Module, cfg: LoraConfig) -> list[str] | str:
    if cfg.target_modules == ALL_LINEAR:
        out = output_layer_name(model)
        return sorted(n for n, m in model.named_modules()  # a quantized Linear, and an adapted Linear, too
                      if isinstance(m, (*LINEAR_TYPES, *DISPATCH, LoraLinear)) and n != out)
    if cfg.target_modules is None:
        model_type = getattr(getattr(model, "config", None), "model_type", None)
        if model_type not in DEFAULT_TARGETS:
            raise ValueError(f"target_modules=None has no default for model_type={model_type!r}: "
                             f"give target_modules, e.g. one of {candidate_modules(model)}")
        return DEFAULT_TARGETS[model_type]
    return cfg.target_modules


def _saved_before_matching(cfg: LoraConfig) -> list[str]:
    """The modules_to_save that PEFT knows while it matches targets: SEQ_CLS adds its head first."""
    return cfg.saved_module_names() if cfg.task_type == "SEQ_CLS" else (cfg.modules_to_save or [])


def matched_modules(model: nn.Module, cfg: LoraConfig) -> list[str]:
    """Full names of the modules `cfg` targets in `model`, in model order (may be empty).

    On a model with LoRA already, a LoRA layer is matched as the layer it wraps, and nothing inside it (or
    inside a module saved in full) is a target: adapters are never nested (PEFT's inject_adapter).
    """
    targets = _resolved_targets(model, cfg)
    saved = _saved_before_matching(cfg)
    is_target = _target_test(targets, cfg)
    inside = tuple(n + "." for n, m in model.named_modules() if isinstance(m, (LoraLayer, ModulesToSaveWrapper)))
    names = []
    for name, _ in model.named_modules():
        if not name or name.startswith(inside) or any(re.match(rf"(^|.*\.){re.escape(m)}($|\..*)", name)
                                                      for m in saved):
            continue  # PEFT never puts an adapter inside a module it saves in full, nor inside an adapter
        if is_target(name):
            names.append(name)
    return names


def _set_submodule(model: nn.Module, name: str, new: nn.Module) -> None:
    parent, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, child, new)


# --- inject / remove ----------------------------------------------------------------------------
def inject_lora(model: nn.Module, cfg: LoraConfig, generator: torch.Generator | None = None, *,
                adapter_name: str = "default") -> list[str]:
    """Wrap every targeted layer of `model` in place with adapter `adapter_name`, active and trainable;
    freeze the rest. Returns the wrapped names (PEFT's get_peft_model).

    Everything is checked before anything changes, so a ValueError leaves `model` as it was.
    `generator` seeds the LoRA factors without touching torch's global RNG (None: the global RNG, as PEFT).
    `model.lora_configs[adapter_name]` is `cfg` as PEFT leaves it after injection (`peft_config`):
    fan_in_fan_out settled by the layers, modules_to_save with the task's head. `model.lora_active` lists the
    active adapters. (Not PEFT's attribute names: transformers models already define `peft_config` and
    `active_adapters()`.)
    """
    check_adapter_name(adapter_name)
    if any(isinstance(m, (LoraLayer, ModulesToSaveWrapper)) for m in model.modules()):
        raise ValueError("model already has LoRA layers: inject once, or call remove_lora(model) first "
                         "(add_adapter(model, name, cfg) adds another adapter)")
    names = matched_modules(model, cfg)
    if not names:
        raise ValueError(no_targets_message(model, cfg))
    modules = dict(model.named_modules())
    for name in names:  # validate first: layer type, rank, init, with the layer named
        check_lora_target(modules[name], cfg, name)
    saved = saved_in_full(model, cfg, names)
    # Every check has passed: from here on nothing raises, so the model is never half-injected.
    settled = wrap_targets(model, names, cfg, generator, adapter_name, active=[adapter_name])
    save_in_full(model, saved, adapter_name, active=True)
    _mark_trainable(model, cfg.bias)
    settled_cfg = dataclasses.replace(cfg, fan_in_fan_out=settled, modules_to_save=cfg.saved_module_names())
    model.lora_configs = {adapter_name: settled_cfg}
    model.lora_active = [adapter_name]
    return names


def wrap_targets(model: nn.Module, names: list[str], cfg: LoraConfig, generator: torch.Generator | None,
                 adapter_name: str, active: list[str]) -> bool:
    """Give every target in `names` adapter `adapter_name`, already checked; returns the settled fan_in_fan_out.

    A target that is a LoRA layer already gets the adapter beside its others (`update_layer`); any other is
    wrapped, with `active` as its active adapters. PEFT writes each new Linear/Conv1D's layout back into its
    config as it goes (and warns when that flips the flag), so the flag one layer sees is the one the layer
    before it left, and the file gets the last one. cfg.fan_in_fan_out=None (ours) leaves every layer to its
    type, silently.
    """
    modules = dict(model.named_modules())
    new, flag, settled = {}, cfg.fan_in_fan_out, bool(cfg.fan_in_fan_out)
    for name in names:  # in model order, as PEFT's injection loop
        target = modules[name]
        if isinstance(target, LoraLayer):  # an existing layout stays as it is
            target.update_layer(adapter_name, cfg, generator)
            continue
        new[name] = layer = make_lora_layer(target, cfg, name, generator=generator, fan_in_fan_out=flag,
                                            adapter_name=adapter_name)
        layer.active_adapters = list(active)
        if isinstance(target, LINEAR_TYPES) and not isinstance(target, tuple(DISPATCH)):
            settled = layer.fan_in_fan_out
            flag = settled if flag is not None else None
    for name, layer in new.items():
        _set_submodule(model, name, layer)
    return settled


def saved_in_full(model: nn.Module, cfg: LoraConfig, targets: list[str]) -> list[str]:
    """Full names of the modules `cfg` trains in full, checked: ValueError for a name that matches nothing, a
    module saved inside another saved one, or one that gets LoRA too (from `targets` or an earlier adapter).

    PEFT's `_set_trainable` match: a module whose full name ends with an entry of `cfg.saved_module_names()`.
    A module another adapter saves already is matched as its wrapper; nothing inside a LoRA layer or a
    wrapper is.
    """
    to_save = cfg.saved_module_names() or []
    modules = dict(model.named_modules())
    inside = tuple(n + "." for n, m in modules.items() if isinstance(m, (LoraLayer, ModulesToSaveWrapper)))
    saved = [n for n in modules if n and not n.startswith(inside) and any(n.endswith(t) for t in to_save)]
    asked = [t for t in to_save if t not in cfg.task_heads]  # a task's head may be absent; a name asked for not
    if asked and not any(n.endswith(t) for n in saved for t in asked):
        raise ValueError(f"modules_to_save={cfg.modules_to_save!r} matches no module of this model")
    _check_saved_not_nested(saved, to_save)
    if clash := next((n for n in targets for s in saved if n == s or n.startswith(s + ".")), None):
        raise ValueError(f"target module {clash!r} is also saved in full (modules_to_save="
                         f"{cfg.saved_module_names()!r}, task_type={cfg.task_type!r}): a module can get LoRA or "
                         "be trained as a copy, not both; leave it out of target_modules")
    if lora := next((n for n in saved if isinstance(modules[n], LoraLayer)), None):
        raise ValueError(f"modules_to_save={cfg.saved_module_names()!r} (task_type={cfg.task_type!r}) matches "
                         f"{lora!r}, which has LoRA already (adapters {list(modules[lora].r)}): a module can get "
                         "LoRA or be trained as a copy, not both")
    return saved


def save_in_full(model: nn.Module, saved: list[str], adapter_name: str, active: bool) -> None:
    """Give adapter `adapter_name` a copy of each module in `saved` (checked by `saved_in_full`), frozen: a
    module saved already gets one more copy in its wrapper, any other is wrapped (its copy `active` or not)."""
    for name in saved:
        module = model.get_submodule(name)
        if isinstance(module, ModulesToSaveWrapper):
            module.update(adapter_name)
        else:
            _set_submodule(model, name, ModulesToSaveWrapper(module, adapter_name, active=active))


def no_targets_message(model: nn.Module, cfg: LoraConfig) -> str:
    """Why nothing matched: no such module, or (PEFT's NoMatchingPeftModuleError) all of them are saved in full."""
    if _saved_before_matching(cfg):
        hidden = matched_modules(model, dataclasses.replace(cfg, modules_to_save=None, task_type=None))
        if hidden:
            return (f"target_modules={cfg.target_modules!r} matches only modules inside modules_to_save="
                    f"{_saved_before_matching(cfg)!r} (e.g. {hidden[0]!r}): a module saved in full gets no LoRA, "
                    "as in PEFT, so nothing is left to adapt; target modules outside the saved ones, or save less")
    return (f"target_modules={cfg.target_modules!r} matches no module of this model: "
            f"candidates are {candidate_modules(model)}, 'all-linear' or a regex")


def _check_saved_not_nested(saved: list[str], to_save: list[str]) -> None:
    """Refuse modules_to_save that saves a module and also one inside it.

    PEFT matches each name against the end of every module name ("attn" also hits "attn.c_attn"). When
    one match sits inside another, PEFT 0.21 wraps the outer module, then hangs a second, trainable
    copy of the inner one on that wrapper, where the model never runs it; both copies are then saved
    under one key of the adapter file. So a module is saved in full once, never also inside another.
    """
    def entry(name: str) -> str:  # the modules_to_save entry that picked `name`
        return next(t for t in to_save if name.endswith(t))

    for outer in saved:
        if inner := next((n for n in saved if n.startswith(outer + ".")), None):
            raise ValueError(
                f"modules_to_save={to_save!r} saves {outer!r} (matched by {entry(outer)!r}) and also {inner!r} "
                f"inside it (matched by {entry(inner)!r}: as in PEFT, a name matches the end of a module's name): "
                "a module can be saved in full only once, not also inside another saved module; name modules "
                "that do not contain one another")


def _mark_trainable(model: nn.Module, bias: str) -> None:
    """PEFT's `_mark_only_adapters_as_trainable`: the active adapters' factors, the chosen biases, saved copies."""
    for p in model.parameters():
        p.requires_grad_(False)
    for m in model.modules():
        if isinstance(m, LoraLayer):
            for name in (n for n in m.active_adapters if n in m.r):
                for p in m.adapter(name).parameters():  # A, B (and DoRA's magnitude)
                    p.requires_grad_(True)
            if bias == "lora_only" and getattr(m.base_layer, "bias", None) is not None:
                _train_own_copy(m.base_layer, "bias")
        elif isinstance(m, ModulesToSaveWrapper) and m.active_copy() is not None:
            m.active_copy().requires_grad_(True)
    if bias == "all":  # every bias, but not a saved module's original: PEFT's wrapper freezes it after marking
        originals = tuple(n + ".original_module." for n, m in model.named_modules()
                          if isinstance(m, ModulesToSaveWrapper))
        for n, _ in list(model.named_parameters()):
            if (n == "bias" or n.endswith(".bias")) and not n.startswith(originals):
                owner, _, leaf = n.rpartition(".")
                _train_own_copy(model.get_submodule(owner) if owner else model, leaf)


def _train_own_copy(module: nn.Module, name: str) -> None:
    """Make a base parameter trainable on a private copy (the base may be shared; see sharing.py)."""
    p = getattr(module, name)
    setattr(module, name, nn.Parameter(p.detach().clone(), requires_grad=True))


def lora_layers(model: nn.Module) -> list[tuple[str, LoraLayer]]:
    """[(name, layer)] for every LoRA layer in `model`, in model order."""
    return [(n, m) for n, m in model.named_modules() if isinstance(m, LoraLayer)]


def adapter_name_of(model: nn.Module, name: str | None = None) -> str:
    """`name` if `model` has that adapter; None: the model's one active adapter. Else a ValueError saying why."""
    configs = getattr(model, "lora_configs", None)
    if not configs:
        raise ValueError("model has no LoRA adapter: call inject_lora(model, cfg) first")
    if name is None:
        if len(model.lora_active) != 1:
            raise ValueError(f"model has the active adapters {model.lora_active} of {list(configs)}: "
                             "name the adapter meant")
        return model.lora_active[0]
    if name not in configs:
        raise ValueError(f"adapter_name={name!r} is not an adapter of this model: it has {list(configs)}")
    return name


def adapter_config(model: nn.Module, name: str | None = None) -> LoraConfig:
    """The LoraConfig of adapter `name` (None: the active one), as injection left it (what PEFT saves)."""
    name = adapter_name_of(model, name)
    return model.lora_configs[name]


def adapter_layers(model: nn.Module, adapter_name: str | None = None) -> list[tuple[str, LoraLayer]]:
    """[(name, layer)] for the LoRA layers holding adapter `adapter_name` (None: the active one), in model order."""
    adapter_name = adapter_name_of(model, adapter_name)
    return [(n, layer) for n, layer in lora_layers(model) if adapter_name in layer.r]


def trainable_parameters(model: nn.Module) -> tuple[int, int]:
    """(trainable, total) over unique parameters, as PEFT's `get_nb_trainable_parameters`.

    The total includes the adapter itself and counts a tied weight (GPT-2's wte/lm_head) once.
    """
    trainable = total = 0
    for p in model.parameters():  # parameters() yields each tied tensor once
        total += p.numel()
        trainable += p.numel() if p.requires_grad else 0
    return trainable, total


def peft_line(trainable: int, total: int) -> str:
    """PEFT's `print_trainable_parameters` line."""
    return f"trainable params: {trainable:,d} || all params: {total:,d} || trainable%: {100 * trainable / total:.4f}"


def unload(model: nn.Module, keep_trained_copies: bool) -> nn.Module:
    """Put each LoRA layer's `base_layer` back in its place (merged or not, as it stands now).

    A ModulesToSaveWrapper gives back the active adapter's trained copy (`keep_trained_copies`, after a
    merge) or the original module. The adapters' configs go too.
    """
    for name, layer in lora_layers(model):
        _set_submodule(model, name, layer.base_layer)
    for name, m in [(n, m) for n, m in model.named_modules() if isinstance(m, ModulesToSaveWrapper)]:
        trained = m.active_copy() if keep_trained_copies else None
        _set_submodule(model, name, m.original_module if trained is None else trained)
    for attr in ("lora_configs", "lora_active"):
        if hasattr(model, attr):
            delattr(model, attr)
    return model


def remove_lora(model: nn.Module) -> nn.Module:
    """Drop every adapter without merging and return the original model (merged layers are unmerged first)."""
    for _, layer in lora_layers(model):
        if layer.merged:
            layer.unmerge()
    return unload(model, keep_trained_copies=False)
