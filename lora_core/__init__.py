"""lora_core: a small LoRA library written from scratch, PEFT-exact, for LoRA Lab.

    import lora_core as lc
    cfg = lc.LoraConfig(r=8, lora_alpha=16, target_modules=["c_attn"])
    names = lc.inject_lora(model, cfg)
    lc.trainable_parameters(model)            # (trainable, total), as PEFT counts them
    print(lc.count_lora_parameters("distilgpt2", cfg))   # ledger; no weights needed

References: LoRA (arXiv 2106.09685), QLoRA (arXiv 2305.14314), rsLoRA (arXiv 2312.03732).
This package never imports streamlit.
"""

from . import anatomy  # teaching measurements: lc.anatomy.trace_dropout, lc.anatomy.init_gallery, ...
from .config import LoraConfig
from .counting import Ledger, LedgerRow, count_lora_parameters, ledger_of
from .data import Dataset, general_english, load_dataset, load_jsonl
from .device import autocast, describe_device, pick_device
from .evaluation import bleu, completion_loss, generate, perplexity
from .inject import (
    ModulesToSaveWrapper,
    candidate_modules,
    disable_lora,
    inject_lora,
    lora_layers,
    matched_modules,
    merge_and_unload,
    merge_lora,
    peft_line,
    remove_lora,
    trainable_parameters,
    unmerge_lora,
)
from .layers import LoraConv2d, LoraEmbedding, LoraLayer, LoraLinear
from .merging import merge_report
from .model_paths import allowed_models_dir, local_model_dir
from .models import (
    ModelSource,
    ModelUnavailableError,
    available_configs,
    build_on_meta,
    cache_dir,
    default_model_name,
    gpt2_tokenizer,
    load_config,
    load_model,
    source_info,
)
from .peft_check import peft_reference_count
from .peft_io import (
    adapter_state_dict,
    adapter_zip,
    load_adapter,
    load_adapter_zip,
    peft_snippet,
    read_adapter_config,
    read_adapter_upload,
    save_adapter,
)
from .qlora import NF4Linear, base_in_precision, quantize_model, weight_bytes
from .sharing import shared_base_copy, shares_storage
from .spectrum import (
    adapter_report,
    demo_image,
    effective_rank,
    energy_captured,
    energy_profile,
    factor_singular_values,
    low_rank_approximation,
    numerical_rank,
    rank_k_report,
    singular_values,
    spectrum_report,
    subspace_similarity,
)
from .toy import ToyConfig, ToyRun, adam_equivalent, initial_loss, train_toy
from .train import TrainConfig, Trainer, TrainingDiverged

__all__ = [
    "Dataset",
    "Ledger",
    "LedgerRow",
    "LoraConfig",
    "LoraConv2d",
    "LoraEmbedding",
    "LoraLayer",
    "LoraLinear",
    "ModelSource",
    "ModelUnavailableError",
    "ModulesToSaveWrapper",
    "NF4Linear",
    "ToyConfig",
    "ToyRun",
    "TrainConfig",
    "Trainer",
    "TrainingDiverged",
    "adam_equivalent",
    "adapter_report",
    "adapter_state_dict",
    "adapter_zip",
    "allowed_models_dir",
    "anatomy",
    "autocast",
    "available_configs",
    "base_in_precision",
    "bleu",
    "build_on_meta",
    "cache_dir",
    "candidate_modules",
    "completion_loss",
    "count_lora_parameters",
    "default_model_name",
    "demo_image",
    "describe_device",
    "disable_lora",
    "effective_rank",
    "energy_captured",
    "energy_profile",
    "factor_singular_values",
    "general_english",
    "generate",
    "gpt2_tokenizer",
    "initial_loss",
    "inject_lora",
    "ledger_of",
    "load_adapter",
    "load_adapter_zip",
    "load_config",
    "load_dataset",
    "load_jsonl",
    "load_model",
    "local_model_dir",
    "lora_layers",
    "low_rank_approximation",
    "matched_modules",
    "merge_and_unload",
    "merge_lora",
    "merge_report",
    "numerical_rank",
    "peft_line",
    "peft_reference_count",
    "peft_snippet",
    "perplexity",
    "pick_device",
    "quantize_model",
    "rank_k_report",
    "read_adapter_config",
    "read_adapter_upload",
    "remove_lora",
    "save_adapter",
    "shared_base_copy",
    "shares_storage",
    "singular_values",
    "source_info",
    "spectrum_report",
    "subspace_similarity",
    "train_toy",
    "trainable_parameters",
    "unmerge_lora",
    "weight_bytes",
]
