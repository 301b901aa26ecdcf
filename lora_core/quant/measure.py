"""Training memory, measured: one real training step, its bytes counted tensor by tensor.

    from lora_core.quant import measure, memory
    cfg = memory.MemoryConfig(model="distilgpt2", method="lora", r=8, target_modules=["c_attn"],
                              batch_size=2, seq_len=128)
    m = measure.measure_step(cfg)                      # builds the model, runs forward, backward, one step
    measure.compare(m, memory.estimate_memory(cfg))    # per component: both numbers, the ratio, why they differ

The model has the real shapes of a shipped config (distilgpt2, SmolLM2-135M), built on the meta device and
given memory in its final dtype; no byte count depends on the weights' values, so they are a pool drawn from
a local torch.Generator and tiled (measured_model.py). QLoRA's base is lora_core's own NF4Linear (quant/nf4.py). Each
component of `memory.COMPONENTS` is read from the objects that hold it, never from a formula:

* weights: every unique parameter (a tied embedding once) and buffer, by dtype; NF4's packed codes;
* quantization constants: NF4Linear's absmax and codebook buffers;
* gradients: `p.grad` of every trainable parameter after backward;
* optimizer states: every tensor in `optimizer.state` after one step;
* activations: what autograd saved for backward, seen by `torch.autograd.graph.saved_tensors_hooks`
  and deduplicated by storage (a view and its base, or one tensor saved twice, count once); storages
  of parameters and buffers are weights, not activations. Under gradient checkpointing the inputs a
  checkpointed layer keeps for its recomputation are counted too (torch holds them outside autograd's
  saved tensors when use_reentrant=False). Each saved tensor is tagged with the module whose forward
  saved it, read from the Python stack: no module hook, so the forward runs exactly as in training.

On CUDA, `torch.cuda.max_memory_allocated` is reported as well. Nothing here seeds or sets anything
process-wide. Korthikanti et al. 2022 (arXiv 2205.05198) is the estimate's activation model; QLoRA
(arXiv 2305.14314); ZeRO's 16 B/param mixed precision (arXiv 1910.02054).
"""

from __future__ import annotations

import sys
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch
from torch import nn

from ..config import reject
from .measured_model import MEASURABLE_MODELS, build_model, narrow_description, random_base
from .memory import COMPONENTS, GIB, MemoryConfig, estimate_memory
from .nf4 import NF4Linear

TARGET_PRESETS = {  # label -> target_modules, per measured model (what the page offers)
    "distilgpt2": {"c_attn": ["c_attn"], "c_attn, c_proj": ["c_attn", "c_proj"], "all-linear": "all-linear"},
    "SmolLM2-135M": {"q_proj, v_proj": ["q_proj", "v_proj"], "q, k, v, o": ["q_proj", "k_proj", "v_proj", "o_proj"],
                     "all-linear": "all-linear"},
}

MB = 1e6
_TORCH_DIR = str(Path(torch.__file__).parent)


@dataclass(frozen=True)
class SavedTensor:
    """One storage autograd kept for backward (or a checkpointed layer kept for its recomputation)."""

    module: str          # the innermost module whose forward saved it ("" is the model's own forward)
    kind: str            # that module's class name
    op: str              # the innermost function outside torch that saved it (e.g. sdpa_attention_forward)
    shape: tuple[int, ...]
    dtype: str
    bytes: int           # the storage's bytes (a view keeps its whole base alive)
    via: str = "autograd"  # or "checkpoint input"


@dataclass(frozen=True)
class MeasuredMemory:
    """Bytes per component of one measured training step, with where each byte came from."""

    config: MemoryConfig | None         # None for a model measured by count_step alone
    weights: int
    quant_constants: int
    gradients: int
    optimizer: int
    activations: int
    detail: dict[str, dict[str, int]]   # component -> {"frozen bf16": bytes, "trainable fp32": bytes, ...}
    saved: tuple[SavedTensor, ...]      # largest first
    device: str
    cuda_peak: int | None               # torch.cuda.max_memory_allocated during the step; None off CUDA
    loss: float
    seconds: float
    counts: dict[str, int] = field(default_factory=dict)  # unique params, trainable params, quantized weights

    @property
    def total(self) -> int:
        return self.weights + self.quant_constants + self.gradients + self.optimizer + self.activations

    def breakdown(self) -> dict[str, int]:
        """Bytes per component, in the order of memory.COMPONENTS."""
        values = (self.weights, self.quant_constants, self.gradients, self.optimizer, self.activations)
        return dict(zip(COMPONENTS, values, strict=True))

    def saved_by_site(self, top: int = 10) -> list[dict]:
        """The saved bytes grouped by (module class, function), largest first: where activations come from."""
        groups: dict[tuple[str, str, str, str], list[int]] = defaultdict(lambda: [0, 0])
        for t in self.saved:
            g = groups[(t.kind, t.op, t.dtype, t.via)]
            g[0] += t.bytes
            g[1] += 1
        rows = [{"module kind": k, "function": op, "dtype": dt, "via": via, "tensors": n, "MB": b / MB,
                 "share": b / max(self.activations, 1)} for (k, op, dt, via), (b, n) in groups.items()]
        return sorted(rows, key=lambda r: -r["MB"])[:top]

    def biggest_saved(self, top: int = 10) -> list[dict]:
        """The largest single saved storages, with the module that saved them."""
        return [{"module": t.module or "(model)", "kind": t.kind, "function": t.op, "shape": str(list(t.shape)),
                 "dtype": t.dtype, "MB": t.bytes / MB, "via": t.via} for t in self.saved[:top]]


# --- the optimizers -------------------------------------------------------------------------------------------------
class WideAdamW(torch.optim.Optimizer):
    """AdamW whose moments are fp32 whatever the parameter's dtype, and, with `master_weights`, which also
    keeps an fp32 copy of every 16-bit weight and updates that (mixed precision). The 12 and 16 B/param
    recipes made real, so their bytes are read from `optimizer.state` like torch.optim.AdamW's."""

    def __init__(self, params, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0.01, master_weights: bool = False):
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay))
        self.master_weights = master_weights

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            lr, (b1, b2), eps, wd = group["lr"], group["betas"], group["eps"], group["weight_decay"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if not state:
                    state["step"] = torch.zeros((), dtype=torch.float32, device=p.device)
                    state["exp_avg"] = torch.zeros_like(p, dtype=torch.float32)
                    state["exp_avg_sq"] = torch.zeros_like(p, dtype=torch.float32)
                    if self.master_weights and p.dtype != torch.float32:
                        state["master_weight"] = p.detach().float()
                w = state.get("master_weight", p.detach().float())  # without a master: a transient fp32 copy
                g = p.grad.float()
                state["step"] += 1
                t = float(state["step"])
                w.mul_(1 - lr * wd)
                state["exp_avg"].lerp_(g, 1 - b1)
                state["exp_avg_sq"].mul_(b2).addcmul_(g, g, value=1 - b2)
                denom = (state["exp_avg_sq"] / (1 - b2**t)).sqrt_().add_(eps)
                w.addcdiv_(state["exp_avg"], denom, value=-lr / (1 - b1**t))
                p.copy_(w)


def make_optimizer(cfg: MemoryConfig, params: list[nn.Parameter]) -> torch.optim.Optimizer:
    """The optimizer `cfg` names, as a real one: torch's AdamW for "param" precision (moments in the
    parameter's dtype) and for fp32 parameters, WideAdamW for the "fp32" and "mixed" recipes, plain SGD."""
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=1e-3)
    if cfg.optimizer != "adamw":
        reject("optimizer", cfg.optimizer, "measured optimizers are 'adamw' and 'sgd' (8-bit AdamW needs "
               "bitsandbytes on CUDA, not installed here)")
    if cfg.optimizer_precision == "param" or all(p.dtype == torch.float32 for p in params):
        return torch.optim.AdamW(params, lr=1e-3, foreach=False)
    return WideAdamW(params, lr=1e-3, master_weights=cfg.optimizer_precision == "mixed")


# --- counting -------------------------------------------------------------------------------------------------------
def _nbytes(t: torch.Tensor) -> int:
    return t.untyped_storage().nbytes()


def _dtype(t: torch.Tensor) -> str:
    return str(t.dtype).removeprefix("torch.")


class _SavedRecorder:
    """Pack hook that records each saved storage once, with the module (read from the stack) that saved it."""

    def __init__(self, model: nn.Module):
        self.names = {id(m): (name, type(m).__name__) for name, m in model.named_modules()}
        self.weights = {_ptr(t) for t in [*model.parameters(), *model.buffers()]}
        self.seen: set[int] = set()
        self.saved: list[SavedTensor] = []

    def pack(self, t: torch.Tensor) -> torch.Tensor:
        self.add(t, "autograd")
        return t

    def add(self, t: torch.Tensor, via: str, site: tuple[str, str, str] | None = None) -> None:
        if not isinstance(t, torch.Tensor) or t.device.type == "meta":
            return
        ptr = _ptr(t)
        if ptr in self.weights or ptr in self.seen or _nbytes(t) == 0:
            return
        self.seen.add(ptr)
        module, kind, op = site or self._site()
        self.saved.append(SavedTensor(module, kind, op, tuple(t.shape), _dtype(t), _nbytes(t), via))

    def _site(self) -> tuple[str, str, str]:
        frame, op = sys._getframe(3), ""
        while frame is not None:
            code = frame.f_code
            if not op and not code.co_filename.startswith(_TORCH_DIR):
                op = code.co_name
            if code.co_varnames[:1] == ("self",) and (hit := self.names.get(id(frame.f_locals.get("self")))):
                return hit[0], hit[1], op
            frame = frame.f_back
        return "", "", op

    def watch_checkpoints(self, model: nn.Module) -> None:
        """Record the inputs every checkpointed layer keeps for its recomputation."""
        for name, module in model.named_modules():
            inner = getattr(module, "_gradient_checkpointing_func", None)
            if inner is None or not getattr(module, "gradient_checkpointing", False):
                continue

            site = (name, type(module).__name__, "checkpoint")

            def keep_inputs(function, *args, _inner=inner, _site=site, **kw):
                for a in args:
                    self.add(a, "checkpoint input", _site)
                return _inner(function, *args, **kw)
            module._gradient_checkpointing_func = keep_inputs


def _ptr(t: torch.Tensor) -> int:
    return t.untyped_storage().data_ptr()


def _unique(tensors) -> dict[int, torch.Tensor]:
    return {_ptr(t): t for t in tensors if t is not None}


def _by_dtype(tensors: dict[int, torch.Tensor], label: str = "") -> dict[str, int]:
    out: dict[str, int] = defaultdict(int)
    for t in tensors.values():
        out[f"{label}{_dtype(t)}".strip()] += _nbytes(t)
    return dict(out)


def _weights(model: nn.Module) -> tuple[dict[str, int], dict[str, int], int]:
    """(weights by role and dtype, quantization constants by name, quantized weight count)."""
    consts: dict[int, torch.Tensor] = {}
    packed: dict[int, torch.Tensor] = {}
    quantized = 0
    for m in model.modules():
        if isinstance(m, NF4Linear):
            consts |= _unique([m.absmax]) | _unique([m.codebook])
            packed |= _unique([m.packed])
            quantized += m.out_features * m.in_features
    params = list(model.parameters())
    trainable = _unique(p for p in params if p.requires_grad)
    frozen = {k: v for k, v in _unique(p for p in params if not p.requires_grad).items() if k not in trainable}
    buffers = {k: v for k, v in _unique(model.buffers()).items() if k not in consts and k not in packed}
    weights = {**_by_dtype(frozen, "frozen "), **_by_dtype(trainable, "trainable "),
               **_by_dtype(buffers, "buffers ")}
    if packed:
        weights["frozen nf4 (packed uint8)"] = sum(_nbytes(t) for t in packed.values())
    constants: dict[str, int] = defaultdict(int)
    for t in consts.values():  # the 16-level table of each layer, and one absmax per block
        constants["codebook " + _dtype(t) if t.numel() == 16 and t.dim() == 1 else "absmax " + _dtype(t)] += _nbytes(t)
    return weights, dict(constants), quantized


def measure_step(cfg: MemoryConfig, device: str | torch.device = "cpu", seed: int = 0,
                 max_estimated_bytes: int | None = None) -> MeasuredMemory:
    """Build `cfg`'s model, run one training step (forward, backward, optimizer step) on token ids drawn
    from a local generator, and count what each component really holds.

    `max_estimated_bytes` refuses (ValueError naming the field) a configuration whose estimate is larger:
    a shared server measures small steps only.
    """
    if max_estimated_bytes is not None and (need := estimate_memory(cfg).total) > max_estimated_bytes:
        reject("method", cfg.method, f"on {cfg.model} this step needs about {need / GIB:.2f} GiB by the estimate, "
               f"and steps are measured here up to {max_estimated_bytes / GIB:.2f} GiB: pick lora or qlora, a smaller "
               "batch or sequence, or distilgpt2")
    start = time.perf_counter()
    generator = torch.Generator().manual_seed(seed)
    model = build_model(cfg, device, generator)
    if cfg.gradient_checkpointing:
        model.activation_checkpointing_enable({"use_reentrant": False})  # transformers 5's own default
    model.train()
    params = list(_unique(p for p in model.parameters() if p.requires_grad).values())
    vocab = model.get_input_embeddings().num_embeddings
    ids = torch.randint(0, vocab, (cfg.batch_size, cfg.seq_len), generator=generator).to(device)
    m = count_step(model, make_optimizer(cfg, params), lambda: model(input_ids=ids, labels=ids).loss, cfg)
    return replace(m, seconds=time.perf_counter() - start)


def count_step(model: nn.Module, optimizer: torch.optim.Optimizer, compute_loss: Callable[[], torch.Tensor],
               config: MemoryConfig | None = None) -> MeasuredMemory:
    """Run `compute_loss()` (the forward), backward and `optimizer.step()` on any model, and count the bytes.

    The model's device is its first parameter's; on CUDA the allocator's peak over these three calls is kept.
    """
    start = time.perf_counter()
    device = next(model.parameters()).device
    params = list(_unique(p for group in optimizer.param_groups for p in group["params"]).values())
    cuda = device.type == "cuda"
    if cuda:
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
    recorder = _SavedRecorder(model)
    recorder.watch_checkpoints(model)
    with torch.autograd.graph.saved_tensors_hooks(recorder.pack, lambda t: t):
        loss = compute_loss()
    loss.backward()
    loss = loss.detach()
    grads = _by_dtype(_unique(p.grad for p in params))
    optimizer.step()
    peak = torch.cuda.max_memory_allocated(device) if cuda else None
    states = _by_dtype(_unique(t for s in optimizer.state.values() for t in s.values() if isinstance(t, torch.Tensor)))
    weights, constants, quantized = _weights(model)
    saved = tuple(sorted(recorder.saved, key=lambda t: -t.bytes))
    detail = {"weights": weights, "quantization constants": constants, "gradients": grads,
              "optimizer states": states, "activations": _saved_by_dtype(saved)}
    counts = {"unique parameters": sum(p.numel() for p in _unique(model.parameters()).values()),
              "trainable parameters": sum(p.numel() for p in params), "quantized weights": quantized,
              "saved tensors": len(saved)}
    return MeasuredMemory(config, sum(weights.values()), sum(constants.values()), sum(grads.values()),
                          sum(states.values()), sum(t.bytes for t in saved), detail, saved, str(device), peak,
                          loss.item(), time.perf_counter() - start, counts)


def _saved_by_dtype(saved: tuple[SavedTensor, ...]) -> dict[str, int]:
    out: dict[str, int] = defaultdict(int)
    for t in saved:
        out[f"{t.dtype} ({t.via})" if t.via != "autograd" else t.dtype] += t.bytes
    return dict(out)


from .explain import compare  # noqa: E402  (explain.py reads MeasuredMemory; re-exported as measure.compare)

__all__ = ["MEASURABLE_MODELS", "TARGET_PRESETS", "MeasuredMemory", "SavedTensor", "WideAdamW", "build_model",
           "compare", "count_step", "make_optimizer", "measure_step", "narrow_description", "random_base"]
