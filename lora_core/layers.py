"""LoRA layers: a frozen base layer plus a trainable low-rank update, with PEFT's semantics.

    h = base_layer(x) + lora_B(lora_A(lora_dropout(x))) * scaling        (LoRA, arXiv 2106.09685, eq. 3)

`lora_A` maps in_features -> r and `lora_B` maps r -> out_features, so as matrices
ΔW = B @ A * scaling has the base layer's (out_features, in_features) shape. A starts
Kaiming-uniform and B at zero, so ΔW = 0 and the adapted model starts exactly where the base was.

Supported base layers (those PEFT and loralib support): nn.Linear, GPT-2's Conv1D (weight stored
(in, out), so `fan_in_fan_out=True`), nn.Embedding and nn.Conv2d. Names follow
peft/tuners/lora/layer.py so that state-dict keys line up with PEFT's adapter files. As in PEFT's
dispatch_default, the layer type decides `fan_in_fan_out`; a config that says otherwise gets PEFT's warning.

Randomness: without a `generator`, A (and B with init_lora_weights=False) draw from torch's global RNG
exactly as PEFT's do. With one, the factors are built on the meta device (nn.Linear's constructor would
draw from the global RNG) and filled from that generator alone: a shared server never moves the
process-wide stream, and the same seed gives the same factors on any device.

How the factors start (init_lora_weights, PiSSA, OLoRA) is inits.py.

Merging is explicit and out of place: `merge()` swaps in a new weight W + ΔW (computed in fp32)
and keeps the original tensor, so a frozen base shared by several models is never written and
`unmerge()` restores W bit for bit. `.eval()` never merges (loralib's trap).

Speed, same numbers: on CPU `LoraLinear` may compute that formula by a measured fast path
(fused.py: one autograd node, or one fused addmm). `forward_path = "plain"` switches it off; tests pin
every path to the plain formula, gradients included, and docs/performance.md has the measurements.

Quantized bases (quant/nf4.py) are not imported here: like PEFT's dispatchers, their module registers
its base type and the LoRA layer that wraps it (`register_dispatch`).
"""

from __future__ import annotations

import warnings

import torch
import torch.nn as nn
import torch.nn.functional as F
from transformers.pytorch_utils import Conv1D

from . import fused
from .config import LoraConfig
from .inits import init_factors

LINEAR_TYPES = (nn.Linear, Conv1D)
SUPPORTED_TYPES = (*LINEAR_TYPES, nn.Embedding, nn.Conv2d)

# Other Linear-like base types (a quantized Linear: quant/nf4.py) -> the LoRA layer class that wraps them.
DISPATCH: dict[type[nn.Module], type[LoraLayer]] = {}


def register_dispatch(base_type: type[nn.Module], lora_type: type[LoraLayer]) -> None:
    """Teach `make_lora_layer` a new base type (PEFT's dispatch_* functions); it needs in/out_features.

    `lora_type(base_layer, cfg, generator=..., fan_in_fan_out=...)` builds the LoRA layer (LoraLinear's signature).
    """
    DISPATCH[base_type] = lora_type


def weight_device_dtype(layer: nn.Module) -> tuple[torch.device, torch.dtype]:
    """Where a base layer's weight lives and its dtype, without building it (a quantized base says itself)."""
    if hasattr(layer, "weight_device_dtype"):
        return layer.weight_device_dtype()
    return layer.weight.device, layer.weight.dtype


def fan_in_fan_out_for(base_layer: nn.Module, requested: bool | None) -> bool:
    """The weight layout of `base_layer`, as PEFT's dispatch_default settles it: (in, out) for Conv1D only.

    A flag that contradicts the layer type gets PEFT's warning and is overridden; None says nothing.
    A registered (quantized) Linear stores (out, in), and PEFT's bnb layers set False without a word.
    """
    if isinstance(base_layer, tuple(DISPATCH)):
        return False
    if isinstance(base_layer, Conv1D):
        if requested is False:
            warnings.warn("fan_in_fan_out is set to False but the target module is `Conv1D`. "
                          "Setting fan_in_fan_out to True.", stacklevel=3)
        return True
    if requested:
        warnings.warn("fan_in_fan_out is set to True but the target module is `torch.nn.Linear`. "
                      "Setting fan_in_fan_out to False.", stacklevel=3)
    return False


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


class LoraLayer(nn.Module):
    """Base class: holds the frozen `base_layer`, the factors, `scaling` and the `merged` flag."""

    fan_in_fan_out = False  # True when the base weight is stored transposed, (in, out)

    def __init__(self, base_layer: nn.Module, in_features: int, out_features: int, cfg: LoraConfig):
        super().__init__()
        self.base_layer = base_layer
        self.in_features, self.out_features = in_features, out_features
        self.r, self.lora_alpha, self.use_rslora = cfg.r, cfg.lora_alpha, cfg.use_rslora
        self.scaling = cfg.scaling
        # p = 0 gets no dropout module at all: nn.Identity costs nothing and hides nothing
        self.lora_dropout = nn.Dropout(cfg.lora_dropout) if cfg.lora_dropout > 0 else nn.Identity()
        self.merged = False
        self.disabled = False

    # --- the pieces every layer type defines ----------------------------------------------
    def factors(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, A) as matrices, (out, r) and (r, in), so that ΔW = B @ A * scaling."""
        return self.lora_B.weight.flatten(1), self.lora_A.weight.flatten(1)

    def delta_weight(self) -> torch.Tensor:
        """ΔW = B @ A * scaling in fp32, shape (out_features, in_features) like nn.Linear."""
        B, A = self.factors()
        return (B.float() @ A.float()) * self.scaling  # (out, r) @ (r, in) -> (out, in)

    def _delta_in_weight_layout(self) -> torch.Tensor:
        """ΔW laid out like base_layer.weight (transposed for Conv1D and Embedding)."""
        delta = self.delta_weight()
        return delta.T if self.fan_in_fan_out else delta

    def lora_branch(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    # --- forward ----------------------------------------------------------------------------
    def forward(self, x: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        """base_layer(x) + lora_B(lora_A(lora_dropout(x))) * scaling, in the base's dtype."""
        result = self.base_layer(x, *args, **kwargs)
        if self.disabled or self.merged:
            return result
        return (result + self.lora_branch(x)).to(result.dtype)

    # --- merge / unmerge --------------------------------------------------------------------
    def merge(self) -> None:
        """Fold ΔW into a new base weight. Repeating it warns and does nothing."""
        if self.merged:
            warnings.warn("LoRA layer is already merged; merge() did nothing.", stacklevel=2)
            return
        w = self.base_layer.weight
        # Add in fp32 and round once, so bf16/fp16 bases lose no more than one rounding.
        merged = (w.detach().float() + self._delta_in_weight_layout()).to(w.dtype)
        # Keep W itself for unmerge as a non-persistent buffer: it moves with .to() but is neither a
        # parameter (PEFT's counts) nor in state_dict() (PEFT's keys), and W's storage is never written.
        self.register_buffer("unmerged_weight", w, persistent=False)
        self.base_layer.weight = nn.Parameter(merged, requires_grad=False)
        self.merged = True

    def unmerge(self) -> None:
        """Put the original base weight back (bit-exact). Repeating it warns and does nothing."""
        if not self.merged:
            warnings.warn("LoRA layer is not merged; unmerge() did nothing.", stacklevel=2)
            return
        w = self.unmerged_weight
        del self.unmerged_weight
        # The same Parameter object comes back, unless .to() replaced the buffer with a moved tensor.
        self.base_layer.weight = w if isinstance(w, nn.Parameter) else nn.Parameter(w, requires_grad=False)
        self.merged = False

    def original_weight(self) -> torch.Tensor:
        """The base weight W without ΔW, merged or not (in base_layer.weight's own layout)."""
        return self.unmerged_weight if self.merged else self.base_layer.weight

    def extra_repr(self) -> str:
        return (f"in={self.in_features}, out={self.out_features}, r={self.r}, "
                f"scaling={self.scaling:g}, merged={self.merged}")


class LoraLinear(LoraLayer):
    """LoRA around nn.Linear (weight (out, in)) or GPT-2's Conv1D (weight (in, out)).

    `forward_path` picks how the same numbers are computed (fused.FORWARD_PATHS): "one-node" (the
    default: the fastest exact path fused.py knows for this input), "addmm" or "plain" (the formula as
    written, nothing else). It exists to measure and to teach; all three agree to rounding.
    """

    def __init__(self, base_layer: nn.Module, cfg: LoraConfig, generator: torch.Generator | None = None,
                 fan_in_fan_out: bool | None = None):
        device, dtype = weight_device_dtype(base_layer)  # free on a quantized base: W is not rebuilt
        in_f, out_f = in_out_features(base_layer)
        super().__init__(base_layer, in_f, out_f, cfg)
        self._forward_path = "one-node"
        # Conv1D computes x @ W + b with W stored (in, out): the transpose of nn.Linear. `fan_in_fan_out`
        # is the flag as it stands in PEFT's injection loop (cfg's, unless inject_lora passes it on).
        requested = cfg.fan_in_fan_out if fan_in_fan_out is None else fan_in_fan_out
        self.fan_in_fan_out = fan_in_fan_out_for(base_layer, requested)
        kw = dict(device=device, dtype=adapter_dtype(dtype), generator=generator)
        self.lora_A = factor(nn.Linear, in_f, cfg.r, **kw)   # weight (r, in)
        self.lora_B = factor(nn.Linear, cfg.r, out_f, **kw)  # weight (out, r)
        init_factors(self, cfg.init_lora_weights, generator)

    def lora_branch(self, x: torch.Tensor) -> torch.Tensor:
        x = self.lora_dropout(x.to(self.lora_A.weight.dtype))  # dropout hits x, never A or B
        # (..., in) @ A.T -> (..., r) @ B.T -> (..., out)
        return self.lora_B(self.lora_A(x)) * self.scaling

    def forward(self, x: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        if self._forward_path != "plain" and not (args or kwargs):
            fast = fused.forward(self, x)  # None where a fast path would not be exact or would not pay
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
    transposed into the (num_embeddings, embedding_dim) table. PEFT applies no dropout here.
    """

    fan_in_fan_out = True

    def __init__(self, base_layer: nn.Embedding, cfg: LoraConfig, generator: torch.Generator | None = None):
        w = base_layer.weight
        num, dim = w.shape
        super().__init__(base_layer, num, dim, cfg)
        kw = dict(device=w.device, dtype=adapter_dtype(w.dtype), generator=generator)
        self.lora_A = factor(nn.Linear, num, cfg.r, **kw)  # weight (r, num_embeddings)
        self.lora_B = factor(nn.Linear, cfg.r, dim, **kw)  # weight (dim, r)
        init_factors(self, cfg.init_lora_weights, generator)

    def lora_branch(self, x: torch.Tensor) -> torch.Tensor:
        e = self.base_layer
        # look up rows of A.T: (..., ) -> (..., r); then (..., r) @ B.T -> (..., dim)
        after_a = F.embedding(x, self.lora_A.weight.T, e.padding_idx, e.max_norm,
                              e.norm_type, e.scale_grad_by_freq, e.sparse)
        return self.lora_B(after_a) * self.scaling


class LoraConv2d(LoraLayer):
    """LoRA around nn.Conv2d: A is a conv with the base's kernel and r channels, B a 1x1 conv."""

    def __init__(self, base_layer: nn.Conv2d, cfg: LoraConfig, generator: torch.Generator | None = None):
        w = base_layer.weight  # (out, in, kh, kw)
        super().__init__(base_layer, base_layer.in_channels, base_layer.out_channels, cfg)
        kw = dict(device=w.device, dtype=adapter_dtype(w.dtype), generator=generator)
        b = base_layer
        self.lora_A = factor(nn.Conv2d, b.in_channels, cfg.r, b.kernel_size, b.stride, b.padding,
                             b.dilation, padding_mode=b.padding_mode, **kw)
        self.lora_B = factor(nn.Conv2d, cfg.r, b.out_channels, 1, 1, **kw)
        init_factors(self, cfg.init_lora_weights, generator)

    def delta_weight(self) -> torch.Tensor:
        """ΔW in the conv weight's own shape (out, in, kh, kw)."""
        B, A = self.factors()  # (out, r), (r, in*kh*kw)
        return ((B.float() @ A.float()) * self.scaling).view_as(self.base_layer.weight)

    def lora_branch(self, x: torch.Tensor) -> torch.Tensor:
        x = self.lora_dropout(x.to(self.lora_A.weight.dtype))
        return self.lora_B(self.lora_A(x)) * self.scaling


def in_out_features(layer: nn.Module) -> tuple[int, int]:
    """(in_features, out_features) of a supported base layer."""
    if isinstance(layer, Conv1D):
        return tuple(layer.weight.shape)  # stored (in, out)
    if isinstance(layer, (nn.Linear, *DISPATCH)):  # a registered (quantized) Linear too
        return layer.in_features, layer.out_features
    if isinstance(layer, nn.Embedding):
        return layer.num_embeddings, layer.embedding_dim
    if isinstance(layer, nn.Conv2d):
        return layer.in_channels, layer.out_channels
    raise ValueError(f"{type(layer).__name__} is not a layer type LoRA can wrap: "
                     "allowed layer types are Linear, Conv1D, Embedding and Conv2d")


def is_supported(layer: nn.Module) -> bool:
    """Whether LoRA can wrap `layer`: a built-in type, or one a registered dispatcher knows."""
    return isinstance(layer, (*SUPPORTED_TYPES, *DISPATCH))


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
                    generator: torch.Generator | None = None, fan_in_fan_out: bool | None = None) -> LoraLayer:
    """Wrap `base_layer` in the LoRA layer of its type; a clear ValueError for anything else.

    `generator` seeds the factors locally (see the module docstring); `fan_in_fan_out` overrides
    cfg.fan_in_fan_out for a Linear or Conv1D (inject_lora carries PEFT's running value).
    """
    check_lora_target(base_layer, cfg, name)
    for base_type, lora_type in DISPATCH.items():
        if isinstance(base_layer, base_type):
            return lora_type(base_layer, cfg, generator=generator, fan_in_fan_out=fan_in_fan_out)
    if isinstance(base_layer, LINEAR_TYPES):
        return LoraLinear(base_layer, cfg, generator=generator, fan_in_fan_out=fan_in_fan_out)
    if isinstance(base_layer, nn.Embedding):
        return LoraEmbedding(base_layer, cfg, generator=generator)
    return LoraConv2d(base_layer, cfg, generator=generator)
