"""lora_core: LoRA written from scratch, PEFT-exact, for LoRA Lab.

    import lora_core as lc
    cfg = lc.LoraConfig(r=8, lora_alpha=16, target_modules=["c_attn"])
    names = lc.inject_lora(model, cfg)                   # wrap the targets, freeze the rest
    lc.trainable_parameters(model)                       # (trainable, total), as PEFT counts them
    print(lc.count_lora_parameters("distilgpt2", cfg))   # the ledger on the meta device; no weights

This root is the library: config, layers (and their fused fast path), inject, named adapters, mixed batches,
hot-swapping, merging, PEFT files, counting, spectrum, sharing and device, DoRA, combining adapters (TIES, DARE),
weighted adapters and the LoRA+ / LoRA-FA optimizers, plus where models come from (models/) and the 4-bit base
(quant/). Its uses live in subpackages that import it, never the reverse: training/ (data, Trainer, metrics, the
finetune CLI), teach/ (what pages and lessons show), serve/ (a shared server's settings, queue and upload checks),
research/ (paper replays), bench/ (the benchmark) and viz/ (plotly figures).

References: LoRA (arXiv 2106.09685), QLoRA (arXiv 2305.14314), rsLoRA (arXiv 2312.03732), OLoRA
(arXiv 2406.01775), DoRA (arXiv 2402.09353), TIES (arXiv 2306.01708), DARE (arXiv 2311.03099), LoRA+ (arXiv 2402.12354),
LoRA-FA (arXiv 2308.03303).
This package never imports streamlit.
"""

from . import combining, dora, spectrum
from .adapters import active_adapters, add_adapter, delete_adapter, set_adapter
from .config import LoraConfig
from .counting import Ledger, count_lora_parameters, ledger_of
from .device import autocast, describe_device, pick_device
from .hotswap import hotswap_adapter
from .inject import (
    ModulesToSaveWrapper,
    adapter_config,
    candidate_modules,
    inject_lora,
    lora_layers,
    matched_modules,
    peft_line,
    remove_lora,
    trainable_parameters,
)
from .intruders import IntruderReport, intruder_dimensions, reduce_intruder_dimension
from .layers import Adapter, LoraConv2d, LoraEmbedding, LoraLayer, LoraLinear
from .merging import disable_lora, merge_and_unload, merge_lora, unmerge_lora
from .mixed import mixed_batch
from .models import ModelUnavailableError, build_on_meta, load_config, load_model
from .optimizers import LoraFAOptimizer, create_lorafa_optimizer, create_loraplus_optimizer
from .peft_io import adapter_state_dict, adapter_zip, load_adapter, read_adapter_config, save_adapter
from .quant import NF4Linear, quantize_model
from .sharing import shared_base_copy, shares_storage
from .spectrum import effective_rank, energy_captured, factor_singular_values, singular_values, subspace_similarity
from .weighted import add_weighted_adapter

__all__ = [
    "Adapter",
    "IntruderReport",
    "Ledger",
    "LoraConfig",
    "LoraConv2d",
    "LoraEmbedding",
    "LoraFAOptimizer",
    "LoraLayer",
    "LoraLinear",
    "ModelUnavailableError",
    "ModulesToSaveWrapper",
    "NF4Linear",
    "active_adapters",
    "adapter_config",
    "adapter_state_dict",
    "adapter_zip",
    "add_adapter",
    "add_weighted_adapter",
    "autocast",
    "build_on_meta",
    "candidate_modules",
    "combining",
    "count_lora_parameters",
    "create_lorafa_optimizer",
    "create_loraplus_optimizer",
    "delete_adapter",
    "describe_device",
    "disable_lora",
    "dora",
    "effective_rank",
    "energy_captured",
    "factor_singular_values",
    "hotswap_adapter",
    "inject_lora",
    "intruder_dimensions",
    "ledger_of",
    "load_adapter",
    "load_config",
    "load_model",
    "lora_layers",
    "matched_modules",
    "merge_and_unload",
    "merge_lora",
    "mixed_batch",
    "peft_line",
    "pick_device",
    "quantize_model",
    "read_adapter_config",
    "reduce_intruder_dimension",
    "remove_lora",
    "save_adapter",
    "set_adapter",
    "shared_base_copy",
    "shares_storage",
    "singular_values",
    "spectrum",
    "subspace_similarity",
    "trainable_parameters",
    "unmerge_lora",
]
