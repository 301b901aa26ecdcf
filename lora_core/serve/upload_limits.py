"""The size limit an upload widget shows, made the same number as the limit the server enforces.

Streamlit's file uploader prints "Limit N MB per file" for a whole number N (its `max_upload_size`) and
refuses larger files in the browser; without one it says 200 MB. LoRA Lab enforces a byte count from
the settings file (`max_upload_bytes` for a dataset, `max_adapter_bytes` for an adapter), so the widget
gets that count in megabytes of 1,000,000 bytes: the shipped 2,000,000 and 50,000,000 bytes show as
"2 MB" and "50 MB", the limits themselves. Streamlit's own transfer cap for N is N MiB (N·2²⁰ bytes),
never below N·10⁶, so the widget never turns away a file the server would take; lora_core checks the
exact bytes and names the limit. A limit that is not a whole number of MB (a small test limit, say) is
rounded up for the widget, and `label` says the exact figure.
"""

from __future__ import annotations

from dataclasses import dataclass

MB = 1_000_000


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


def upload_limit(settings: object, key: str) -> UploadLimit:
    """The limit named `key` ("max_upload_bytes" or "max_adapter_bytes") of a `serve.Settings`."""
    if key not in ("max_upload_bytes", "max_adapter_bytes"):
        raise ValueError(f"key={key!r} is not allowed: use 'max_upload_bytes' or 'max_adapter_bytes'")
    return UploadLimit(key, getattr(settings, key))
