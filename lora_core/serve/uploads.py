"""An adapter uploaded to a shared server (.zip): checked member by member before it touches a model.

`read_adapter_upload` refuses, with a message naming what is wrong, anything but a zip holding exactly
adapter_config.json and adapter_model.safetensors within the size limit: path traversal, extra members,
zip bombs (sizes are checked as they inflate), bad JSON, any config field LoraConfig rejects, and any
tensor whose name, shape, dtype or values (NaN/inf, or so large that ΔW overflows) do not fit the model.
Weights are read as safetensors, never unpickled. Only then does `load_adapter_zip` load it.
"""

from __future__ import annotations

import dataclasses
import io
import json
import zipfile
import zlib

import torch
import torch.nn as nn
from safetensors.torch import load as load_safetensors_bytes

from ..config import LoraConfig
from ..inject import inject_lora
from ..models.sources import build_on_meta
from ..peft_io import CONFIG_NAME, WEIGHTS_NAME, adapter_keys, check_adapter_values, load_adapter_tensors

UPLOAD_MEMBERS = (CONFIG_NAME, WEIGHTS_NAME)
UPLOAD_DTYPES = (torch.float32, torch.float16, torch.bfloat16, torch.float64)


def read_adapter_upload(data: bytes, model: nn.Module, max_bytes: int, max_r: int | None = None,
                        source: str = "adapter upload") -> tuple[LoraConfig, dict[str, torch.Tensor]]:
    """Check an uploaded adapter .zip completely, against `model`'s architecture, without touching `model`.

    Returns (config, tensors) that fit `model`; any problem is a ValueError naming the file, field
    or tensor, its value and what is allowed. `max_bytes` bounds the upload and each unpacked file.
    `source` names the .zip in those messages ("the adapter trained in this session" is not an upload).
    """
    members = _zip_members(data, max_bytes, source)
    cfg = _upload_config(members[CONFIG_NAME], max_r)
    tensors = _upload_tensors(members[WEIGHTS_NAME], _expected_shapes(model, cfg))
    check_adapter_values(model, cfg, tensors)  # finite is not enough: ΔW must not overflow the model's dtype
    return cfg, tensors


def load_adapter_zip(model: nn.Module, data: bytes, max_bytes: int, max_r: int | None = None,
                     source: str = "adapter upload") -> nn.Module:
    """`read_adapter_upload`, then load it into `model` (injecting LoRA first if it has none)."""
    cfg, tensors = read_adapter_upload(data, model, max_bytes, max_r, source)
    return load_adapter_tensors(model, cfg, tensors)


def _zip_members(data: bytes, max_bytes: int, source: str = "adapter upload") -> dict[str, bytes]:
    """{name: content} of a zip that holds exactly UPLOAD_MEMBERS, each at most `max_bytes` unpacked."""
    if not isinstance(data, (bytes, bytearray)):
        raise ValueError(f"{source} must be bytes, not {type(data).__name__}")
    if not data:
        raise ValueError(f"{source} is empty (0 bytes): upload the .zip the Fine-tuning page downloads")
    if len(data) > max_bytes:
        raise ValueError(f"{source} is {len(data):,} bytes, over this server's limit: at most {max_bytes:,} "
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
        raise ValueError(f"{source} is not a readable zip archive ({e}): upload the .zip the "
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
    return {key: tuple(params[name].shape) for key, name in adapter_keys(meta).items()}


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


