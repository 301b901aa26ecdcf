"""Where LoRA Lab may read model files from, and what a local model folder must hold to be loaded.

* ``cache_dir()``: LoRA Lab's own cache (the SmolLM2 safetensors conversion).
* ``hf_hub_cache()`` / ``distilgpt2_local()``: a distilgpt2 already on disk, found without network.
* ``local_model_dir(name)``: the allow-list for any other model. A shared server must not load
  whatever path a user types, so a local model is accepted only if

  - its folder, after ``Path.resolve()`` (symlinks and ``..`` followed), lies inside the allowed
    models folder (``models_dir`` in the ``[models]`` section of ``lora_lab.toml``), and so does
    every file in it;
  - it has a config.json whose ``model_type`` transformers implements itself: code shipped with a
    model (``auto_map``, which transformers runs only with ``trust_remote_code``) never runs;
  - its weights are ``*.safetensors``. Pickles (``pytorch_model.bin``, ``*.pt``, ``*.pkl``) are
    refused: unpickling a file can run arbitrary code.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

from transformers import CONFIG_MAPPING

from ..settings_file import REPO_ROOT, read_settings, settings_path

# Current repo id first, the pre-2024 alias second (old caches use it).
DISTILGPT2_REPOS = ("distilbert/distilgpt2", "distilgpt2")
DEFAULT_MODELS_DIR = "models"  # relative to the settings file
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt")


def cache_dir() -> Path:
    """LoRA Lab's own cache: ``$LORA_LAB_CACHE`` or ``~/.cache/lora_lab``."""
    return Path(os.environ.get("LORA_LAB_CACHE") or "~/.cache/lora_lab").expanduser()


def hf_hub_cache() -> Path:
    """The Hugging Face hub cache, resolved from the environment on every call.

    huggingface_hub reads HF_HOME once at import; reading it here honours a change at runtime.
    """
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME") or "~/.cache"
    home = os.environ.get("HF_HOME") or Path(xdg) / "huggingface"
    return Path(home).expanduser() / "hub"


def distilgpt2_local() -> Path | None:
    """A local distilgpt2 with safetensors weights: $LORA_LAB_DISTILGPT2 or an HF-cache snapshot.

    Both are set up by whoever runs the server (an environment variable, a cache), not typed by a
    user, so they are not held to the models folder; a copy with only pickle weights is skipped.
    """
    env = os.environ.get("LORA_LAB_DISTILGPT2")
    if env and (Path(env).expanduser() / "config.json").is_file() and any(Path(env).expanduser().glob("*.safetensors")):
        return Path(env).expanduser()
    from huggingface_hub import try_to_load_from_cache  # pure file lookup, no network

    for repo in DISTILGPT2_REPOS:
        config = try_to_load_from_cache(repo, "config.json", cache_dir=hf_hub_cache())
        if isinstance(config, str) and (Path(config).parent / "model.safetensors").is_file():
            return Path(config).parent
    return None


def allowed_models_dir() -> Path:
    """The one folder local models may be loaded from: `[models] models_dir` of the settings file, resolved.

    The server's own settings (serve/settings.py) check the whole file; this reads only this key.
    """
    path = settings_path()
    value = read_settings(path).get("models", {}).get("models_dir", DEFAULT_MODELS_DIR)
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"models_dir={value!r} in {str(path)!r} is not allowed: "
                         "use a non-empty string (a folder path)")
    return resolve_models_dir(value, str(path.resolve()) if path.is_file() else None)


def resolve_models_dir(models_dir: str, settings_file: str | None) -> Path:
    """`models_dir` as an absolute, resolved path; a relative one is relative to the settings file."""
    path = Path(models_dir).expanduser()
    if not path.is_absolute():
        path = (Path(settings_file).parent if settings_file else REPO_ROOT) / path
    return path.resolve()


def local_model_dir(name: str | os.PathLike, named: Sequence[str] = (), root: str | os.PathLike | None = None) -> Path:
    """The checked, resolved folder for a local model; a ValueError says what is wrong and where models go.

    `name` is a folder inside the models folder ("my-model") or a path to one ("models/my-model");
    `named` lists the built-in model names, for the error message; `root` overrides the settings.
    """
    root = Path(root).resolve() if root is not None else allowed_models_dir()
    where = (f"put the model folder inside {root} (the models_dir setting in the [models] section of "
             "lora_lab.toml)")
    raw = Path(name).expanduser()
    candidates = [raw] if raw.is_absolute() else [root / raw, Path.cwd() / raw]
    path = next((c for c in candidates if c.is_dir()), candidates[0]).resolve()
    if path == root or not path.is_relative_to(root):
        raise ValueError(f"model={str(name)!r} is not allowed: it resolves to {path}, outside the models folder. "
                         f"Local models load only from inside {root}: {where}")
    if not path.is_dir():
        known = f"{', '.join(named)}, or " if named else ""
        raise ValueError(f"model={str(name)!r} is not allowed: no such model; use {known}a model folder inside "
                         f"{root} ({where})")
    for entry in path.iterdir():
        if not entry.resolve().is_relative_to(root):
            raise ValueError(f"model={str(name)!r} is not allowed: {entry.name} links to {entry.resolve()}, outside "
                             f"{root}; copy the file itself into the model folder")
    _check_config(path)
    _check_weights(path, root)
    return path


def _check_config(path: Path) -> None:
    """config.json exists, parses, and names an architecture built into transformers."""
    config = path / "config.json"
    if not config.is_file():
        raise ValueError(f"model folder {str(path)!r} has no config.json: not a Hugging Face model folder")
    try:
        fields = json.loads(config.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"model config {str(config)!r} is not valid JSON ({err})") from None
    if not isinstance(fields, dict):
        raise ValueError(f"model config {str(config)!r} must hold a JSON object, not {type(fields).__name__}")
    model_type = fields.get("model_type")
    if model_type not in CONFIG_MAPPING:
        raise ValueError(f"model_type={model_type!r} in {str(config)!r} is not allowed: only architectures built "
                         "into transformers load here; code shipped with a model (auto_map) is never run")


def _check_weights(path: Path, root: Path) -> None:
    """At least one *.safetensors file; a folder holding only pickles is refused by name."""
    if any(path.glob("*.safetensors")):
        return
    pickles = sorted(p.name for p in path.iterdir() if p.suffix.lower() in PICKLE_SUFFIXES)
    if pickles:
        raise ValueError(f"model folder {str(path)!r} holds only pickle weights ({', '.join(pickles[:3])}): no pickle "
                         "loading, because unpickling a file can run any code. Convert it once where you trust it "
                         "(AutoModelForCausalLM.from_pretrained(folder).save_pretrained(new_folder) writes "
                         f"model.safetensors) and put the new folder inside {root}")
    raise ValueError(f"model folder {str(path)!r} has no *.safetensors weights: save the model with "
                     f"save_pretrained (safetensors) into a folder inside {root}")
