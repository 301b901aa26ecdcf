"""Libraries' own source code, read live with `inspect`: what PEFT's init does, and where a trainer applies PEFT.

A claim about what a library does is checked against the library installed here, not against memory. When
the library is absent (TRL, here), the claim cites its source location instead (quoted.TRL_PEFT_CALL), and
the page says which of the two it shows.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import re
from types import ModuleType


def installed(name: str) -> ModuleType | None:
    """The library `name` (peft, trl) imported if it is installed here, else None: imported only when a claim
    asks, so lora_core never depends on it."""
    return importlib.import_module(name) if importlib.util.find_spec(name) is not None else None


def peft_init_line() -> str | None:
    """The line of PEFT's LoraLayer.reset_lora_parameters that draws lora_A for the default init, or None
    when PEFT is not installed (or the line has moved beyond recognition)."""
    if importlib.util.find_spec("peft") is None:
        return None
    from peft.tuners.lora.layer import LoraLayer

    source = inspect.getsource(LoraLayer.reset_lora_parameters)
    found = re.search(r"^\s*(nn\.init\.kaiming_uniform_\(self\.lora_A\[.*?a=math\.sqrt\(5\)\))", source, re.M)
    return found.group(1) if found else None


def peft_call_sites(cls: type, call: str = "get_peft_model(") -> dict[str, list[str]]:
    """{method name: the lines of its own source that contain `call`} for `__init__` and `train` of `cls`.

    A method `cls` inherits is read where it is defined; the key then names that class too
    (e.g. "train (Trainer)"), so a learner sees where each step really lives.
    """
    sites: dict[str, list[str]] = {}
    for name in ("__init__", "train"):
        owner = next((k for k in cls.__mro__ if name in vars(k)), None)
        if owner is None:
            continue
        try:
            source = inspect.getsource(vars(owner)[name])
        except (OSError, TypeError):  # built in, or no source shipped
            continue
        label = name if owner is cls else f"{name} ({owner.__name__})"
        sites[label] = [line.strip() for line in source.splitlines() if call in line]
    return sites


def installed_sfttrainer() -> type | None:
    """TRL's SFTTrainer if TRL is installed here, else None (TRL is imported only for this check)."""
    trl = installed("trl")
    return getattr(trl, "SFTTrainer", None) if trl is not None else None
