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

An adapter uploaded to a shared server (`load_adapter_zip`) is checked completely before any model is
touched: size, zip members, JSON, every config field, every tensor's name, shape, dtype and values.
Every load refuses NaN/inf and values so large that ΔW would overflow the model's dtype
(`check_adapter_values`): such an adapter only makes the model's outputs inf.
"""

from __future__ import annotations

import io
import itertools
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

from .config import LoraConfig
from .inject import adapter_config, adapter_layers, adapter_name_of, inject_lora, remove_lora

PREFIX = "base_model.model."
CONFIG_NAME = "adapter_config.json"
WEIGHTS_NAME = "adapter_model.safetensors"
FACTOR_KEYS = (".lora_A.weight", ".lora_B.weight", ".lora_embedding_A", ".lora_embedding_B")


ADAPTER_CONTAINERS = ("lora_A", "lora_B", "lora_embedding_A", "lora_embedding_B", "modules_to_save")


def checkpoint_key(param: str, adapter_name: str) -> str:
    """The key PEFT saves our parameter `param` of adapter `adapter_name` under, without the prefix.

    PEFT's rule (tuners_utils `_remove_adapter_name_from_state_dict_key`): the name goes from the end, or
    from just before the last part, so `c_attn.lora_A.x.weight` -> `c_attn.lora_A.weight` and
    `wte.lora_embedding_A.x` -> `wte.lora_embedding_A`. A saved copy stands for its module (utils/other.py):
    `lm_head.modules_to_save.x.weight` -> `lm_head.weight`.
    """
    if f".modules_to_save.{adapter_name}." in param:
        return param.replace(f".modules_to_save.{adapter_name}.", ".", 1)
    if param.endswith(f".{adapter_name}"):
        return param.removesuffix(f".{adapter_name}")
    head, _, last = param.rpartition(".")
    return f"{re.sub(re.escape('.' + adapter_name) + '$', '', head)}.{last}"


def _of_adapter(param: str, adapter_name: str) -> bool:
    """Whether our parameter `param` belongs to adapter `adapter_name` (a factor or a saved copy)."""
    parts = param.split(".")
    return any(p in ADAPTER_CONTAINERS and after == adapter_name for p, after in itertools.pairwise(parts))


def adapter_keys(model: nn.Module, adapter_name: str | None = None) -> dict[str, str]:
    """{PEFT checkpoint key: our parameter name} for everything adapter `adapter_name`'s file holds
    (None: the active adapter)."""
    adapter_name = adapter_name_of(model, adapter_name)
    bias = model.lora_configs[adapter_name].bias
    keys: dict[str, str] = {}
    for name, _ in model.named_parameters(remove_duplicate=False):
        if _of_adapter(name, adapter_name):
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


def save_adapter(model: nn.Module, directory: str | os.PathLike) -> Path:
    """Write adapter_config.json + adapter_model.safetensors that `PeftModel.from_pretrained` reads."""
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    tensors = adapter_state_dict(model)
    config = json.dumps(adapter_config_dict(model), indent=2, sort_keys=True)
    _atomic_write(out / WEIGHTS_NAME, lambda p: save_file(tensors, p, metadata={"format": "pt"}))
    _atomic_write(out / CONFIG_NAME, lambda p: Path(p).write_text(config))
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


def load_adapter(model: nn.Module, directory: str | os.PathLike) -> nn.Module:
    """Load a PEFT-format adapter into `model` (injecting LoRA first if it has none).

    Every name and shape is checked before any tensor is copied, so a bad file changes nothing.
    """
    cfg = read_adapter_config(directory)
    weights = Path(directory) / WEIGHTS_NAME
    if not weights.is_file():
        raise ValueError(f"adapter={str(directory)!r} has no {WEIGHTS_NAME} (only safetensors are read)")
    try:
        tensors = load_file(str(weights))
    except Exception as e:  # safetensors raises its own error types for corrupt files
        raise ValueError(f"adapter weights {str(weights)!r} could not be read: {e}") from None
    return load_adapter_tensors(model, cfg, tensors)


def load_adapter_tensors(model: nn.Module, cfg: LoraConfig, tensors: dict[str, torch.Tensor]) -> nn.Module:
    """Load an adapter already in memory (PEFT keys).

    Inject `cfg` if the model has no LoRA yet, then copy the tensors in; on a misfit, undo the injection."""
    fresh = not hasattr(model, "lora_configs")
    if fresh:
        inject_lora(model, cfg)
    try:
        _copy_in(model, tensors)
    except ValueError:
        if fresh:
            remove_lora(model)
        raise
    return model


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


def _copy_in(model: nn.Module, tensors: dict[str, torch.Tensor]) -> None:
    keys = adapter_keys(model)
    missing = sorted(set(keys) - set(tensors))
    unexpected = sorted(set(tensors) - set(keys))
    if missing or unexpected:
        raise ValueError("adapter does not fit this model: "
                         f"missing {missing[:5]}{' …' if len(missing) > 5 else ''}; "
                         f"unexpected {unexpected[:5]}{' …' if len(unexpected) > 5 else ''}")
    params = dict(model.named_parameters(remove_duplicate=False))
    for key, name in keys.items():
        if tuple(tensors[key].shape) != tuple(params[name].shape):
            raise ValueError(f"adapter tensor {key!r} has shape {tuple(tensors[key].shape)}, "
                             f"but this model needs {tuple(params[name].shape)}")
    check_adapter_values(model, adapter_config(model), tensors)
    with torch.no_grad():
        for key, name in keys.items():
            p = params[name]
            if ".lora_" in name or ".modules_to_save." in name:
                p.copy_(tensors[key])  # our own tensors: safe to write in place
            else:  # a base bias, which may be shared with other models: swap in a new tensor
                owner, _, leaf = name.rpartition(".")
                mod = model.get_submodule(owner)
                setattr(mod, leaf, nn.Parameter(tensors[key].to(p.device, p.dtype), requires_grad=p.requires_grad))


def adapter_zip(model: nn.Module) -> bytes:
    """The PEFT adapter folder as a .zip (adapter_config.json + adapter_model.safetensors), in memory."""
    with tempfile.TemporaryDirectory() as tmp:
        folder = save_adapter(model, tmp)
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as zf:
            for name in (CONFIG_NAME, WEIGHTS_NAME):
                zf.write(folder / name, arcname=name)
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
