"""The first cell of every lesson, written once: keep it offline, say what it runs on, read LORA_FAST.

A lesson's numbers depend on the library versions and the device, so each lesson prints them before
anything else. A lesson never downloads: HF_HUB_OFFLINE=1 unless the learner set it. LORA_FAST=1 (what
CI sets) lets a lesson shrink its step counts, never what it shows or asserts. Plotly figures show as
the interactive figure plus a PNG of it (figure_images.py), so a committed lesson's pictures show on
GitHub too, where no JavaScript runs.

    from lora_core.teach.lesson import setup
    FAST = setup("this lesson runs on the CPU")
"""

from __future__ import annotations

import os
import warnings
from importlib.metadata import PackageNotFoundError, version

import huggingface_hub.constants
import peft
import torch
import transformers

from ..device import describe_device, pick_device
from .figure_images import use_static_images

# PEFT 0.21's get_peft_model reads transformers 5's deprecated `is_gradient_checkpointing` alias: a warning
# between two libraries that a learner can neither act on nor learn from, printed into committed outputs.
PEFT_TRANSFORMERS_DEPRECATION = "`is_gradient_checkpointing` is deprecated"

DISTRIBUTION = "lora-lab"  # pyproject.toml's [project] name; `pip install -e .` installs lora_core under it


def lora_core_version() -> str:
    """The installed lora-lab version, from the package metadata (pyproject.toml is its only source)."""
    try:
        return version(DISTRIBUTION)
    except PackageNotFoundError:
        return "not installed (run `pip install -e .` at the repository root)"


def setup(note: str = "") -> bool:
    """Keep the Hub offline, print the versions and the device, and return whether LORA_FAST=1.

    `note` says where this lesson computes, e.g. "this lesson runs on the CPU"; it is printed after
    the device. HF_HUB_OFFLINE is set to 1 only when the learner has not set it (HF_HUB_OFFLINE=0
    lets a lesson download). Plotly's default renderer becomes interactive + PNG where kaleido and a
    Chromium are installed, interactive only where they are not (the line printed says which).
    """
    if "HF_HUB_OFFLINE" not in os.environ:
        os.environ["HF_HUB_OFFLINE"] = "1"
        # huggingface_hub reads the variable once, when it is imported, and importing lora_core already
        # imported it (through transformers): set its public constant too, so the Hub really is closed.
        huggingface_hub.constants.HF_HUB_OFFLINE = True
    warnings.filterwarnings("ignore", message=PEFT_TRANSFORMERS_DEPRECATION, category=FutureWarning)
    fast = os.environ.get("LORA_FAST") == "1"
    print(f"torch {torch.__version__} | transformers {transformers.__version__} | peft {peft.__version__} "
          f"| lora_core {lora_core_version()}")
    print(f"device: {describe_device(pick_device())}" + (f" ({note})" if note else ""))
    print(f"HF_HUB_OFFLINE={os.environ['HF_HUB_OFFLINE']} (1: nothing is downloaded) | "
          + ("LORA_FAST=1: fewer steps, the same pictures and checks" if fast else "LORA_FAST unset: full runs"))
    print(use_static_images())
    return fast
