"""Where base models come from: the named offline models, shipped shape configs (configs/), and the
one folder local models may load from (paths.py)."""

from .paths import allowed_models_dir, cache_dir, local_model_dir
from .sources import (
    ModelSource,
    ModelUnavailableError,
    available_configs,
    build_on_meta,
    default_model_name,
    gpt2_tokenizer,
    load_config,
    load_model,
    source_info,
)

__all__ = [
    "ModelSource",
    "ModelUnavailableError",
    "allowed_models_dir",
    "available_configs",
    "build_on_meta",
    "cache_dir",
    "default_model_name",
    "gpt2_tokenizer",
    "load_config",
    "load_model",
    "local_model_dir",
    "source_info",
]
