"""Where LoRA Lab's settings file is, and reading it: one TOML file, `lora_lab.toml` by default.

The library reads one key of it, `[models] models_dir` (models/paths.py: where local models may load
from). The server's limits and queue, the other sections, are read and checked in serve/settings.py.
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_PATH = REPO_ROOT / "lora_lab.toml"


def settings_path(path: str | os.PathLike | None = None) -> Path:
    """`path`, else $LORA_LAB_SETTINGS, else lora_lab.toml at the repository root."""
    return Path(path or os.environ.get("LORA_LAB_SETTINGS") or DEFAULT_PATH)


def read_settings(path: Path) -> dict[str, dict]:
    """{section: {key: value}} from the TOML file at `path`; {} when there is no such file."""
    if not path.is_file():
        return {}
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"settings file {str(path)!r} is not valid TOML ({err})") from None
    return {name: section for name, section in data.items() if isinstance(section, dict)}
