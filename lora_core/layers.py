"""LoRA layers: a frozen base layer plus a trainable low-rank update, with PEFT's semantics.

    h = base_layer(x) + lora_B(lora_A(lora_dropout(x))) * scaling        (LoRA, arXiv 2106.09685, eq. 3)

`lora_A` maps in_features -> r and `lora_B` maps r -> out_features, so as matrices
ΔW = B @ A * scaling has the base layer's (out_features, in_features) shape. A starts
Kaiming-uniform and B at zero, so ΔW = 0 and the adapted model starts exactly where the base was.

Supported base layers (those PEFT and loralib support): nn.Linear, GPT-2's Conv1D (weight stored
(in, out), so `fan_in_fan_out=True`), nn.Embedding and nn.Conv2d. Names follow
peft/tuners/lora/layer.py so that state-dict keys line up with PEFT's adapter files.

Merging is explicit and out of place: `merge()` swaps in a new weight W + ΔW (computed in fp32)
and keeps the original tensor, so a frozen base shared by several models is never written and
`unmerge()` restores W bit for bit. `.eval()` never merges (loralib's trap).

Speed, same numbers: on CPU, from 64 tokens up, LoraLinear computes the forward above as one
autograd node over the base GEMM (`FusedLoraLinear` in fused.py: the scale folded into an in-place addmm, no
(..., out)-wide temporaries, dx summed in place). Everywhere else it runs base_layer(x) plus one fused
addmm (`add_lora`), and the plain formula under torch.compile or when a hook on lora_B must see it
called. Tests pin every path to the plain formula, gradients included; docs/performance.md has the
measurements.
"""

from __future__ import annotations

import math
import warnings

import torch
import torch.nn as nn
import torch.nn.functional as F
from transformers.pytorch_utils import Conv1D

from .config import LoraConfig
from .fused import FUSABLE_BASES, ONE_NODE_MIN_TOKENS, FusedLoraLinear, fx_tracing, has_hooks
from .qlora import NF4Linear

LINEAR_TYPES = (nn.Linear, Conv1D, NF4Linear)  # NF4Linear: a 4-bit frozen base (QLoRA)
SUPPORTED_TYPES = (*LINEAR_TYPES, nn.Embedding, nn.Conv2d)


def adapter_dtype(weight: torch.Tensor) -> torch.dtype:
    """LoRA factors train in fp32 when the base is fp16/bf16 (PEFT's autocast_adapter_dtype)."""
    return torch.float32 if weight.dtype in (torch.float16, torch.bfloat16) else weight.dtype


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
        self._unmerged_weight: nn.Parameter | None = None

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
        result = self.base_layer(x, *args, **kwargs)
        if self.disabled or self.merged:
            return result
        return self.add_lora(result, x)

    def add_lora(self, result: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """result + lora_branch(x), in result's dtype: the plain formula (LoraLinear fuses it)."""
        return (result + self.lora_branch(x)).to(result.dtype)

    # --- merge / unmerge --------------------------------------------------------------------
    def merge(self) -> None:
        """Fold ΔW into a new base weight. Repeating it warns and does nothing."""
        if self.merged:
            warnings.warn("LoRA layer is already merged; merge() did nothing.", stacklevel=2)
            return
        if isinstance(self.base_layer, NF4Linear):
            raise ValueError("merge is not allowed on a 4-bit (NF4) base: W + ΔW would have to be quantized "
                             "again, losing most of ΔW. Merge into a full-precision copy of the model instead.")
        w = self.base_layer.weight
        # Add in fp32 and round once, so bf16/fp16 bases lose no more than one rounding.
        merged = (w.detach().float() + self._delta_in_weight_layout()).to(w.dtype)
        self._unmerged_weight = w
        self.base_layer.weight = nn.Parameter(merged, requires_grad=False)
        self.merged = True

    def unmerge(self) -> None:
        """Put the original base weight back (bit-exact). Repeating it warns and does nothing."""
        if not self.merged:
            warnings.warn("LoRA layer is not merged; unmerge() did nothing.", stacklevel=2)
            return
        self.base_layer.weight = self._unmerged_weight
        self._unmerged_weight = None
        self.merged = False

    def extra_repr(self) -> str:
        return (f"in={self.in_features}, out={self.out_features}, r={self.r}, "
                f"scaling={self.scaling:g}, merged={self.merged}")


FORWARD_PATHS = ("one-node", "addmm", "plain")


class LoraLinear(LoraLayer):
    """LoRA around nn.Linear (weight (out, in)) or GPT-2's Conv1D (weight (in, out)).

    `forward_path` picks how the same numbers are computed: "one-node" (the default: one autograd node
    where that is exact and measured to pay, else "addmm"), "addmm" (base_layer(x), then one fused
    addmm for the branch) or "plain" (the formula as written). It exists to measure and to teach;
    all three agree to rounding.
    """

    def __init__(self, base_layer: nn.Module, cfg: LoraConfig):
        self._forward_path = "one-node"
        w = base_layer.weight
        in_f, out_f = in_out_features(base_layer)
        super().__init__(base_layer, in_f, out_f, cfg)
        # Conv1D computes x @ W + b with W stored (in, out): the transpose of nn.Linear.
        self.fan_in_fan_out = isinstance(base_layer, Conv1D)
        kw = dict(bias=False, device=w.device, dtype=adapter_dtype(w))
        self.lora_A = nn.Linear(in_f, cfg.r, **kw)   # weight (r, in)
        self.lora_B = nn.Linear(cfg.r, out_f, **kw)  # weight (out, r)
        init_factors(self, cfg.init_lora_weights)

    def lora_branch(self, x: torch.Tensor) -> torch.Tensor:
        x = self.lora_dropout(x.to(self.lora_A.weight.dtype))  # dropout hits x, never A or B
        # (..., in) @ A.T -> (..., r) @ B.T -> (..., out)
        return self.lora_B(self.lora_A(x)) * self.scaling

    @property
    def forward_path(self) -> str:
        return self._forward_path

    @forward_path.setter
    def forward_path(self, path: str) -> None:
        if path not in FORWARD_PATHS:
            raise ValueError(f"forward_path={path!r} is not allowed: choose one of {', '.join(FORWARD_PATHS)}")
        self._forward_path = path

    def forward(self, x: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        if args or kwargs or self._forward_path != "one-node" or not self._fusable(x):
            return super().forward(x, *args, **kwargs)
        base = self.base_layer
        # Dropout hits only the LoRA input; without it (p = 0, or eval mode) the branch reads x itself.
        xa = self.lora_dropout(x.to(self.lora_A.weight.dtype)) if self.training and self._has_dropout else None
        return FusedLoraLinear.apply(x, xa, base.weight, base.bias, self.lora_A.weight, self.lora_B.weight,
                                      self.scaling, self.fan_in_fan_out)

    @property
    def _has_dropout(self) -> bool:
        return not isinstance(self.lora_dropout, nn.Identity)

    def _fusable(self, x: torch.Tensor) -> bool:
        """Whether the one-node path computes exactly what base_layer(x) + add_lora would, and pays.

        Exact: only for a plain nn.Linear / Conv1D base (not a subclass, not NF4) that no hook watches,
        outside torch.compile / FX tracing (the compiler fuses the plain ops itself) and autocast.
        Pays: measured on CPU only, and only from ONE_NODE_MIN_TOKENS tokens up; below that its Python
        backward costs more than it saves (docs/performance.md). Elsewhere `add_lora` runs.
        """
        base = self.base_layer
        if (type(base) not in FUSABLE_BASES or self.disabled or self.merged or x.device.type != "cpu"
                or x.dtype != base.weight.dtype or x.numel() < ONE_NODE_MIN_TOKENS * x.shape[-1]):
            return False
        if any(has_hooks(m) for m in (base, self.lora_A, self.lora_B, self.lora_dropout)):
            return False
        return not (torch.is_autocast_enabled(x.device.type) or torch.compiler.is_compiling() or fx_tracing())

    def add_lora(self, result: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """result + scaling · B(A(dropout(x))) with B's GEMM, the scale and the add fused into one addmm.

        The plain formula makes two (..., out) temporaries, B's output and its scaled copy, then a third
        for the sum, and its backward multiplies the (..., out) gradient by the scale once more. One
        addmm(result, h, Bᵀ, alpha=scaling) writes the sum directly; its backward hands `result` the
        gradient as is and puts the scale on r-wide tensors. Same values (to rounding), same gradients,
        the same tensors saved (x, shared with the base layer, and the r-wide h). docs/performance.md
        has the measurements. A hook on lora_B needs lora_B to be called, so it gets the plain formula;
        so does torch.compile, whose compiler fuses the plain ops itself (measured ~1% faster there).
        """
        if self._forward_path == "plain" or has_hooks(self.lora_B) or torch.compiler.is_compiling():
            return super().add_lora(result, x)  # under torch.compile the plain ops fuse as well, and measured faster
        h = self.lora_A(self.lora_dropout(x.to(self.lora_A.weight.dtype)))  # (..., r); lora_A's hooks still run
        acc, h = result.reshape(-1, self.out_features), h.reshape(-1, self.r)  # (N, out), (N, r)
        if acc.dtype != h.dtype:  # a bf16 base with fp32 factors: add in the wider dtype, as `result + branch`
            acc = acc.to(torch.promote_types(acc.dtype, h.dtype))
        out = torch.addmm(acc, h, self.lora_B.weight.T, alpha=self.scaling)  # (N, out) + s · (N, r) @ (r, out)
        return out.view(result.shape).to(result.dtype)


class LoraEmbedding(LoraLayer):
    """LoRA around nn.Embedding. A is (r, num_embeddings), B is (embedding_dim, r), as in PEFT.

    A token id picks a column of A, so ΔW is (embedding_dim, num_embeddings) and is written
    transposed into the (num_embeddings, embedding_dim) table. PEFT applies no dropout here.
    """

    fan_in_fan_out = True

    def __init__(self, base_layer: nn.Embedding, cfg: LoraConfig):
        w = base_layer.weight
        num, dim = w.shape
        super().__init__(base_layer, num, dim, cfg)
        kw = dict(bias=False, device=w.device, dtype=adapter_dtype(w))
        self.lora_A = nn.Linear(num, cfg.r, **kw)  # weight (r, num_embeddings)
        self.lora_B = nn.Linear(cfg.r, dim, **kw)  # weight (dim, r)
        init_factors(self, cfg.init_lora_weights)

    def lora_branch(self, x: torch.Tensor) -> torch.Tensor:
        e = self.base_layer
        # look up rows of A.T: (..., ) -> (..., r); then (..., r) @ B.T -> (..., dim)
        after_a = F.embedding(x, self.lora_A.weight.T, e.padding_idx, e.max_norm,
                              e.norm_type, e.scale_grad_by_freq, e.sparse)
        return self.lora_B(after_a) * self.scaling


class LoraConv2d(LoraLayer):
    """LoRA around nn.Conv2d: A is a conv with the base's kernel and r channels, B a 1x1 conv."""

    def __init__(self, base_layer: nn.Conv2d, cfg: LoraConfig):
        w = base_layer.weight  # (out, in, kh, kw)
        super().__init__(base_layer, base_layer.in_channels, base_layer.out_channels, cfg)
        kw = dict(bias=False, device=w.device, dtype=adapter_dtype(w))
        b = base_layer
        self.lora_A = nn.Conv2d(b.in_channels, cfg.r, b.kernel_size, b.stride, b.padding,
                                b.dilation, padding_mode=b.padding_mode, **kw)
        self.lora_B = nn.Conv2d(cfg.r, b.out_channels, 1, 1, **kw)
        init_factors(self, cfg.init_lora_weights)

    def delta_weight(self) -> torch.Tensor:
        """ΔW in the conv weight's own shape (out, in, kh, kw)."""
        B, A = self.factors()  # (out, r), (r, in*kh*kw)
        return ((B.float() @ A.float()) * self.scaling).view_as(self.base_layer.weight)

    def lora_branch(self, x: torch.Tensor) -> torch.Tensor:
        x = self.lora_dropout(x.to(self.lora_A.weight.dtype))
        return self.lora_B(self.lora_A(x)) * self.scaling


def init_factors(layer: LoraLayer, init: bool | str) -> None:
    """PEFT's reset_lora_parameters, plus PiSSA."""
    A, B = layer.lora_A.weight, layer.lora_B.weight
    with torch.no_grad():
        if init is False:  # both random: a non-zero ΔW from step 0 (tests, demos)
            if isinstance(layer, LoraEmbedding):
                A.normal_()
                B.normal_()
            return  # nn.Linear / nn.Conv2d already gave A and B their Kaiming-uniform init
        if isinstance(layer, LoraEmbedding):
            # PEFT follows loralib here: A zero, B normal (ΔW = 0 all the same)
            A.zero_()
            B.normal_()
            return
        if init == "pissa":
            pissa_init(layer)
            return
        if init == "gaussian":
            A.normal_(std=1 / layer.r)
        else:
            nn.init.kaiming_uniform_(A, a=math.sqrt(5))
        B.zero_()


def pissa_init(layer: LoraLayer) -> None:
    """PiSSA (arXiv 2404.02948): A, B from the top-r SVD of W; W becomes the residual.

    The residual is a *new* tensor: the original base weight (maybe shared) is not written.
    """
    if layer.base_layer.weight.is_meta:
        return
    w = layer.base_layer.weight
    W = w.detach().float()
    W = W.T if layer.fan_in_fan_out else W  # (out, in)
    U, S, Vh = torch.linalg.svd(W, full_matrices=False)  # W = U diag(S) Vh
    r = layer.r
    sqrt_s = torch.sqrt(S[:r] / layer.scaling)
    B = U[:, :r] * sqrt_s           # (out, r)
    A = sqrt_s[:, None] * Vh[:r]    # (r, in)
    layer.lora_A.weight.copy_(A)
    layer.lora_B.weight.copy_(B)
    residual = W - layer.scaling * (B @ A)  # (out, r) @ (r, in) -> (out, in)
    residual = residual.T if layer.fan_in_fan_out else residual
    layer.base_layer.weight = nn.Parameter(residual.to(w.dtype).contiguous(), requires_grad=False)


def in_out_features(layer: nn.Module) -> tuple[int, int]:
    """(in_features, out_features) of a supported base layer."""
    if isinstance(layer, Conv1D):
        return tuple(layer.weight.shape)  # stored (in, out)
    if isinstance(layer, (nn.Linear, NF4Linear)):
        return layer.in_features, layer.out_features
    if isinstance(layer, nn.Embedding):
        return layer.num_embeddings, layer.embedding_dim
    if isinstance(layer, nn.Conv2d):
        return layer.in_channels, layer.out_channels
    raise ValueError(f"{type(layer).__name__} is not a layer type LoRA can wrap: "
                     "allowed layer types are Linear, Conv1D, Embedding and Conv2d")


def check_lora_target(base_layer: nn.Module, cfg: LoraConfig, name: str = "") -> None:
    """Raise a ValueError naming the layer if `cfg` cannot be applied to `base_layer`."""
    if isinstance(base_layer, LoraLayer):
        raise ValueError(f"target module {name!r} already has LoRA: remove it first (inject once)")
    if not isinstance(base_layer, SUPPORTED_TYPES):
        raise ValueError(f"target module {name!r} is a {type(base_layer).__name__}, which LoRA cannot wrap: "
                         "allowed layer types are Linear, Conv1D, Embedding and Conv2d")
    in_f, out_f = in_out_features(base_layer)
    if cfg.r > min(in_f, out_f):
        raise ValueError(f"r={cfg.r} is too large for {name!r} ({in_f}→{out_f}): "
                         f"r must be at most min(in, out) = {min(in_f, out_f)}")
    if isinstance(base_layer, nn.Conv2d) and base_layer.groups != 1:
        raise ValueError(f"target module {name!r} has groups={base_layer.groups}: "
                         "LoRA Lab wraps Conv2d layers with groups=1 only")
    if cfg.init_lora_weights == "pissa" and not isinstance(base_layer, (nn.Linear, Conv1D)):
        raise ValueError(f"init_lora_weights='pissa' is not allowed on {name!r} "
                         f"({type(base_layer).__name__}): PiSSA is defined for Linear and Conv1D layers")


def make_lora_layer(base_layer: nn.Module, cfg: LoraConfig, name: str = "") -> LoraLayer:
    """Wrap `base_layer` in the LoRA layer of its type; a clear ValueError for anything else."""
    check_lora_target(base_layer, cfg, name)
    if isinstance(base_layer, LINEAR_TYPES):
        return LoraLinear(base_layer, cfg)
    if isinstance(base_layer, nn.Embedding):
        return LoraEmbedding(base_layer, cfg)
    return LoraConv2d(base_layer, cfg)
