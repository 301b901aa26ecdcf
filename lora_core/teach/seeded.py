"""Seeded tiny models and layers for the teaching code, drawn from a local `torch.Generator`.

Pages run in threads of one server process, so nothing here may touch process-wide state: not
`torch.manual_seed` (it would reseed every learner's stream) and not the global RNG at all. Module
constructors (nn.Linear, GPT-2's layers) draw their init from the global RNG, so the modules here are
built on the meta device, given memory with `to_empty`, and filled from the caller's generator.

    model = tiny_gpt2(seed=0)                        # Conv1D projections, lm_head tied to wte
    layer = linear(64, 48, torch.Generator().manual_seed(0))
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
from transformers import AutoModelForCausalLM, GPT2Config

TINY_GPT2 = dict(n_layer=2, n_embd=64, n_head=4, n_positions=64, vocab_size=512)


def generator(seed: int) -> torch.Generator:
    """A CPU generator seeded with `seed`: the only source of randomness in teach/."""
    return torch.Generator().manual_seed(seed)


def tiny_gpt2_config(**overrides) -> GPT2Config:
    """The config of `tiny_gpt2` (special tokens inside its small vocabulary)."""
    return GPT2Config(**{**TINY_GPT2, **overrides}, bos_token_id=0, eos_token_id=0)


def tiny_gpt2_on_meta(**overrides) -> nn.Module:
    """The tiny GPT-2 with every tensor on the meta device: shapes only, no draw from any RNG."""
    with torch.device("meta"):
        return AutoModelForCausalLM.from_config(tiny_gpt2_config(**overrides))


def materialize_gpt2(model: nn.Module, seed: int) -> nn.Module:
    """Give a meta-device GPT-2 (maybe wrapped, e.g. by PEFT) memory, tie lm_head to wte again, and fill
    its base weights with GPT-2's init from `generator(seed)`. LoRA factors are left for the caller."""
    model = model.to_empty(device="cpu")
    model.get_output_embeddings().weight = model.get_input_embeddings().weight  # to_empty unties them
    init_gpt2_weights(model, generator(seed))
    return model


def tiny_gpt2(seed: int = 0, **overrides) -> nn.Module:
    """A small GPT-2 (Conv1D projections, lm_head tied to wte) with weights from `generator(seed)`, in eval mode."""
    return materialize_gpt2(tiny_gpt2_on_meta(**overrides), seed).eval()


def init_gpt2_weights(model: nn.Module, gen: torch.Generator) -> None:
    """GPT-2's own init (GPT2PreTrainedModel._init_weights) with draws from `gen`: weights N(0, 0.02²),
    the residual projections c_proj N(0, (0.02/√(2·n_layer))²), biases 0, LayerNorm 1 and 0.

    LoRA factors (any module named lora_*) are skipped; a tied weight is drawn once, in model order.
    """
    cfg = model.config
    std = cfg.initializer_range
    seen: set[int] = set()
    with torch.no_grad():
        for name, module in model.named_modules():
            if "lora_" in name:
                continue
            for leaf, p in module.named_parameters(recurse=False):
                if id(p) in seen:
                    continue
                seen.add(id(p))
                if isinstance(module, nn.LayerNorm):
                    p.fill_(1.0 if leaf == "weight" else 0.0)
                elif leaf == "bias":
                    p.zero_()
                else:  # GPT-2 scales the two residual projections per block by 1/√(2·n_layer)
                    residual = name.removesuffix(".base_layer").endswith("c_proj")
                    p.normal_(0.0, std / math.sqrt(2 * cfg.n_layer) if residual else std, generator=gen)


def linear(in_features: int, out_features: int, gen: torch.Generator, bias: bool = True) -> nn.Linear:
    """An nn.Linear with nn.Linear's own init (Kaiming-uniform, a = √5; bias U(±1/√in)) drawn from `gen`."""
    layer = nn.Linear(in_features, out_features, bias=bias, device="meta").to_empty(device="cpu")
    with torch.no_grad():
        nn.init.kaiming_uniform_(layer.weight, a=math.sqrt(5), generator=gen)
        if bias:
            bound = 1 / math.sqrt(in_features)
            layer.bias.uniform_(-bound, bound, generator=gen)
    return layer


def random_ids(vocab: int, shape: tuple[int, ...], seed: int) -> torch.Tensor:
    """Seeded random token ids of `shape` below `vocab`."""
    return torch.randint(0, vocab, shape, generator=generator(seed))


class GeneratorDropout(nn.Module):
    """Inverted dropout, nn.Dropout's formula, with the mask drawn from a local generator.

    nn.Dropout can only draw from the global RNG; a teaching trace that swaps this in measures the
    same thing (which tensor is zeroed, and the 1/(1−p) scale) without moving anyone else's stream.
    """

    def __init__(self, p: float, gen: torch.Generator):
        super().__init__()
        self.p, self.gen = p, gen

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0:
            return x
        keep = torch.empty(x.shape, dtype=x.dtype).bernoulli_(1 - self.p, generator=self.gen)
        return x * keep / (1 - self.p)

    def extra_repr(self) -> str:
        return f"p={self.p}"
