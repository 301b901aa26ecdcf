"""LoRA layers: a frozen base layer plus a trainable low-rank update, with PEFT's semantics.

    h = base_layer(x) + lora_B(lora_A(lora_dropout(x))) * scaling        (LoRA, arXiv 2106.09685, eq. 3)

`lora_A` maps in_features -> r and `lora_B` maps r -> out_features, so as matrices
ΔW = B @ A * scaling has the base layer's (out_features, in_features) shape. A starts
Kaiming-uniform and B at zero, so ΔW = 0 and the adapted model starts exactly where the base was.

Supported base layers (those PEFT and loralib support): nn.Linear, GPT-2's Conv1D (weight stored
(in, out), so `fan_in_fan_out=True`), nn.Embedding and nn.Conv2d. As in PEFT's dispatch_default, the
layer type decides `fan_in_fan_out`; a config that says otherwise gets PEFT's warning.

Adapters have names, PEFT's "default" first. Names and containers follow peft/tuners/lora/layer.py:
`lora_A["default"]` is an nn.Linear in an nn.ModuleDict, `scaling["default"]` a float in a dict, so
`state_dict()` holds exactly PEFT's keys (`c_attn.lora_A.default.weight`). The forward adds every active
adapter; `layer.adapter()` reads one adapter as a whole (A, B, r, scaling, ...). A DoRA adapter
(`use_dora=True`, arXiv 2402.09353) also has PEFT's `lora_magnitude_vector[name]`: dora_layer.py.

Randomness: without a `generator`, A (and B with init_lora_weights=False) draw from torch's global RNG
exactly as PEFT's do. With one, the factors are built on the meta device and filled from that generator
alone: a shared server never moves the process-wide stream. How the factors start is inits.py.

Merging is explicit and out of place: `merge()` swaps in a new weight W + ΔW (computed in fp32; with
several adapters W + Σ ΔW) and keeps the original tensor, so a frozen base shared by several models is never written and
`unmerge()` restores W bit for bit. `.eval()` never merges (loralib's trap).

Speed, same numbers: `LoraLinear` may take a measured fast path (fused.py, docs/performance.md);
`forward_path = "plain"` switches it off; tests pin every path to the plain formula, gradients included.

Quantized bases (quant/nf4.py) are not imported here: like PEFT's dispatchers, their module registers
its base type and the LoRA layer that wraps it (`targets.register_dispatch`).
"""

from __future__ import annotations

import warnings
from typing import NamedTuple

import torch
import torch.nn as nn
import torch.nn.functional as F
from transformers.pytorch_utils import Conv1D

from . import dora_layer, fused, mixed_rows
from .config import LoraConfig, check_adapter_name
from .inits import init_factors
from .targets import DISPATCH, LINEAR_TYPES, fan_in_fan_out_for, in_out_features, is_supported, weight_device_dtype


def factor(kind: type[nn.Module], *args, device: torch.device, dtype: torch.dtype,
           generator: torch.Generator | None, **kwargs) -> nn.Module:
    """A bias-free lora_A / lora_B module. Its constructor's Kaiming init draws from the global RNG, so
    with a local generator it is built on the meta device and only given memory: init_factors fills it."""
    if generator is None:
        return kind(*args, bias=False, device=device, dtype=dtype, **kwargs)
    return kind(*args, bias=False, device="meta", dtype=dtype, **kwargs).to_empty(device=device)


def adapter_dtype(dtype: torch.dtype) -> torch.dtype:
    """LoRA factors train in fp32 when the base is fp16/bf16 (PEFT's autocast_adapter_dtype)."""
    return torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype


class Adapter(NamedTuple):
    """One adapter of a LoRA layer, read now: r and scaling are copies, so read it again after a change.

    A and B are the layer's own Parameters (writing them writes the adapter): A (r, in) and B (out, r),
    or (r, in, kh, kw) and (out, r, 1, 1) for Conv2d, so that ΔW = B @ A * scaling.
    """
    name: str
    A: nn.Parameter
    B: nn.Parameter
    r: int
    lora_alpha: float
    use_rslora: bool
    scaling: float
    dropout: nn.Module
    magnitude: nn.Parameter | None = None  # DoRA's m, (out,) or a Conv2d's (1, out, 1, 1); None for plain LoRA

    def parameters(self) -> tuple[nn.Parameter, ...]:
        """What this adapter trains: A, B and, with DoRA, the magnitude."""
        return (self.A, self.B) if self.magnitude is None else (self.A, self.B, self.magnitude)


class LoraLayer(nn.Module):
    """Base class: the frozen `base_layer` and its adapters, each under its name, in PEFT's containers.

    Per adapter name: `lora_A[name]` / `lora_B[name]` (Linear, Conv2d; an Embedding uses the Parameters
    `lora_embedding_A[name]` / `lora_embedding_B[name]`), `lora_dropout[name]`, and the numbers `r`,
    `lora_alpha`, `use_rslora`, `scaling`. So `state_dict()` keys are PEFT's, e.g. `lora_A.default.weight`.
    `active_adapters` are those the forward adds (a name this layer lacks is skipped, as in PEFT);
    `merged_adapters` those folded into the weight. `layer.adapter(name)` reads one adapter as a whole.
    """

    fan_in_fan_out = False  # True when the base weight is stored transposed, (in, out)
    adapter_layer_names = ("lora_A", "lora_B", "lora_embedding_A", "lora_embedding_B", "lora_magnitude_vector")

    def __init__(self, base_layer: nn.Module, in_features: int, out_features: int):
        super().__init__()
        self.base_layer = base_layer
        self.in_features, self.out_features = in_features, out_features
        self.r: dict[str, int] = {}
        self.lora_alpha: dict[str, float] = {}
        self.use_rslora: dict[str, bool] = {}
        self.scaling: dict[str, float] = {}
        self.lora_dropout = nn.ModuleDict()
        self.lora_A, self.lora_B = nn.ModuleDict(), nn.ModuleDict()
        self.lora_embedding_A, self.lora_embedding_B = nn.ParameterDict(), nn.ParameterDict()
        self.lora_magnitude_vector = nn.ModuleDict()  # DoRA's magnitudes, PEFT's keys (dora_layer.py)
        self.active_adapters: list[str] = []
        self.merged_adapters: list[str] = []
        self.disabled = False

    # --- adapters -----------------------------------------------------------------------------
    def update_layer(self, adapter_name: str, cfg: LoraConfig, generator: torch.Generator | None = None) -> None:
        """Add adapter `adapter_name` from `cfg` (PEFT's update_layer). It is not made active."""
        check_adapter_name(adapter_name)
        if adapter_name in self.r:
            raise ValueError(f"adapter_name={adapter_name!r} is already an adapter of this layer")
        self.r[adapter_name], self.lora_alpha[adapter_name] = cfg.r, cfg.lora_alpha
        self.use_rslora[adapter_name], self.scaling[adapter_name] = cfg.use_rslora, cfg.scaling
        # p = 0 gets no dropout module at all: nn.Identity costs nothing and hides nothing
        self.lora_dropout[adapter_name] = nn.Dropout(cfg.lora_dropout) if cfg.lora_dropout > 0 else nn.Identity()
        self._new_factors(adapter_name, cfg.r, generator)
        init_factors(self, adapter_name, cfg.init_lora_weights, generator)
        if cfg.use_dora:  # m = ‖W + ΔW‖ of the factors as they start, as PEFT's DoRA init
            dora_layer.add_magnitude(self, adapter_name)

    def _new_factors(self, name: str, r: int, generator: torch.Generator | None) -> None:
        raise NotImplementedError

    def set_adapter(self, adapter_names: list[str], inference_mode: bool = False) -> None:
        """Make `adapter_names` active (PEFT's set_adapter): their parameters train unless `inference_mode`, every
        other adapter's are frozen. Names this layer lacks are kept, as in PEFT, and add nothing."""
        for name in self.r:
            for p in self.adapter(name).parameters():
                p.requires_grad_(name in adapter_names and not inference_mode)
        self.active_adapters = list(adapter_names)

    def delete_adapter(self, adapter_name: str) -> None:
        """Remove adapter `adapter_name` (not merged) from this layer and from its active adapters."""
        if adapter_name in self.merged_adapters:
            raise ValueError(f"adapter_name={adapter_name!r} is merged into this layer: unmerge() first")
        for container in (*(getattr(self, n) for n in self.adapter_layer_names), self.lora_dropout):
            if adapter_name in container:
                del container[adapter_name]
        for numbers in (self.r, self.lora_alpha, self.use_rslora, self.scaling):
            numbers.pop(adapter_name, None)
        self.active_adapters = [n for n in self.active_adapters if n != adapter_name]

    def adapter(self, name: str | None = None) -> Adapter:
        """Adapter `name` of this layer (None: the one active adapter it holds), as a view of its parts."""
        if name is None:
            active = [n for n in self.active_adapters if n in self.r]
            if len(active) != 1:
                raise ValueError(f"this layer holds the adapters {list(self.r)} and {active or 'none'} of them "
                                 "active: name one, layer.adapter(name)")
            name = active[0]
        elif name not in self.r:
            raise ValueError(f"adapter_name={name!r} is not an adapter of this layer: it holds {list(self.r)}")
        if name in self.lora_embedding_A:
            A, B = self.lora_embedding_A[name], self.lora_embedding_B[name]
        else:
            A, B = self.lora_A[name].weight, self.lora_B[name].weight
        m = self.lora_magnitude_vector[name].weight if name in self.lora_magnitude_vector else None
        return Adapter(name, A, B, self.r[name], self.lora_alpha[name], self.use_rslora[name], self.scaling[name],
                       self.lora_dropout[name], m)

    def factors(self, name: str | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, A) of adapter `name` as matrices, (out, r) and (r, in), so that ΔW = B @ A * scaling."""
        a = self.adapter(name)
        return a.B.flatten(1), a.A.flatten(1)

    def delta_weight(self, name: str | None = None) -> torch.Tensor:
        """ΔW = B @ A * scaling in fp32, shape (out_features, in_features) like nn.Linear."""
        a = self.adapter(name)
        B, A = a.B.flatten(1).float(), a.A.flatten(1).float()
        return (B @ A) * a.scaling  # (out, r) @ (r, in) -> (out, in)

    def _delta_in_weight_layout(self, name: str) -> torch.Tensor:
        """ΔW of adapter `name` laid out like base_layer.weight (transposed for Conv1D and Embedding)."""
        delta = self.delta_weight(name)
        return delta.T if self.fan_in_fan_out else delta

    def lora_branch(self, x: torch.Tensor, name: str | None = None) -> torch.Tensor:
        """What adapter `name` adds to the base layer's output (fp32 factors give an fp32 result)."""
        raise NotImplementedError

    # --- forward ----------------------------------------------------------------------------
    def branch_adapters(self) -> list[str]:
        """The adapters the forward adds as a branch: active, held here, and not merged into W."""
        return [n for n in self.active_adapters if n in self.r and n not in self.merged_adapters]

    def forward(self, x: torch.Tensor, *args, adapter_names: list[str] | None = None, **kwargs) -> torch.Tensor:
        """base_layer(x) + Σ lora_B(lora_A(lora_dropout(x))) * scaling over the active adapters, in the base's dtype.

        A DoRA adapter rescales what came before it instead (dora_layer.py). `adapter_names` (one per example,
        "__base__" for none) makes it a mixed batch: mixed_rows.py.
        """
        if adapter_names is not None:
            return mixed_rows.mixed_batch_forward(self, x, adapter_names, *args, **kwargs)
        result = self.base_layer(x, *args, **kwargs)
        if self.disabled:
            return result
        out = result
        for name in self.branch_adapters():  # added in order, in the wider dtype, rounded once (PEFT)
            dora = name in self.lora_magnitude_vector
            out = dora_layer.forward(self, x, out, name) if dora else out + self.lora_branch(x, name)
        return out.to(result.dtype)

    # --- merge / unmerge --------------------------------------------------------------------
    @property
    def merged(self) -> bool:
        return bool(self.merged_adapters)

    def merge(self, adapter_names: list[str] | None = None) -> None:
        """Fold ΔW of `adapter_names` (None: the active adapters) into a new base weight.

        Names this layer lacks are skipped; merging an adapter twice warns and does nothing. The new weight
        is W + Σ ΔW over every merged adapter, added to W in fp32 in PEFT's order and rounded once (a DoRA adapter
        rescales the sum so far: dora_layer.merge_step); W itself is kept for `unmerge`.
        """
        if isinstance(adapter_names, str):
            raise ValueError(f"adapter_names={adapter_names!r} must be a list of adapter names, e.g. "
                             f"[{adapter_names!r}]")
        # Names this layer lacks are skipped, as in PEFT: a model-wide merge names adapters some layers lack.
        names = [n for n in (self.active_adapters if adapter_names is None else adapter_names) if n in self.r]
        new = [n for n in dict.fromkeys(names) if n not in self.merged_adapters]
        if names and not new:
            warnings.warn("LoRA layer is already merged; merge() did nothing.", stacklevel=2)
        if not new:
            return
        w = self.original_weight()
        # Add in fp32 and round once, so bf16/fp16 bases lose no more than one rounding.
        merged = w.detach().float()
        for name in self.merged_adapters + new:
            dora = name in self.lora_magnitude_vector
            merged = dora_layer.merge_step(self, merged, name) if dora else merged + self._delta_in_weight_layout(name)
        if not self.merged:
            # Keep W itself for unmerge as a non-persistent buffer: it moves with .to() but is neither a
            # parameter (PEFT's counts) nor in state_dict() (PEFT's keys), and W's storage is never written.
            self.register_buffer("unmerged_weight", w, persistent=False)
        self.base_layer.weight = nn.Parameter(merged.to(w.dtype), requires_grad=False)
        self.merged_adapters = self.merged_adapters + new

    def unmerge(self) -> None:
        """Put the original base weight back (bit-exact), unmerging every adapter. Repeating it warns."""
        if not self.merged:
            warnings.warn("LoRA layer is not merged; unmerge() did nothing.", stacklevel=2)
            return
        w = self.unmerged_weight
        del self.unmerged_weight
        # The same Parameter object comes back, unless .to() replaced the buffer with a moved tensor.
        self.base_layer.weight = w if isinstance(w, nn.Parameter) else nn.Parameter(w, requires_grad=False)
        self.merged_adapters = []

    def original_weight(self) -> torch.Tensor:
        """The base weight W without ΔW, merged or not (in base_layer.weight's own layout)."""
        return self.unmerged_weight if self.merged else self.base_layer.weight

    def extra_repr(self) -> str:
        return (f"in={self.in_features}, out={self.out_features}, r={self.r}, scaling={self.scaling}, "
                f"active={self.active_adapters}, merged={self.merged_adapters}")


class LoraLinear(LoraLayer):
    """LoRA around nn.Linear (weight (out, in)) or GPT-2's Conv1D (weight (in, out)).

    `forward_path` picks how the same numbers are computed (fused.FORWARD_PATHS): "one-node" (the
    default: the fastest exact path fused.py knows for this input), "addmm" or "plain" (the formula as
    written, nothing else). It exists to measure and to teach; all three agree to rounding.
    """

    def __init__(self, base_layer: nn.Module, cfg: LoraConfig, generator: torch.Generator | None = None,
                 fan_in_fan_out: bool | None = None, adapter_name: str = "default"):
        in_f, out_f = in_out_features(base_layer)
        super().__init__(base_layer, in_f, out_f)
        self._forward_path = "one-node"
        # Conv1D computes x @ W + b with W stored (in, out): the transpose of nn.Linear. `fan_in_fan_out`
        # is the flag as it stands in PEFT's injection loop (cfg's, unless inject_lora passes it on).
        requested = cfg.fan_in_fan_out if fan_in_fan_out is None else fan_in_fan_out
        self.fan_in_fan_out = fan_in_fan_out_for(base_layer, requested)
        self.update_layer(adapter_name, cfg, generator)
        self.active_adapters = [adapter_name]

    def _new_factors(self, name: str, r: int, generator: torch.Generator | None) -> None:
        device, dtype = weight_device_dtype(self.base_layer)  # free on a quantized base: W is not rebuilt
        kw = dict(device=device, dtype=adapter_dtype(dtype), generator=generator)
        self.lora_A[name] = factor(nn.Linear, self.in_features, r, **kw)   # weight (r, in)
        self.lora_B[name] = factor(nn.Linear, r, self.out_features, **kw)  # weight (out, r)

    def lora_branch(self, x: torch.Tensor, name: str | None = None) -> torch.Tensor:
        a = self.adapter(name)
        x = a.dropout(x.to(a.A.dtype))  # dropout hits x, never A or B
        # (..., in) @ A.T -> (..., r) @ B.T -> (..., out)
        return self.lora_B[a.name](self.lora_A[a.name](x)) * a.scaling

    def forward(self, x: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        if self._forward_path != "plain" and not (args or kwargs):  # adapter_names= takes the plain path
            fast = fused.forward(self, x)  # None where a fast path would not be exact or would not pay
            fast = dora_layer.one_node_forward(self, x) if fast is None else fast  # DoRA's own
            if fast is not None:
                return fast
        return super().forward(x, *args, **kwargs)

    @property
    def forward_path(self) -> str:
        return self._forward_path

    @forward_path.setter
    def forward_path(self, path: str) -> None:
        if path not in fused.FORWARD_PATHS:
            raise ValueError(f"forward_path={path!r} is not allowed: choose one of {', '.join(fused.FORWARD_PATHS)}")
        self._forward_path = path


class LoraEmbedding(LoraLayer):
    """LoRA around nn.Embedding. A is (r, num_embeddings), B is (embedding_dim, r), as in PEFT.

    A token id picks a column of A, so ΔW is (embedding_dim, num_embeddings) and is written
    transposed into the (num_embeddings, embedding_dim) table. The factors are bare Parameters in
    `lora_embedding_A` / `lora_embedding_B`, as in PEFT. PEFT applies no dropout here.
    """

    fan_in_fan_out = True

    def __init__(self, base_layer: nn.Embedding, cfg: LoraConfig, generator: torch.Generator | None = None,
                 adapter_name: str = "default"):
        num, dim = base_layer.weight.shape
        super().__init__(base_layer, num, dim)
        self.update_layer(adapter_name, cfg, generator)
        self.active_adapters = [adapter_name]

    def _new_factors(self, name: str, r: int, generator: torch.Generator | None) -> None:
        w = self.base_layer.weight
        kw = dict(device=w.device, dtype=adapter_dtype(w.dtype))
        shapes = (r, self.in_features), (self.out_features, r)  # A (r, num_embeddings), B (dim, r)
        if generator is None:  # PEFT draws both from the global RNG, on the CPU in fp32, then moves them
            A, B = (torch.randn(s).to(**kw) for s in shapes)
        else:  # memory only: init_factors fills them from the generator
            A, B = (torch.empty(s, **kw) for s in shapes)
        self.lora_embedding_A[name], self.lora_embedding_B[name] = nn.Parameter(A), nn.Parameter(B)

    def lora_branch(self, x: torch.Tensor, name: str | None = None) -> torch.Tensor:
        a, e = self.adapter(name), self.base_layer
        # look up rows of A.T: (..., ) -> (..., r); then (..., r) @ B.T -> (..., dim)
        after_a = F.embedding(x, a.A.T, e.padding_idx, e.max_norm, e.norm_type, e.scale_grad_by_freq, e.sparse)
        return (after_a @ a.B.T) * a.scaling


class LoraConv2d(LoraLayer):
    """LoRA around nn.Conv2d: A is a conv with the base's kernel and r channels, B a 1x1 conv."""

    def __init__(self, base_layer: nn.Conv2d, cfg: LoraConfig, generator: torch.Generator | None = None,
                 adapter_name: str = "default"):
        super().__init__(base_layer, base_layer.in_channels, base_layer.out_channels)
        self.update_layer(adapter_name, cfg, generator)
        self.active_adapters = [adapter_name]

    def _new_factors(self, name: str, r: int, generator: torch.Generator | None) -> None:
        b = self.base_layer
        kw = dict(device=b.weight.device, dtype=adapter_dtype(b.weight.dtype), generator=generator)
        self.lora_A[name] = factor(nn.Conv2d, b.in_channels, r, b.kernel_size, b.stride, b.padding,
                                   b.dilation, padding_mode=b.padding_mode, **kw)  # weight (r, in, kh, kw)
        self.lora_B[name] = factor(nn.Conv2d, r, b.out_channels, 1, 1, **kw)       # weight (out, r, 1, 1)

    def delta_weight(self, name: str | None = None) -> torch.Tensor:
        """ΔW in the conv weight's own shape (out, in, kh, kw)."""
        return super().delta_weight(name).view_as(self.base_layer.weight)  # (out, r) @ (r, in*kh*kw), reshaped

    def lora_branch(self, x: torch.Tensor, name: str | None = None) -> torch.Tensor:
        a = self.adapter(name)
        x = a.dropout(x.to(a.A.dtype))
        return self.lora_B[a.name](self.lora_A[a.name](x)) * a.scaling


def check_lora_target(base_layer: nn.Module, cfg: LoraConfig, name: str = "") -> None:
    """Raise a ValueError naming the layer if `cfg` cannot be applied to `base_layer`."""
    if isinstance(base_layer, LoraLayer):
        raise ValueError(f"target module {name!r} already has LoRA: remove it first (inject once)")
    if not is_supported(base_layer):
        raise ValueError(f"target module {name!r} is a {type(base_layer).__name__}, which LoRA cannot wrap: "
                         "allowed layer types are Linear, Conv1D, Embedding and Conv2d")
    in_f, out_f = in_out_features(base_layer)
    if cfg.r > min(in_f, out_f):
        raise ValueError(f"r={cfg.r} is too large for {name!r} ({in_f}→{out_f}): "
                         f"r must be at most min(in, out) = {min(in_f, out_f)}")
    if isinstance(base_layer, nn.Conv2d) and base_layer.groups != 1:
        raise ValueError(f"target module {name!r} has groups={base_layer.groups}: "
                         "LoRA Lab wraps Conv2d layers with groups=1 only")
    if cfg.init_lora_weights in ("pissa", "olora") and not isinstance(base_layer, (nn.Linear, Conv1D)):
        raise ValueError(f"init_lora_weights={cfg.init_lora_weights!r} is not allowed on {name!r} "
                         f"({type(base_layer).__name__}): it is defined for Linear and Conv1D layers")


def make_lora_layer(base_layer: nn.Module, cfg: LoraConfig, name: str = "", *,
                    generator: torch.Generator | None = None, fan_in_fan_out: bool | None = None,
                    adapter_name: str = "default") -> LoraLayer:
    """Wrap `base_layer` in the LoRA layer of its type, holding adapter `adapter_name`, active; a clear
    ValueError for anything else.

    `generator` seeds the factors locally (see the module docstring); `fan_in_fan_out` overrides
    cfg.fan_in_fan_out for a Linear or Conv1D (inject_lora carries PEFT's running value).
    """
    check_adapter_name(adapter_name)
    check_lora_target(base_layer, cfg, name)
    kw = dict(generator=generator, adapter_name=adapter_name)
    for base_type, lora_type in DISPATCH.items():
        if isinstance(base_layer, base_type):
            return lora_type(base_layer, cfg, fan_in_fan_out=fan_in_fan_out, **kw)
    if isinstance(base_layer, LINEAR_TYPES):
        return LoraLinear(base_layer, cfg, fan_in_fan_out=fan_in_fan_out, **kw)
    if isinstance(base_layer, nn.Embedding):
        return LoraEmbedding(base_layer, cfg, **kw)
    return LoraConv2d(base_layer, cfg, **kw)
