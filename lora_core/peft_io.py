"""Adapters in HF PEFT's on-disk format, both directions.

A PEFT LoRA adapter is a folder with two files:
    adapter_config.json         the LoraConfig (peft_type "LORA", r, lora_alpha, target_modules, ...)
    adapter_model.safetensors   the trained tensors, keyed like
        base_model.model.transformer.h.0.attn.c_attn.lora_A.weight        (r, in)
        base_model.model.transformer.h.0.attn.c_attn.lora_B.weight        (out, r)
        base_model.model.transformer.wte.lora_embedding_A                 (r, num_embeddings)
        base_model.model.transformer.h.0.attn.c_attn.base_layer.bias      (bias="all"/"lora_only")
        base_model.model.lm_head.weight                                   (modules_to_save)
Our module tree mirrors PEFT's minus the adapter name, so the mapping is a prefix plus two renames.
Files are written atomically (temp file, then rename); only safetensors are read, never pickles.

An adapter uploaded to a shared server (`load_adapter_zip`) is checked completely before any model is
touched: size, zip members, JSON, every config field, every tensor's name, shape, dtype and values.
"""

from __future__ import annotations

import dataclasses
import io
import json
import os
import tempfile
import zipfile
import zlib
from pathlib import Path

import torch
import torch.nn as nn
from safetensors.torch import load as load_safetensors_bytes
from safetensors.torch import load_file, save_file
from transformers.pytorch_utils import Conv1D

from .config import LoraConfig
from .inject import ModulesToSaveWrapper, inject_lora, lora_layers, remove_lora
from .layers import LoraEmbedding
from .models import build_on_meta

PREFIX = "base_model.model."
CONFIG_NAME = "adapter_config.json"
WEIGHTS_NAME = "adapter_model.safetensors"


def _adapter_keys(model: nn.Module) -> dict[str, str]:
    """{PEFT checkpoint key: our parameter name} for everything an adapter file holds."""
    cfg: LoraConfig = model.lora_config
    keys: dict[str, str] = {}
    for name, layer in lora_layers(model):
        a, b = ("lora_embedding_A", "lora_embedding_B") if isinstance(layer, LoraEmbedding) \
            else ("lora_A.weight", "lora_B.weight")
        keys[f"{PREFIX}{name}.{a}"] = f"{name}.lora_A.weight"
        keys[f"{PREFIX}{name}.{b}"] = f"{name}.lora_B.weight"
        if cfg.bias == "lora_only" and getattr(layer.base_layer, "bias", None) is not None:
            keys[f"{PREFIX}{name}.base_layer.bias"] = f"{name}.base_layer.bias"
    if cfg.bias == "all":
        for name, _ in model.named_parameters():
            if name.endswith(".bias"):
                keys[PREFIX + name] = name
    for name, module in model.named_modules():
        if isinstance(module, ModulesToSaveWrapper):
            for p, _ in module.modules_to_save.named_parameters():
                keys[f"{PREFIX}{name}.{p}"] = f"{name}.modules_to_save.{p}"
    return keys


def adapter_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """Copies of the adapter's tensors under PEFT's checkpoint keys (on CPU, contiguous).

    Copies, not views: a snapshot taken mid-training must not change as training goes on, and
    safetensors refuses tensors that share memory (a tied pair would).
    """
    if not hasattr(model, "lora_config"):
        raise ValueError("model has no LoRA adapter: call inject_lora(model, cfg) first")
    params = dict(model.named_parameters(remove_duplicate=False))
    return {k: params[n].detach().to("cpu", copy=True, memory_format=torch.contiguous_format)
            for k, n in _adapter_keys(model).items()}


def adapter_config_dict(model: nn.Module) -> dict:
    """adapter_config.json's content, with targets resolved the way PEFT stores them."""
    cfg: LoraConfig = model.lora_config
    d = cfg.to_peft_dict()
    if cfg.target_modules is None:  # PEFT writes the architecture default it used
        d["target_modules"] = sorted({n.rsplit(".", 1)[-1] for n, _ in lora_layers(model)})
    d["fan_in_fan_out"] = any(isinstance(m.base_layer, Conv1D) for _, m in lora_layers(model))
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
    return _load_into(model, cfg, tensors)


def _load_into(model: nn.Module, cfg: LoraConfig, tensors: dict[str, torch.Tensor]) -> nn.Module:
    """Inject `cfg` if the model has no LoRA yet, then copy the tensors in; on a misfit, undo the injection."""
    fresh = not hasattr(model, "lora_config")
    if fresh:
        inject_lora(model, cfg)
    try:
        _copy_in(model, tensors)
    except ValueError:
        if fresh:
            remove_lora(model)
        raise
    return model


def _copy_in(model: nn.Module, tensors: dict[str, torch.Tensor]) -> None:
    keys = _adapter_keys(model)
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
    with torch.no_grad():
        for key, name in keys.items():
            p = params[name]
            if ".lora_A." in name or ".lora_B." in name or ".modules_to_save." in name:
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


# ---------------------------------------------------------------- an uploaded adapter (.zip) ---

UPLOAD_MEMBERS = (CONFIG_NAME, WEIGHTS_NAME)
UPLOAD_DTYPES = (torch.float32, torch.float16, torch.bfloat16, torch.float64)


def read_adapter_upload(data: bytes, model: nn.Module, max_bytes: int,
                        max_r: int | None = None) -> tuple[LoraConfig, dict[str, torch.Tensor]]:
    """Check an uploaded adapter .zip completely, against `model`'s architecture, without touching `model`.

    Returns (config, tensors) that fit `model`; any problem is a ValueError naming the file, field
    or tensor, its value and what is allowed. `max_bytes` bounds the upload and each unpacked file.
    """
    members = _zip_members(data, max_bytes)
    cfg = _upload_config(members[CONFIG_NAME], max_r)
    tensors = _upload_tensors(members[WEIGHTS_NAME], _expected_shapes(model, cfg))
    return cfg, tensors


def load_adapter_zip(model: nn.Module, data: bytes, max_bytes: int, max_r: int | None = None) -> nn.Module:
    """`read_adapter_upload`, then load it into `model` (injecting LoRA first if it has none)."""
    cfg, tensors = read_adapter_upload(data, model, max_bytes, max_r)
    return _load_into(model, cfg, tensors)


def _zip_members(data: bytes, max_bytes: int) -> dict[str, bytes]:
    """{name: content} of a zip that holds exactly UPLOAD_MEMBERS, each at most `max_bytes` unpacked."""
    if not isinstance(data, (bytes, bytearray)):
        raise ValueError(f"adapter upload must be bytes, not {type(data).__name__}")
    if not data:
        raise ValueError("adapter upload is empty (0 bytes): upload the .zip the Fine-tuning page downloads")
    if len(data) > max_bytes:
        raise ValueError(f"adapter upload is {len(data):,} bytes, over this server's limit: at most {max_bytes:,} "
                         "(max_adapter_bytes in the settings file)")
    allowed = f"the zip must hold exactly {CONFIG_NAME} and {WEIGHTS_NAME}, at the top level, and nothing else"
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as zf:
            infos = zf.infolist()
            names = [info.filename for info in infos]
            for name in names:  # also refuses "../x", "/x", "dir/x" and a second copy hidden in a folder
                if name not in UPLOAD_MEMBERS:
                    raise ValueError(f"adapter zip member {name!r} is not allowed: {allowed}")
            for name in UPLOAD_MEMBERS:
                if names.count(name) != 1:
                    raise ValueError(f"adapter zip holds {name} {names.count(name)} times: {allowed}")
            members = {}
            for info in infos:
                if info.flag_bits & 0x1:
                    raise ValueError(f"adapter zip member {info.filename!r} is encrypted: upload a plain zip")
                with zf.open(info) as f:  # read at most max_bytes + 1: the header's size may lie (a zip bomb)
                    content = f.read(max_bytes + 1)
                if len(content) > max_bytes:
                    raise ValueError(f"adapter zip member {info.filename!r} unpacks to more than {max_bytes:,} "
                                     "bytes, over this server's limit (max_adapter_bytes in the settings file)")
                members[info.filename] = content
    except (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError, RuntimeError, OSError) as e:
        raise ValueError(f"adapter upload is not a readable zip archive ({e}): upload the .zip the "
                         "Fine-tuning page downloads") from None
    return members


def _upload_config(raw: bytes, max_r: int | None) -> LoraConfig:
    """adapter_config.json: UTF-8 JSON object, a plain LoRA, explicit targets, r within the server's limit."""
    try:
        d = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as e:
        raise ValueError(f"{CONFIG_NAME} is not UTF-8 text ({e})") from None
    except json.JSONDecodeError as e:
        raise ValueError(f"{CONFIG_NAME} is not valid JSON ({e})") from None
    if not isinstance(d, dict):
        raise ValueError(f"{CONFIG_NAME} must hold a JSON object, not {type(d).__name__}")
    if d.get("peft_type") != "LORA":
        raise ValueError(f"peft_type={d.get('peft_type')!r} in {CONFIG_NAME} is not allowed: only 'LORA' adapters")
    if d.get("target_modules") is None:
        raise ValueError(f"target_modules=None in {CONFIG_NAME} is not allowed: an adapter file names its targets")
    cfg = LoraConfig.from_peft_dict(d)
    if max_r is not None and cfg.r > max_r:
        raise ValueError(f"r={cfg.r:,} is over this server's limit: at most {max_r:,} (max_r in the settings file)")
    return cfg


def _expected_shapes(model: nn.Module, cfg: LoraConfig) -> dict[str, tuple[int, ...]]:
    """{PEFT key: shape} that `cfg` gives on `model`'s architecture, built on the meta device (no weights)."""
    config = getattr(model, "config", None)
    if config is None:
        raise ValueError(f"model={type(model).__name__} has no .config: an upload is checked against a "
                         "transformers model")
    meta = build_on_meta(config)
    # Shapes do not depend on the init, and PiSSA's SVD cannot run on meta tensors.
    inject_lora(meta, dataclasses.replace(cfg, init_lora_weights=False))
    params = dict(meta.named_parameters(remove_duplicate=False))
    return {key: tuple(params[name].shape) for key, name in _adapter_keys(meta).items()}


def _upload_tensors(raw: bytes, expected: dict[str, tuple[int, ...]]) -> dict[str, torch.Tensor]:
    """adapter_model.safetensors (parsed from bytes, never unpickled): exactly the expected tensors, finite floats."""
    try:
        tensors = load_safetensors_bytes(raw)
    except Exception as e:  # safetensors raises its own error types for a corrupt file
        raise ValueError(f"{WEIGHTS_NAME} is not a readable safetensors file ({e})") from None
    unknown = sorted(set(tensors) - set(expected))
    if unknown:
        more = f" (and {len(unknown) - 1} more)" if len(unknown) > 1 else ""
        raise ValueError(f"adapter tensor {unknown[0]!r}{more} is not allowed: it maps to no LoRA layer of this "
                         f"model under this adapter's config; expected names like {next(iter(expected))!r}")
    missing = sorted(set(expected) - set(tensors))
    if missing:
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise ValueError(f"adapter tensor {missing[0]!r}{more} is missing: this adapter's config on this model "
                         f"needs all {len(expected)} tensors")
    for key, t in tensors.items():
        if t.dtype not in UPLOAD_DTYPES:
            raise ValueError(f"adapter tensor {key!r} has dtype {t.dtype}, which is not allowed: use one of "
                             f"{', '.join(str(d) for d in UPLOAD_DTYPES)}")
        if tuple(t.shape) != expected[key]:
            role = " (A is (r, in))" if "lora_A" in key or "embedding_A" in key else \
                " (B is (out, r))" if "lora_B" in key or "embedding_B" in key else ""
            raise ValueError(f"adapter tensor {key!r} has shape {tuple(t.shape)}, but this model needs "
                             f"{expected[key]}{role}")
        bad = int((~torch.isfinite(t)).sum())
        if bad:
            raise ValueError(f"adapter tensor {key!r} holds {bad:,} NaN or inf values of {t.numel():,}: only "
                             "finite numbers are allowed")
    return tensors


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
