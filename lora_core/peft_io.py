"""Adapters in HF PEFT's on-disk format, both directions.

A PEFT LoRA adapter is a folder with two files:
    adapter_config.json         the LoraConfig (peft_type "LORA", r, lora_alpha, target_modules, ...)
    adapter_model.safetensors   the trained tensors, keyed like
        base_model.model.transformer.h.0.attn.c_attn.lora_A.weight        (r, in)
        base_model.model.transformer.h.0.attn.c_attn.lora_B.weight        (out, r)
        base_model.model.transformer.wte.lora_embedding_A                 (r, num_embeddings)
        base_model.model.transformer.h.0.attn.c_attn.base_layer.bias      (bias="all"/"lora_only")
        base_model.model.lm_head.weight                                   (modules_to_save)
Our module tree is PEFT's (adapter "default" is `...c_attn.lora_A.default.weight`), so a file key is our
parameter's name with the adapter name dropped, as PEFT drops it, plus the prefix.
Files are written atomically (temp file, then rename); only safetensors are read, never pickles.

Several adapters are laid out as PEFT's `save_pretrained` does: "default" in the folder, any other in
`folder/<name>/`. `load_adapter(model, folder/"b", "b")` adds b, frozen and inactive as in PEFT; loading into an
existing adapter needs the file's r, alpha, rsLoRA and targets to be the adapter's (PEFT keeps the old scaling
whatever the file says); hotswap.py replaces an adapter by one with another rank or alpha.

An adapter uploaded to a shared server (`load_adapter_zip`) is checked completely before any model is
touched: size, zip members, JSON, every config field, every tensor's name, shape, dtype and values.
Every load refuses NaN/inf and values so large that ΔW would overflow the model's dtype
(`check_adapter_values`): such an adapter only makes the model's outputs inf.
"""

from __future__ import annotations

import io
import json
import math
import os
import re
import tempfile
import zipfile
from pathlib import Path

import torch
import torch.nn as nn
from safetensors.torch import load_file, save_file

from .adapters import add_adapter, delete_adapter
from .config import LoraConfig, check_adapter_name, reject
from .inject import (
    ModulesToSaveWrapper,
    adapter_config,
    adapter_layers,
    adapter_name_of,
    inject_lora,
    lora_layers,
    matched_modules,
    remove_lora,
)
from .layers import LoraLayer

PREFIX = "base_model.model."
CONFIG_NAME = "adapter_config.json"
WEIGHTS_NAME = "adapter_model.safetensors"
FACTOR_KEYS = (".lora_A.weight", ".lora_B.weight", ".lora_embedding_A", ".lora_embedding_B")


def checkpoint_key(param: str, adapter_name: str) -> str:
    """The key PEFT saves our parameter `param` of adapter `adapter_name` under, without the prefix.

    PEFT's rule (tuners_utils `_remove_adapter_name_from_state_dict_key`): the name goes from the end, or
    from just before the last part, so `c_attn.lora_A.x.weight` -> `c_attn.lora_A.weight` and
    `wte.lora_embedding_A.x` -> `wte.lora_embedding_A`. A saved copy stands for its module (utils/other.py):
    `lm_head.modules_to_save.x.weight` -> `lm_head.weight`. One exception, DoRA's m: it lives in a module, but
    PEFT keeps its older file key without ".weight" (lora/model.py `_get_adapter_state_dict`), so
    `c_attn.lora_magnitude_vector.x.weight` -> `c_attn.lora_magnitude_vector`.
    """
    if f".modules_to_save.{adapter_name}." in param:
        return param.replace(f".modules_to_save.{adapter_name}.", ".", 1)
    if param.endswith(f".{adapter_name}"):
        return param.removesuffix(f".{adapter_name}")
    head, _, last = param.rpartition(".")
    key = f"{re.sub(re.escape('.' + adapter_name) + '$', '', head)}.{last}"
    return key.removesuffix(".weight") if key.endswith(".lora_magnitude_vector.weight") else key


def adapter_parameter_names(model: nn.Module, adapter_name: str) -> list[str]:
    """Our names of adapter `adapter_name`'s own parameters (factors, DoRA's m, saved copies; not base biases), tied
    duplicates included, in model order. Found from the structure, as PEFT's `_get_tuner_state_dict_key_prefixes`:
    in each LoRA layer every per-adapter container (nn.ModuleDict, nn.ParameterDict) holding the name, in each saved
    module that adapter's copy; so a new kind of per-adapter parameter needs no change here."""
    prefixes = set()
    for name, module in model.named_modules():
        if isinstance(module, LoraLayer):
            prefixes.update(f"{name}.{child}.{adapter_name}" for child, c in module.named_children()
                            if isinstance(c, (nn.ModuleDict, nn.ParameterDict)) and adapter_name in c)
        elif isinstance(module, ModulesToSaveWrapper) and adapter_name in module.modules_to_save:
            prefixes.add(f"{name}.modules_to_save.{adapter_name}")

    def under(name: str) -> bool:  # `name` is a prefix or lies below one, at "." boundaries
        parts = name.split(".")
        return any(".".join(parts[:i]) in prefixes for i in range(1, len(parts) + 1))
    return [n for n, _ in model.named_parameters(remove_duplicate=False) if under(n)]


def adapter_keys(model: nn.Module, adapter_name: str | None = None) -> dict[str, str]:
    """{PEFT checkpoint key: our parameter name} for everything adapter `adapter_name`'s file holds
    (None: the active adapter)."""
    adapter_name = adapter_name_of(model, adapter_name)
    bias = model.lora_configs[adapter_name].bias
    keys: dict[str, str] = {}
    for name in adapter_parameter_names(model, adapter_name):
        keys[PREFIX + checkpoint_key(name, adapter_name)] = name
    if bias == "lora_only":
        for name, layer in adapter_layers(model, adapter_name):
            if getattr(layer.base_layer, "bias", None) is not None:
                keys[f"{PREFIX}{name}.base_layer.bias"] = f"{name}.base_layer.bias"
    if bias == "all":
        for name, _ in model.named_parameters():
            if name.endswith(".bias"):
                keys[PREFIX + name] = name
    return keys


def adapter_state_dict(model: nn.Module, adapter_name: str | None = None) -> dict[str, torch.Tensor]:
    """Copies of adapter `adapter_name`'s tensors (None: the active adapter's) under PEFT's checkpoint keys
    (on CPU, contiguous).

    Copies, not views: a snapshot taken mid-training must not change as training goes on, and
    safetensors refuses tensors that share memory (a tied pair would).
    """
    params = dict(model.named_parameters(remove_duplicate=False))
    return {k: params[n].detach().to("cpu", copy=True, memory_format=torch.contiguous_format)
            for k, n in adapter_keys(model, adapter_name).items()}


def adapter_config_dict(model: nn.Module, adapter_name: str | None = None) -> dict:
    """adapter_config.json's content for adapter `adapter_name` (None: the active one), with targets
    resolved the way PEFT stores them.

    The model's config already holds what PEFT writes after injection: fan_in_fan_out as the last
    Linear/Conv1D target left it, and modules_to_save with the task's head (inject_lora).
    """
    cfg: LoraConfig = adapter_config(model, adapter_name)
    d = cfg.to_peft_dict()
    if cfg.target_modules is None:  # PEFT writes the architecture default it used
        d["target_modules"] = sorted({n.rsplit(".", 1)[-1] for n, _ in adapter_layers(model, adapter_name)})
    if d.get("base_model_name_or_path") is None:
        d["base_model_name_or_path"] = getattr(getattr(model, "config", None), "_name_or_path", None) or None
    return d


def _atomic_write(path: Path, write) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)  # readers see the old file or the new one, never half of one
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def adapter_folder(directory: str | os.PathLike, adapter_name: str) -> Path:
    """Where `save_adapter` writes adapter `adapter_name` (PEFT's layout): "default" in `directory` itself,
    any other adapter in `directory/<name>/`. PEFT's `load_adapter` (and ours) reads that folder."""
    return Path(directory) if adapter_name == "default" else Path(directory) / adapter_name


def _write_adapter(model: nn.Module, adapter_name: str, folder: Path) -> None:
    """adapter_config.json + adapter_model.safetensors of one adapter, into `folder`, each file atomically."""
    folder.mkdir(parents=True, exist_ok=True)
    tensors = adapter_state_dict(model, adapter_name)
    config = json.dumps(adapter_config_dict(model, adapter_name), indent=2, sort_keys=True)
    _atomic_write(folder / WEIGHTS_NAME, lambda p: save_file(tensors, p, metadata={"format": "pt"}))
    _atomic_write(folder / CONFIG_NAME, lambda p: Path(p).write_text(config))


def save_adapter(model: nn.Module, directory: str | os.PathLike, selected_adapters: list[str] | None = None) -> Path:
    """Write the adapters `selected_adapters` (None: all) as PEFT's `save_pretrained` does, so that
    `PeftModel.from_pretrained(base, directory)` reads "default" and `load_adapter(directory/<name>, name)` the
    others (see `adapter_folder`). Returns `directory`.

    Unknown names are a ValueError, as in PEFT, and so is an empty list (PEFT silently writes nothing).
    """
    configs = getattr(model, "lora_configs", None)
    if not configs:
        raise ValueError("model has no LoRA adapter: call inject_lora(model, cfg) first")
    if selected_adapters is None:
        names = list(configs)
    else:
        if isinstance(selected_adapters, str) or not isinstance(selected_adapters, (list, tuple)):
            reject("selected_adapters", selected_adapters, f"a list of adapter names, e.g. [{next(iter(configs))!r}]")
        names = list(dict.fromkeys(selected_adapters))
        if not names:
            reject("selected_adapters", selected_adapters, f"name at least one of the model's adapters "
                                                           f"{list(configs)}, or None for all of them")
        if unknown := [n for n in names if n not in configs]:
            reject("selected_adapters", selected_adapters, f"{unknown[0]!r} is not an adapter of this model; "
                                                           f"its adapters are {list(configs)}")
    out = Path(directory)
    if out.is_file():
        reject("directory", str(directory), "a folder, not a file")
    for name in names:
        _write_adapter(model, name, adapter_folder(out, name))
    return out


def read_adapter_config(directory: str | os.PathLike) -> LoraConfig:
    """The LoraConfig stored in a PEFT adapter folder."""
    path = Path(directory) / CONFIG_NAME
    if not path.is_file():
        raise ValueError(f"adapter={str(directory)!r} has no {CONFIG_NAME}: not a PEFT adapter folder")
    try:
        d = json.loads(path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"adapter config {str(path)!r} is not valid JSON ({e})") from None
    if not isinstance(d, dict):
        raise ValueError(f"adapter config {str(path)!r} must hold a JSON object")
    return LoraConfig.from_peft_dict(d)


def read_adapter_weights(directory: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The tensors of a PEFT adapter folder, under their file keys (safetensors only: never unpickled)."""
    weights = Path(directory) / WEIGHTS_NAME
    if not weights.is_file():
        raise ValueError(f"adapter={str(directory)!r} has no {WEIGHTS_NAME} (only safetensors are read)")
    try:
        return load_file(str(weights))
    except Exception as e:  # safetensors raises its own error types for corrupt files
        raise ValueError(f"adapter weights {str(weights)!r} could not be read: {e}") from None


def load_adapter(model: nn.Module, directory: str | os.PathLike, adapter_name: str = "default",
                 is_trainable: bool | None = None) -> nn.Module:
    """Load the PEFT adapter in folder `directory` into `model` as adapter `adapter_name`; returns `model`.

    A model without LoRA gets it injected (active). A model with LoRA gets it beside its adapters: inactive and
    frozen, as PEFT's `load_adapter` (`set_adapter` activates it). An adapter it already has gets the file's
    weights, if the file's r, lora_alpha, use_rslora and targets are that adapter's (else a ValueError: see
    `load_adapter_tensors`). Every name, shape and value is checked before anything is kept: a bad file changes
    nothing. `directory` is the adapter's own folder: `folder/<name>` for a non-default one (`adapter_folder`).
    """
    return load_adapter_tensors(model, read_adapter_config(directory), read_adapter_weights(directory),
                                adapter_name, is_trainable)


def load_adapter_tensors(model: nn.Module, cfg: LoraConfig, tensors: dict[str, torch.Tensor],
                         adapter_name: str = "default", is_trainable: bool | None = None) -> nn.Module:
    """Load an adapter already in memory (PEFT's file keys) as adapter `adapter_name`; see `load_adapter`.

    `is_trainable`: None leaves each case as its PEFT counterpart does: the first adapter of a model trains,
    as after `inject_lora`; one added beside others is frozen, as PEFT's `load_adapter`; an existing one keeps
    its trainability. True makes the adapter's factors (and saved copies) train; False freezes everything its
    file holds (PEFT's `from_pretrained` leaves a `lora_only` bias trainable). A frozen load puts the model in
    eval mode, as PEFT does (`if not is_trainable: self.eval()`).

    PEFT's `load_adapter` into an adapter the model already has ignores the file's config and keeps the old
    scaling, so a file with another alpha gives silently different outputs; here that is a ValueError naming
    the field, and `hotswap.hotswap_adapter` replaces an adapter by one with another rank or alpha.
    """
    check_adapter_name(adapter_name)
    configs = getattr(model, "lora_configs", None)
    # The factors are overwritten by the file: drawing them from a private generator leaves torch's global
    # RNG where the caller had it (PEFT's load draws from it).
    scratch = torch.Generator().manual_seed(0)
    if not configs:
        inject_lora(model, cfg, scratch, adapter_name=adapter_name)
        undo, trains = (lambda: remove_lora(model)), True
    elif adapter_name in configs:  # names and shapes first (a file of another rank misfits A), then the config
        _check_same_adapter(model, adapter_name, cfg, tensors)
        undo, trains = None, None
    else:
        wrapped = {n for n, _ in lora_layers(model)}
        add_adapter(model, adapter_name, cfg, scratch)
        undo, trains = (lambda: _undo_add(model, adapter_name, wrapped)), False
    try:
        _copy_in(model, tensors, adapter_name)
    except ValueError:
        if undo is not None:
            undo()
        raise
    trains = trains if is_trainable is None else is_trainable
    if trains is not None:
        params = dict(model.named_parameters(remove_duplicate=False))
        names = adapter_parameter_names(model, adapter_name) if trains else adapter_keys(model, adapter_name).values()
        for name in names:
            params[name].requires_grad_(trains)
    if trains is False:
        model.eval()
    return model


def _check_same_adapter(model: nn.Module, adapter_name: str, cfg: LoraConfig, tensors: dict[str, torch.Tensor]) -> None:
    """ValueError unless a file (config `cfg`, `tensors`) can be copied into adapter `adapter_name` as it stands:
    its tensors fit, and it has the same r, lora_alpha, use_rslora (and use_dora) and target layers."""
    have = model.lora_configs[adapter_name]
    hint = (f"; loading into the existing adapter {adapter_name!r} copies weights only and keeps its config: "
            f"hotswap_adapter(model, directory, {adapter_name!r}) replaces it with this adapter, or load it under "
            "another adapter_name")
    _fit(model, tensors, adapter_name, hint)
    for field in ("r", "lora_alpha", "use_rslora", "use_dora"):
        new, old = getattr(cfg, field, False), getattr(have, field, False)
        if new != old:
            reject(field, new, f"adapter {adapter_name!r} has {field}={old!r}{hint}")
    held = [n for n, _ in adapter_layers(model, adapter_name)]
    targeted = matched_modules(model, cfg)
    if set(targeted) != set(held):
        reject("target_modules", cfg.target_modules, f"on this model it targets {len(targeted)} layers "
                                                     f"({targeted[:3]}...), adapter {adapter_name!r} holds "
                                                     f"{len(held)} ({held[:3]}...){hint}")


def _undo_add(model: nn.Module, adapter_name: str, wrapped: set[str]) -> None:
    """Take out an adapter `add_adapter` just added, and unwrap the layers it wrapped (not in `wrapped`)."""
    delete_adapter(model, adapter_name)
    for name, layer in lora_layers(model):
        if name not in wrapped and not layer.r:
            parent, _, child = name.rpartition(".")
            setattr(model.get_submodule(parent) if parent else model, child, layer.base_layer)


def value_bound(key: str, cfg: LoraConfig, dtype: torch.dtype) -> float:
    """The largest |value| adapter tensor `key` may hold in a model that computes in `dtype`.

    Each entry of ΔW = scaling · B @ A is a sum of r products, so |ΔW| <= |scaling| · r · max|B| · max|A|:
    factors within sqrt(max / (|scaling| · r)) keep ΔW finite in `dtype`, whatever the other factor holds.
    A bias or a module saved in full only has to fit `dtype` itself. Trained factors are far smaller
    (about 1e-2 to 1e1); an adapter over the bound can only make the model's outputs inf.
    """
    largest = torch.finfo(dtype).max
    return math.sqrt(largest / (abs(cfg.scaling) * cfg.r)) if key.endswith(FACTOR_KEYS) else largest


def compute_dtype(model: nn.Module) -> torch.dtype:
    """The dtype the base model computes in: its first floating parameter that is not a LoRA factor."""
    return next((p.dtype for n, p in model.named_parameters() if p.is_floating_point() and ".lora_" not in n),
                torch.float32)


def check_adapter_values(model: nn.Module, cfg: LoraConfig, tensors: dict[str, torch.Tensor]) -> None:
    """Refuse NaN/inf and values over `value_bound` with a ValueError naming the tensor, its largest
    |value| and the bound. `model` gives the dtype (with or without LoRA injected); nothing is changed."""
    dtype = compute_dtype(model)
    for key, t in tensors.items():
        if t.numel() == 0:
            continue
        bad = int((~torch.isfinite(t)).sum())
        if bad:
            raise ValueError(f"adapter tensor {key!r} holds {bad:,} NaN or inf values of {t.numel():,}: only "
                             "finite numbers are allowed")
        low, high = torch.aminmax(t.detach() if t.is_floating_point() else t.detach().double())
        largest, bound = max(-float(low), float(high)), value_bound(key, cfg, dtype)
        if largest > bound:
            why = (f"with r={cfg.r} and scaling={cfg.scaling:g}, ΔW = scaling · B @ A could overflow {dtype}"
                   if key.endswith(FACTOR_KEYS) else f"{dtype}, this model's dtype, cannot hold it")
            raise ValueError(f"adapter tensor {key!r} holds a value of size {largest:.3g}, over the bound "
                             f"{bound:.3g}: {why} (largest number {torch.finfo(dtype).max:.3g}); "
                             "a trained adapter's values are many orders of magnitude smaller")


def _fit(model: nn.Module, tensors: dict[str, torch.Tensor], adapter_name: str, hint: str = "") -> dict[str, str]:
    """ValueError (ending in `hint`) unless `tensors` are exactly adapter `adapter_name`'s, shape for shape;
    returns its {file key: our parameter name}."""
    keys = adapter_keys(model, adapter_name)
    missing = sorted(set(keys) - set(tensors))
    unexpected = sorted(set(tensors) - set(keys))
    if missing or unexpected:
        raise ValueError("adapter does not fit this model: "
                         f"missing {missing[:5]}{' …' if len(missing) > 5 else ''}; "
                         f"unexpected {unexpected[:5]}{' …' if len(unexpected) > 5 else ''}{hint}")
    params = dict(model.named_parameters(remove_duplicate=False))
    for key, name in keys.items():
        if tuple(tensors[key].shape) != tuple(params[name].shape):
            raise ValueError(f"adapter tensor {key!r} has shape {tuple(tensors[key].shape)}, "
                             f"but this model needs {tuple(params[name].shape)}{hint}")
    return keys


def _copy_in(model: nn.Module, tensors: dict[str, torch.Tensor], adapter_name: str) -> None:
    """Copy a file's tensors into adapter `adapter_name`, after checking every name, shape and value."""
    keys = _fit(model, tensors, adapter_name)
    check_adapter_values(model, adapter_config(model, adapter_name), tensors)
    params = dict(model.named_parameters(remove_duplicate=False))
    own = set(adapter_parameter_names(model, adapter_name))
    with torch.no_grad():
        for key, name in keys.items():
            p = params[name]
            if name in own:
                p.copy_(tensors[key])  # the adapter's own tensors: safe to write in place
            else:  # a base bias, which may be shared with other models: swap in a new tensor
                owner, _, leaf = name.rpartition(".")
                mod = model.get_submodule(owner)
                setattr(mod, leaf, nn.Parameter(tensors[key].to(p.device, p.dtype), requires_grad=p.requires_grad))


def adapter_zip(model: nn.Module, adapter_name: str | None = None) -> bytes:
    """Adapter `adapter_name` (None: the active one) as a .zip of its PEFT folder (adapter_config.json +
    adapter_model.safetensors at the top level), in memory."""
    adapter_name = adapter_name_of(model, adapter_name)
    with tempfile.TemporaryDirectory() as tmp:
        _write_adapter(model, adapter_name, Path(tmp))
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as zf:
            for name in (CONFIG_NAME, WEIGHTS_NAME):
                zf.write(Path(tmp) / name, arcname=name)
    return buffer.getvalue()


def peft_snippet(base_model: str, folder: str = "my-adapter", note: str = "") -> str:
    """Python that loads the exported adapter with HF PEFT, for the user to copy."""
    return (
        "from peft import PeftModel\n"
        "from transformers import AutoModelForCausalLM\n\n"
        + (f"# {note}\n" if note else "")
        + f'base = AutoModelForCausalLM.from_pretrained("{base_model}")\n'
        f'model = PeftModel.from_pretrained(base, "{folder}")   # the unzipped folder\n'
        "model = model.merge_and_unload()                       # optional: zero-overhead inference\n"
    )
