"""Gradient checkpointing with LoRA, measured: what it saves, and the trap that leaves lora_B untrained.

Two things a learner would guess, checked by running them:

* `checkpointing_saves(cfg)`: the activations one step keeps with and without checkpointing (measure.py's
  ledger, so a checkpointed layer's kept input is counted too).
* `checkpoint_trap(cfg)`: the failure PEFT's issue threads report. With torch's *reentrant* checkpoint
  (`use_reentrant=True`, what older transformers and PEFT set-ups used) a checkpointed block only gets a
  backward pass if one of its *inputs* requires grad. With a frozen embedding nothing does, so the LoRA
  factors inside every block get no gradient: lora_B.grad stays None (and with nothing trainable outside
  the blocks the loss has no grad_fn at all). `model.enable_input_require_grads()` (a hook making the
  embedding output require grad) is the fix. transformers 5's `activation_checkpointing_enable()` (and
  its deprecated alias `gradient_checkpointing_enable()`) defaults to use_reentrant=False and installs
  that hook itself, so the trap needs the old setting to appear; each row says which setting it ran.
  Whether lora_B gets a gradient depends on the graph, not on the widths, so the trap runs by default on a
  narrow copy of the model (measure.narrow_description: the same blocks and module names, width 64, a few
  milliseconds a step); `narrow=False` runs it on the real shapes and gives the same rows.
"""

from __future__ import annotations

from dataclasses import replace

import torch

from ..inject import lora_layers
from .measure import MB, MeasuredMemory, build_model, measure_step
from .memory import MemoryConfig

TRAP_CASES = (
    # (label, use_reentrant or None for no checkpointing, embedding output made to require grad)
    ("no checkpointing", None, False),
    ("reentrant checkpoint, embedding output frozen (the old setup)", True, False),
    ("reentrant checkpoint + enable_input_require_grads() (the fix)", True, True),
    ("non-reentrant checkpoint, embedding output frozen", False, False),
    ("transformers 5 default: activation_checkpointing_enable()", "default", True),
)


def _lora_b_grads(model: torch.nn.Module) -> tuple[int, int, float]:
    """(lora_B weights with a gradient, lora_B weights, the gradients' total L2 norm)."""
    bs = [layer.adapter().B for _, layer in lora_layers(model)]
    grads = [b.grad for b in bs if b.grad is not None]
    norm = torch.linalg.vector_norm(torch.stack([g.float().norm() for g in grads])).item() if grads else 0.0
    return len(grads), len(bs), norm


def _checkpoint_kwargs(model: torch.nn.Module) -> str:
    """The keyword arguments transformers passes to torch.utils.checkpoint, read from the model ("off" if none)."""
    for module in model.modules():
        if getattr(module, "gradient_checkpointing", False) and hasattr(module, "_gradient_checkpointing_func"):
            return str(getattr(module._gradient_checkpointing_func, "keywords", {}))
    return "off"


def checkpoint_trap(cfg: MemoryConfig, batch_size: int = 1, seq_len: int = 32, seed: int = 0,
                    narrow: bool = True) -> list[dict]:
    """One training step of `cfg`'s LoRA model per checkpointing setting: does lora_B get a gradient?

    The question depends on neither the batch, the sequence nor the widths, so they are small here
    (`batch_size`, `seq_len`, and with `narrow` the model's narrow copy; `narrow=False` for the real shapes).
    """
    if cfg.method == "full":
        raise ValueError("method='full' is not allowed here: the trap is about LoRA factors; use 'lora' or 'qlora'")
    small = replace(cfg, batch_size=batch_size, seq_len=seq_len, gradient_checkpointing=False)
    rows = []
    for label, reentrant, input_grads in TRAP_CASES:
        generator = torch.Generator().manual_seed(seed)
        model = build_model(small, generator=generator, narrow=narrow)
        if reentrant == "default":
            model.activation_checkpointing_enable()
        elif reentrant is not None:
            model.activation_checkpointing_enable({"use_reentrant": reentrant})
            # transformers 5 installs the input hook itself; take it off to reproduce the old setup, or keep it.
            model.disable_input_require_grads()
            if input_grads:
                model.enable_input_require_grads()
        seen: list[bool] = []  # registered last, so it sees the embedding output as the blocks will
        embedding = model.get_input_embeddings()
        watch = embedding.register_forward_hook(lambda m, i, out, seen=seen: seen.append(out.requires_grad))
        model.train()
        ids = torch.randint(0, embedding.num_embeddings, (batch_size, seq_len), generator=generator)
        loss = model(input_ids=ids, labels=ids).loss
        watch.remove()
        note = ""
        if loss.requires_grad:
            loss.backward()
        else:
            note = "the loss has no grad_fn: loss.backward() raises, nothing is trained"
        with_grad, total, norm = _lora_b_grads(model)
        if with_grad < total and not note:
            note = f"{total - with_grad} lora_B weights got no gradient"
        rows.append({"setting": label, "checkpoint": _checkpoint_kwargs(model),
                     "embedding output requires grad": seen[0],
                     "loss requires grad": loss.requires_grad, "lora_B with a gradient": f"{with_grad} of {total}",
                     "lora_B grad norm": norm, "note": note})
    return rows


def checkpointing_rows(measured: list[MeasuredMemory]) -> list[dict]:
    """One row per measured step: its checkpointing setting, activations, and the part kept as checkpoint inputs."""
    rows = []
    for m in measured:
        kept = sum(t.bytes for t in m.saved if t.via == "checkpoint input")
        top = m.saved_by_site(1)
        rows.append({"gradient checkpointing": m.config.gradient_checkpointing, "activations MB": m.activations / MB,
                     "saved storages": len(m.saved), "of which checkpoint inputs MB": kept / MB,
                     "largest saver": f"{top[0]['module kind']} ({top[0]['MB']:.1f} MB)" if top else "-",
                     "seconds": m.seconds})
    return rows


def checkpointing_saves(cfg: MemoryConfig) -> list[dict]:
    """Activations one step keeps without and with gradient checkpointing, each measured (measure.py)."""
    return checkpointing_rows([measure_step(replace(cfg, gradient_checkpointing=on)) for on in (False, True)])
