"""The size limit an upload widget shows, made the same number as the limit the server enforces.

Streamlit's file uploader prints "Limit N MB per file" for a whole number N (its `max_upload_size`) and
refuses larger files in the browser; without one it says 200 MB. LoRA Lab enforces a byte count from
the settings file (`max_upload_bytes` for a dataset, `max_adapter_bytes` for an adapter), so the widget
gets that count in megabytes of 1,000,000 bytes: the shipped 2,000,000 bytes show as "2 MB", the limit
itself. Streamlit's own transfer cap for N is N MiB (N·2²⁰ bytes), never below N·10⁶, so the widget never
turns away a file the server would take; lora_core checks the exact bytes and names the limit. A limit that
is not a whole number of MB (a small test limit, say) is rounded up for the widget, and `label` says the
exact figure.

Every adapter the Fine-tuning page can make must load back on the Load page, so the adapter limit in force
is never below `largest_adapter_bytes()`: the largest r of the form's slider (run_setup.R_CHOICES) on every
module the form lists, on the largest model it can train, counted on the meta device (no weights), as fp32
bytes plus the safetensors and zip overhead, rounded up to whole MB. On SmolLM2-135M that is 104 MB; the
app's r=64 all-linear adapter there downloads as 71,040,126 bytes and unpacks to about 78 MB.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

from ..config import ALL_LINEAR, LoraConfig
from ..counting import count_lora_parameters
from ..inject import candidate_modules
from ..models.sources import LOADABLE, build_on_meta
from ..training.run_setup import R_CHOICES

MB = 1_000_000
FACTOR_BYTES = 4          # LoRA factors train, and are saved, in fp32 whatever the base's precision
HEADER_BYTES = 256        # a bound on one tensor's entry in the safetensors JSON header (name, dtype, shape, offsets)
FILE_OVERHEAD = 64 * 1024  # adapter_config.json, the zip's headers and central directory, with room to spare
DEFLATE_SLACK = 1e-3      # deflate can grow incompressible data by 5 bytes per 64 KiB block (~0.008%)
SAME_SHAPES_AS = {"distilgpt2-random": "distilgpt2"}  # random weights, in a shipped config's shapes


@dataclass(frozen=True)
class UploadLimit:
    """One upload's limit: the settings key it comes from and the bytes the server accepts."""

    key: str         # the settings key, e.g. "max_upload_bytes"
    max_bytes: int   # what lora_core enforces

    def __post_init__(self) -> None:
        if isinstance(self.max_bytes, bool) or not isinstance(self.max_bytes, int) or self.max_bytes < 1:
            raise ValueError(f"{self.key}={self.max_bytes!r} is not allowed: an upload limit is a whole number "
                             "of bytes, at least 1")

    @property
    def widget_mb(self) -> int:
        """Streamlit's `max_upload_size`: the limit in whole MB, rounded up (the widget's minimum is 1)."""
        return max(1, -(-self.max_bytes // MB))

    @property
    def exact(self) -> bool:
        """Whether the widget's "Limit N MB" is the server's limit exactly (N·10⁶ bytes)."""
        return self.widget_mb * MB == self.max_bytes

    @property
    def label(self) -> str:
        """The limit in words: '2 MB' when whole, else the bytes ('4,096 bytes')."""
        return f"{self.widget_mb} MB" if self.exact else f"{self.max_bytes:,} bytes"


@functools.cache
def adapter_bytes_bound(model_name: str, r: int) -> int:
    """An upper bound on the .zip, and on each file in it, of the largest rank-`r` adapter on `model_name`.

    The largest adapter targets every module the Fine-tuning form lists (its candidates: the output layer
    and embeddings too), or 'all-linear' if that were larger. Counted on the meta device: no weights.
    """
    meta = build_on_meta(SAME_SHAPES_AS.get(model_name, model_name))
    ledgers = [count_lora_parameters(meta, LoraConfig(r=r, target_modules=targets))
               for targets in (ALL_LINEAR, candidate_modules(meta))]
    largest = max(ledgers, key=lambda ledger: ledger.trainable)
    tensors = 2 * len(largest.wrapped)  # A and B of each wrapped module
    safetensors = FACTOR_BYTES * largest.trainable + HEADER_BYTES * tensors
    return int(safetensors * (1 + DEFLATE_SLACK)) + FILE_OVERHEAD


@functools.cache
def largest_adapter_bytes() -> int:
    """The largest adapter the Fine-tuning page can make, on any model it trains, rounded up to whole MB."""
    largest = max(adapter_bytes_bound(name, max(R_CHOICES)) for name in LOADABLE)
    return -(-largest // MB) * MB


def adapter_limit(settings: object) -> int:
    """The adapter limit in force: the settings' max_adapter_bytes, raised to `largest_adapter_bytes()` if lower."""
    return max(settings.max_adapter_bytes, largest_adapter_bytes())


def upload_limit(settings: object, key: str) -> UploadLimit:
    """The limit named `key` ("max_upload_bytes" or "max_adapter_bytes") of a `serve.Settings`, as enforced.

    The adapter limit is `adapter_limit(settings)`: never below the largest adapter the app can make.
    """
    if key not in ("max_upload_bytes", "max_adapter_bytes"):
        raise ValueError(f"key={key!r} is not allowed: use 'max_upload_bytes' or 'max_adapter_bytes'")
    return UploadLimit(key, adapter_limit(settings) if key == "max_adapter_bytes" else getattr(settings, key))
