"""Ask Hugging Face PEFT for its own count, on the same shapes, to check our ledger.

    trainable, total = peft_reference_count("distilgpt2", cfg)
    assert (trainable, total) == (ledger.trainable, ledger.total)

lora_core is written from scratch and uses PEFT for verification only: `peft` is imported inside
the function, so importing lora_core never pulls it in. The model is built on the meta device,
so the check needs no weights and takes well under a second even for a 7B config.
"""

from __future__ import annotations

import warnings

from ..config import LoraConfig
from ..models.sources import build_on_meta


def to_peft_config(cfg: LoraConfig):
    """Our LoraConfig as a `peft.LoraConfig` with the same meaning, field for field."""
    from peft import LoraConfig as PeftLoraConfig

    init = cfg.init_lora_weights
    # PiSSA and OLoRA decompose real weights at injection; on the meta device there are none. The
    # count does not depend on the init, so PEFT is asked for its default init instead.
    init = True if init in ("pissa", "olora") else init
    targets = cfg.target_modules
    return PeftLoraConfig(
        r=cfg.r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout, bias=cfg.bias,
        target_modules=list(targets) if isinstance(targets, list) else targets,
        use_rslora=cfg.use_rslora, init_lora_weights=init,
        layers_to_transform=cfg.layers_to_transform, layers_pattern=cfg.layers_pattern,
        modules_to_save=cfg.modules_to_save, fan_in_fan_out=cfg.fan_in_fan_out, task_type=cfg.task_type,
    )


def peft_reference_count(model_name: str, cfg: LoraConfig) -> tuple[int, int]:
    """(trainable, total) as PEFT's `get_nb_trainable_parameters` reports them for `cfg`.

    `model_name` is anything `build_on_meta` accepts (a shipped config name, a local model dir).
    PEFT's own errors (e.g. a target that matches nothing) come back as a ValueError.
    """
    from peft import get_peft_model

    model = build_on_meta(model_name)
    with warnings.catch_warnings():
        # PEFT warns that GPT-2's Conv1D needs fan_in_fan_out=True and then sets it itself.
        warnings.simplefilter("ignore", UserWarning)
        try:
            peft_model = get_peft_model(model, to_peft_config(cfg))
        except (TypeError, KeyError) as err:  # PEFT reports some bad targets this way
            raise ValueError(f"PEFT refused target_modules={cfg.target_modules!r}: {err}") from err
    trainable, total = peft_model.get_nb_trainable_parameters()
    return int(trainable), int(total)
