"""Server settings: the limits a shared LoRA Lab enforces, read from one TOML file.

    settings = load_settings()              # $LORA_LAB_SETTINGS, else ./lora_lab.toml, else defaults
    settings.check("max_steps", 40)         # ValueError naming the field, the value and the limit
    settings.models_path                    # the one folder local models may be loaded from

The defaults below are documented in `lora_lab.toml` at the repository root. Each key's type is
its default's type: numbers must be >= 0, strings must be non-empty (teacher_token may be "").
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, fields
from pathlib import Path

from ..models.paths import resolve_models_dir
from ..settings_file import read_settings, settings_path


@dataclass(frozen=True)
class Settings:
    """Limits for a shared server, how many training jobs may run at once, and where models live."""

    max_upload_bytes: int = 2_000_000
    # An uploaded adapter .zip (and each file inside it). The limit in force is never below the largest adapter
    # the Fine-tuning page can make (serve.upload_limits.adapter_limit), so the app's own adapters load back.
    max_adapter_bytes: int = 50_000_000
    max_dataset_rows: int = 5000
    max_seq_len: int = 256
    max_steps: int = 2000
    max_r: int = 256
    max_batch_size: int = 64
    max_concurrent: int = 0          # 0: one per CPU core (or one per GPU)
    heartbeat_seconds: float = 30.0
    models_dir: str = "models"       # local model folders load only from inside it; relative: to the settings file
    board_dir: str = "room"          # the Room page's board and sweep; relative: to the settings file
    max_board_results: int = 1000    # shared results on the board at once
    teacher_token: str = ""          # "" = teacher controls off; $LORA_LAB_TEACHER_TOKEN wins over it
    # Not a key of the file: the file these settings came from (None: built-in defaults, anchored at the repo).
    settings_file: str | None = field(default=None, compare=False, repr=False)

    def check(self, name: str, value: int | float) -> None:
        """Raise a ValueError if `value` is over the limit `max_<name>` (or `name` itself)."""
        key = name if name.startswith("max_") else f"max_{name}"
        limit = getattr(self, key)
        if value > limit:
            what = key.removeprefix("max_")
            raise ValueError(f"{what}={value:,} is over this server's limit: at most {limit:,} "
                             f"({key} in the settings file)")

    @property
    def models_path(self) -> Path:
        """`models_dir` as an absolute, resolved path (symlinks followed)."""
        return resolve_models_dir(self.models_dir, self.settings_file)

    @property
    def board_path(self) -> Path:
        """`board_dir` as an absolute path (a relative one is relative to the settings file)."""
        return resolve_models_dir(self.board_dir, self.settings_file)

    @property
    def training_slots(self) -> int:
        """How many fine-tuning runs may step at once."""
        if self.max_concurrent > 0:
            return self.max_concurrent
        import torch

        return torch.cuda.device_count() or os.cpu_count() or 1


def load_settings(path: str | os.PathLike | None = None) -> Settings:
    """Settings from `path`, $LORA_LAB_SETTINGS or lora_lab.toml; unknown keys are an error."""
    path = settings_path(path)
    if not path.is_file():
        return Settings()
    flat = {k: v for section in read_settings(path).values() for k, v in section.items()}
    defaults = {f.name: f.default for f in fields(Settings) if f.name != "settings_file"}
    unknown = sorted(set(flat) - set(defaults))
    if unknown:
        raise ValueError(f"settings file {str(path)!r} has unknown keys {unknown}: allowed are {sorted(defaults)}")
    for key, value in flat.items():
        _check_type(key, value, defaults[key], path)
    if flat.get("max_board_results", 1) < 1:
        raise ValueError(f"max_board_results={flat['max_board_results']!r} in {str(path)!r} is not allowed: use a "
                         "whole number >= 1")
    return Settings(**flat, settings_file=str(path.resolve()))


def _check_type(key: str, value: object, default: object, path: Path) -> None:
    """A key takes its default's type: a non-empty string, an integer, or a number (all >= 0)."""
    where = f"in {str(path)!r} is not allowed"
    if isinstance(default, str) and not default:  # optional text, such as teacher_token
        if not isinstance(value, str):
            raise ValueError(f"{key}={value!r} {where}: use a string in quotes (\"\" for none)")
    elif isinstance(default, str):
        if not isinstance(value, str) or not value.strip():
            raise ValueError(f"{key}={value!r} {where}: use a non-empty string (a folder path, in quotes)")
    elif isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
        raise ValueError(f"{key}={value!r} {where}: use a number >= 0")
    elif isinstance(default, int) and not isinstance(value, int):
        raise ValueError(f"{key}={value!r} {where}: use a whole number >= 0")
