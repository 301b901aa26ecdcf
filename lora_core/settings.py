"""Server settings: the limits a shared LoRA Lab enforces, read from one TOML file.

    settings = load_settings()              # $LORA_LAB_SETTINGS, else ./lora_lab.toml, else defaults
    settings.check("max_steps", 40)         # ValueError naming the field, the value and the limit

The defaults below are documented in `lora_lab.toml` at the repository root.
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, fields
from pathlib import Path

DEFAULT_PATH = Path(__file__).resolve().parents[1] / "lora_lab.toml"


@dataclass(frozen=True)
class Settings:
    """Limits for a shared server, and how many training jobs may run at once."""

    max_upload_bytes: int = 2_000_000
    max_dataset_rows: int = 5000
    max_seq_len: int = 256
    max_steps: int = 2000
    max_r: int = 256
    max_batch_size: int = 64
    max_concurrent: int = 0          # 0: one per CPU core (or one per GPU)
    heartbeat_seconds: float = 30.0

    def check(self, name: str, value: int | float) -> None:
        """Raise a ValueError if `value` is over the limit `max_<name>` (or `name` itself)."""
        key = name if name.startswith("max_") else f"max_{name}"
        limit = getattr(self, key)
        if value > limit:
            field = key.removeprefix("max_")
            raise ValueError(f"{field}={value:,} is over this server's limit: at most {limit:,} "
                             f"({key} in the settings file)")

    @property
    def training_slots(self) -> int:
        """How many fine-tuning runs may step at once."""
        if self.max_concurrent > 0:
            return self.max_concurrent
        import torch

        return torch.cuda.device_count() or os.cpu_count() or 1


def load_settings(path: str | os.PathLike | None = None) -> Settings:
    """Settings from `path`, $LORA_LAB_SETTINGS or lora_lab.toml; unknown keys are an error."""
    path = Path(path or os.environ.get("LORA_LAB_SETTINGS") or DEFAULT_PATH)
    if not path.is_file():
        return Settings()
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"settings file {str(path)!r} is not valid TOML ({err})") from None
    flat = {k: v for section in data.values() if isinstance(section, dict) for k, v in section.items()}
    known = {f.name for f in fields(Settings)}
    unknown = sorted(set(flat) - known)
    if unknown:
        raise ValueError(f"settings file {str(path)!r} has unknown keys {unknown}: allowed are {sorted(known)}")
    for key, value in flat.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
            raise ValueError(f"{key}={value!r} in {str(path)!r} is not allowed: use a number >= 0")
    return Settings(**flat)
