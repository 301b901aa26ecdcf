"""Pick the compute device and the matching autocast context.

One place decides where tensors live, so the app, the notebooks and the tests
all agree: CUDA if present, then Apple's MPS, then the CPU. The env var
``LORA_LAB_DEVICE`` (or the ``prefer`` argument) overrides the automatic pick.
"""

from __future__ import annotations

import contextlib
import os
from contextlib import AbstractContextManager

import torch

DEVICE_ENV = "LORA_LAB_DEVICE"
ALLOWED = ("auto", "cpu", "cuda", "mps")


def _mps_available() -> bool:
    # torch builds without MPS support lack the attribute on some versions.
    mps = getattr(torch.backends, "mps", None)
    return bool(mps is not None and mps.is_available())


def available_devices() -> list[str]:
    """Device types usable on this machine, best first."""
    found = []
    if torch.cuda.is_available():
        found.append("cuda")
    if _mps_available():
        found.append("mps")
    found.append("cpu")
    return found


def pick_device(prefer: str | torch.device | None = None) -> torch.device:
    """Return the device to compute on.

    ``prefer`` may be "auto", "cpu", "cuda" (or "cuda:1"), "mps", or None.
    None falls back to ``$LORA_LAB_DEVICE``, then to "auto" (cuda > mps > cpu).
    An unknown or unavailable choice raises ValueError instead of silently
    running somewhere else: a CPU fallback would make a "GPU" run 50x slower.
    """
    if prefer is None:
        prefer = os.environ.get(DEVICE_ENV) or "auto"
    choice = str(prefer).strip().lower()
    available = available_devices()
    if choice == "auto":
        return torch.device(available[0])

    kind = choice.split(":", 1)[0]
    if kind not in ALLOWED:
        raise ValueError(
            f"device: unknown value {prefer!r}; allowed: {', '.join(ALLOWED)} (available here: {', '.join(available)})"
        )
    if kind not in available:
        raise ValueError(f"device: {prefer!r} is not available on this machine; available: {', '.join(available)}")
    try:
        device = torch.device(choice)
    except RuntimeError as err:  # e.g. "cuda:x"
        raise ValueError(f"device: cannot parse {prefer!r} ({err})") from None
    if device.type == "cuda" and (device.index or 0) >= torch.cuda.device_count():
        raise ValueError(
            f"device: {prefer!r} does not exist; this machine has {torch.cuda.device_count()} CUDA device(s)"
        )
    return device


def autocast(device: torch.device | str) -> AbstractContextManager:
    """bf16 autocast on CUDA, a no-op elsewhere.

    CPU bf16 autocast exists but is slower than fp32 on most laptops, and MPS
    autocast is still patchy, so we only switch it on where it clearly pays.
    """
    device = torch.device(device)
    if device.type == "cuda":
        return torch.autocast(device_type="cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def describe_device(device: torch.device | str) -> str:
    """Human-readable one-liner, e.g. "CPU (2 threads)" or "CUDA: NVIDIA H100 (80 GB)"."""
    device = torch.device(device)
    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        props = torch.cuda.get_device_properties(index)
        return f"CUDA: {props.name} ({props.total_memory / 2**30:.0f} GB)"
    if device.type == "mps":
        return "MPS: Apple GPU (unified memory)"
    if device.type == "cpu":
        n = torch.get_num_threads()
        return f"CPU ({n} thread{'s' if n != 1 else ''})"
    return str(device)
