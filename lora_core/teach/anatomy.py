"""The anatomy of a LoRA adapter: where it attaches, what it adds, how dropout and init behave.

Each function measures one fact a page or lesson shows, on a real (or meta-device) module:

  * `block_tree`: one transformer block as a tree, each layer marked by whether `cfg` targets it;
  * `regex_vs_all_linear`: a popular regex over `print(model)` against what "all-linear" matches;
  * `trace_dropout`: forward hooks that show which tensor LoRA's dropout zeroes (x, not A or B);
  * `init_gallery`: each `init_lora_weights` mode on a real weight at step 0, PiSSA's residual;
  * `compare_notations`, `added_not_selected`: ΔW = B·A·(α/r) beside other notations, and that
    LoRA adds parameters instead of choosing a subset of the old ones;
  * `bias_mode_ledgers`, `rank_sweep`, `explain_claimed_count`: ledgers for teaching charts;
  * `attention_heads`: query against key/value heads in the shipped configs (which use grouped-query attention).

References: LoRA (arXiv 2106.09685), PiSSA (arXiv 2404.02948), PEFT's peft/tuners/lora/layer.py.
"""

from __future__ import annotations

import copy
import dataclasses
import re
from dataclasses import dataclass

import torch
import torch.nn as nn
from transformers.pytorch_utils import Conv1D

from ..config import BIAS_MODES, LoraConfig
from ..counting import Ledger, LedgerRow, count_lora_parameters
from ..inject import DEFAULT_TARGETS, inject_lora, matched_modules, output_layer_name
from ..layers import make_lora_layer
from ..models.sources import build_on_meta, load_config
from ..targets import SUPPORTED_TYPES, in_out_features
from .seeded import GeneratorDropout, generator, linear

# Seed 001's recipe for "all linear layers": names printed as `(name): Linear(...)`.
SEED_REGEX = r"\((\w+)\): Linear"


# --- where LoRA attaches -------------------------------------------------------------------------
@dataclass(frozen=True)
class ModuleNode:
    """One module of a block, for a tree picture."""

    name: str        # full module name, e.g. "transformer.h.0.attn.c_attn"
    parent: str      # full name of the parent node ("" for the block itself)
    label: str       # short name, e.g. "c_attn"
    kind: str        # class name: Conv1D, Linear, LayerNorm, GPT2Attention, ...
    role: str        # "block", "attention", "mlp", "norm" or "other"
    shape: str       # "768→2304" for layers LoRA can wrap, "" otherwise
    params: int      # parameters in this module and everything under it
    matched: bool    # True when `cfg` puts a LoRA adapter on this module


def _role(name: str) -> str:
    leaf = name.rsplit(".", 1)[-1]
    if "norm" in leaf or leaf.startswith("ln"):
        return "norm"
    if "attn" in name or "attention" in name:
        return "attention"
    if "mlp" in name:
        return "mlp"
    return "other"


def block_prefix(model: nn.Module, block: int = 0) -> str:
    """Full name of transformer block `block`, e.g. 'transformer.h.0' or 'model.layers.0'."""
    for name, _ in model.named_modules():
        parent, _, idx = name.rpartition(".")
        if idx == str(block) and isinstance(model.get_submodule(parent), nn.ModuleList):
            return name
    raise ValueError(f"block={block} is not a layer index of {type(model).__name__}")


def block_tree(model: nn.Module, cfg: LoraConfig, block: int = 0) -> list[ModuleNode]:
    """Block `block` of `model` as a tree of modules with parameters, each marked matched or not.

    A config that matches nothing in this model is fine here (everything is unmatched); use
    `inject_lora` or the ledger to get the error instead.
    """
    prefix = block_prefix(model, block)
    matched = set(matched_modules(model, cfg))
    nodes = []
    for name, module in model.get_submodule(prefix).named_modules(prefix=prefix):
        params = sum(p.numel() for p in module.parameters())
        if params == 0:
            continue  # activations, dropouts, rotary caches: nothing to adapt or count
        shape = ""
        if isinstance(module, SUPPORTED_TYPES):
            in_f, out_f = in_out_features(module)
            shape = f"{in_f}→{out_f}"
        nodes.append(ModuleNode(
            name=name, parent=name.rpartition(".")[0] if name != prefix else "",
            label=f"block {block}" if name == prefix else name.rsplit(".", 1)[-1],
            kind=type(module).__name__, role="block" if name == prefix else _role(name[len(prefix):]),
            shape=shape, params=params, matched=name in matched))
    return nodes


def regex_vs_all_linear(model: nn.Module, pattern: str = SEED_REGEX) -> dict:
    """What `re.findall(pattern, str(model))` finds, next to what target_modules="all-linear" wraps.

    GPT-2 prints its projections as `Conv1D(...)`, so the regex finds only `lm_head`, the one
    layer all-linear leaves out. Returns {'regex', 'all_linear' {short name: (type, count)},
    'all_linear_modules', 'excluded_output_layer', 'output_tied_to_embedding'}.
    """
    found = sorted(set(re.findall(pattern, str(model))))
    names = matched_modules(model, LoraConfig(target_modules="all-linear"))
    modules = dict(model.named_modules())
    kinds: dict[str, tuple[str, int]] = {}
    for name in names:
        short = name.rsplit(".", 1)[-1]
        kind, count = kinds.get(short, (type(modules[name]).__name__, 0))
        kinds[short] = (kind, count + 1)
    out, emb = model.get_output_embeddings(), model.get_input_embeddings()
    return {"regex": found, "all_linear": dict(sorted(kinds.items())), "all_linear_modules": len(names),
            "excluded_output_layer": output_layer_name(model),
            "output_tied_to_embedding": out is not None and out.weight is emb.weight}


# --- dropout ---------------------------------------------------------------------------------------
def trace_dropout(in_features: int = 64, out_features: int = 64, r: int = 4, p: float = 0.1,
                  train: bool = True, seed: int = 0, tokens: int = 256) -> dict:
    """Run one LoraLinear forward with hooks and report where zeros appear.

    Hooks record the input of the frozen base layer and of lora_A (= dropout(x)); A and B are
    snapshotted before and compared after. Returns fractions of exact zeros, whether A/B changed,
    the scale on surviving entries (1/(1-p) in train mode) and small zero-masks for a picture.

    Every draw comes from `generator(seed)`. nn.Dropout can only draw its mask from torch's global RNG,
    which every session of a server shares, so the layer's `lora_dropout` slot gets the same inverted
    dropout drawing from that generator: where the zeros land is the layer's own wiring either way.
    """
    gen = generator(seed)
    cfg = LoraConfig(r=r, lora_dropout=p, init_lora_weights=False)  # B ≠ 0: a live branch
    layer = make_lora_layer(linear(in_features, out_features, gen), cfg, "layer", generator=gen)
    if isinstance(layer.adapter().dropout, nn.Dropout):
        layer.lora_dropout["default"] = GeneratorDropout(layer.adapter().dropout.p, gen)
    layer.train(train)
    A0, B0 = layer.adapter().A.detach().clone(), layer.adapter().B.detach().clone()
    seen: dict[str, torch.Tensor] = {}
    hooks = [layer.base_layer.register_forward_pre_hook(lambda m, a: seen.update(base_in=a[0].detach())),
             layer.lora_A["default"].register_forward_pre_hook(lambda m, a: seen.update(branch_in=a[0].detach()))]
    x = torch.randn(tokens, in_features, generator=gen)
    try:
        with torch.no_grad():
            layer(x)
    finally:
        for h in hooks:
            h.remove()
    A, B = layer.adapter().A.detach(), layer.adapter().B.detach()
    branch_in, base_in = seen["branch_in"], seen["base_in"]
    kept = branch_in != 0
    zeros = lambda t: (t == 0).float().mean().item()
    mask = lambda t: (t == 0).int().tolist()
    return {
        "p": p, "train": train, "tokens": tokens, "in_features": in_features, "r": r,
        "x_zero_fraction": zeros(x),
        "base_input_zero_fraction": zeros(base_in),
        "branch_input_zero_fraction": zeros(branch_in),
        "A_zero_fraction": zeros(A), "B_zero_fraction": zeros(B),
        "A_changed": not torch.equal(A, A0), "B_changed": not torch.equal(B, B0),
        "base_input_is_x": torch.equal(base_in, x),
        # Inverted dropout: what survives is scaled up so the expected value stays x.
        "kept_scale": (branch_in[kept] / x[kept]).mean().item() if kept.any() else float("nan"),
        # Zero-masks of a corner of each tensor, for a picture: 1 marks an exact zero.
        "panels": [{"name": name, "mask": mask(t), "zero_fraction": zeros(full)} for name, t, full in (
            ("x → frozen W", base_in[:16, :32], base_in), ("dropout(x) → lora_A", branch_in[:16, :32], branch_in),
            ("A (r × in)", A[:, :32], A), ("B (out × r)", B[:16], B))],
    }


# --- attention heads -------------------------------------------------------------------------------
LLAMA_FAMILY = ("Llama-2-7b", "Llama-3-8B", "Mistral-7B", "SmolLM2-135M")   # shipped configs with q/k/v_proj


def attention_heads(names: tuple[str, ...] = LLAMA_FAMILY) -> list[dict]:
    """Query and key/value heads of shipped configs, read from the configs themselves.

    Grouped-query attention (k and v shared by groups of query heads, so k_proj and v_proj are
    narrower than q_proj) is a choice each model makes, not a trait of the Llama architecture:
    Llama-2-7b has as many key/value heads as query heads.
    """
    rows = []
    for name in names:
        cfg = load_config(name)
        heads = cfg.num_attention_heads
        kv = getattr(cfg, "num_key_value_heads", None) or heads
        head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // heads
        rows.append({"model": name, "query heads": heads, "key/value heads": kv,
                     "query heads per k/v head": heads // kv, "q_proj out": heads * head_dim,
                     "k_proj, v_proj out": kv * head_dim,
                     "grouped-query attention": kv < heads})
    return rows


# --- initialisation --------------------------------------------------------------------------------
INIT_MODES = {True: "True (A Kaiming-uniform, B = 0)", "gaussian": "gaussian (A normal, std 1/r; B = 0)",
              False: "False (A and B random)", "pissa": "pissa (top-r SVD of W)",
              "olora": "olora (thin QR of W)"}


def _weight_out_in(layer: nn.Module) -> torch.Tensor:
    w = layer.weight.detach().float()
    return w.T if isinstance(layer, Conv1D) else w  # Conv1D stores (in, out)


def init_gallery(layer: nn.Module, r: int = 8, lora_alpha: float = 16, seed: int = 0, tokens: int = 32,
                 top: int = 64) -> dict:
    """Every `init_lora_weights` mode on a copy of `layer` (Linear or Conv1D), at step 0.

    `layer` is never modified: each mode wraps its own fp32 deep copy. For each mode: ‖A‖, ‖B‖,
    ‖ΔW‖ (Frobenius), the largest |output − base output| on random inputs, ‖W now‖ against ‖W‖,
    and the largest |W now + ΔW − W|. Also the top singular values of W and of PiSSA's residual.
    """
    base = copy.deepcopy(layer).float()
    W = _weight_out_in(base)
    in_f, _ = in_out_features(base)
    x = torch.randn(tokens, in_f, generator=generator(seed))
    with torch.no_grad():
        base_out = base(x)
    rows, residual = [], None
    for mode, label in INIT_MODES.items():
        cfg = LoraConfig(r=r, lora_alpha=lora_alpha, init_lora_weights=mode)
        # the same draws for every mode; make_lora_layer checks r against the shape
        lora = make_lora_layer(copy.deepcopy(base), cfg, "layer", generator=generator(seed + 1))
        with torch.no_grad():
            out = lora(x)
            delta = lora.delta_weight()
            W_now = _weight_out_in(lora.base_layer)
        if mode == "pissa":
            residual = W_now
        rows.append({"init": label, "mode": mode,
                     "A_norm": lora.adapter().A.norm().item(), "B_norm": lora.adapter().B.norm().item(),
                     "delta_norm": delta.norm().item(), "max_abs_output_change": (out - base_out).abs().max().item(),
                     "W_norm": W.norm().item(), "base_weight_norm": W_now.norm().item(),
                     "base_rewritten": not torch.equal(W_now, W),
                     "max_abs_reconstruction_error": (W_now + delta - W).abs().max().item()})
    return {"rows": rows, "r": r, "lora_alpha": lora_alpha, "shape": tuple(W.shape),
            "singular_values": {"W": torch.linalg.svdvals(W)[:top].tolist(),
                                "W_res (PiSSA)": torch.linalg.svdvals(residual)[:top].tolist()}}


# --- what LoRA is, in numbers ------------------------------------------------------------------------
def compare_notations(in_features: int, out_features: int, r: int, lora_alpha: float, seed: int = 0) -> dict:
    """PEFT's ΔW x = (α/r)·B·A·x against a literal reading of `W(x) + A @ B @ x` (seed 003).

    With PEFT's shapes A is (r, in) and B is (out, r): `A @ B @ x` fails unless the shapes
    happen to line up, and read with the letters swapped it lacks the α/r scale.
    """
    gen = generator(seed)
    cfg = LoraConfig(r=r, lora_alpha=lora_alpha, init_lora_weights=False)
    layer = make_lora_layer(linear(in_features, out_features, gen), cfg, "layer", generator=gen).eval()
    x = torch.randn(in_features, generator=gen)
    adapter = layer.adapter()
    A, B, scaling = adapter.A.detach(), adapter.B.detach(), adapter.scaling
    try:
        _ = A @ B @ x  # (r, in) @ (out, r) @ (in,): PEFT's A and B in the seed's order
        literal_error = None
    except RuntimeError as err:
        literal_error = str(err)
    with torch.no_grad():
        branch = layer.lora_branch(x)       # what the layer adds: (out,)
    peft_form = scaling * (B @ (A @ x))      # (out, r) @ ((r, in) @ (in,)) -> (out,)
    unscaled = B @ A @ x                     # the seed's formula with its letters swapped
    return {"A_shape": tuple(A.shape), "B_shape": tuple(B.shape), "x_shape": tuple(x.shape),
            "delta_shape": tuple(layer.delta_weight().shape), "literal_error": literal_error,
            "peft_max_abs_diff": (branch - peft_form).abs().max().item(),
            "scaling": scaling, "branch_over_unscaled": (branch.norm() / unscaled.norm()).item()}


def added_not_selected(model: str, cfg: LoraConfig) -> dict:
    """Inject `cfg` into a meta copy of `model` and sort every parameter into old and new.

    LoRA's trainable parameters are new tensors (lora_A, lora_B, and full copies for
    modules_to_save); of the old ones only biases train, and only when `bias` asks for it.
    """
    meta = build_on_meta(model)
    base_total = sum(p.numel() for p in meta.parameters())
    inject_lora(meta, cfg)
    counts = dict.fromkeys(("lora", "saved_copies", "base_trainable", "base_frozen"), 0)
    trainable_old_names = set()
    for name, p in meta.named_parameters():
        if ".lora_" in name:  # lora_A, lora_B, and an Embedding's lora_embedding_A / _B
            counts["lora"] += p.numel()
        elif ".modules_to_save." in name:
            counts["saved_copies"] += p.numel()
        elif p.requires_grad:
            counts["base_trainable"] += p.numel()
            trainable_old_names.add(re.sub(r"\.\d+\.", ".*.", name.replace("base_layer.", "")))
        else:
            counts["base_frozen"] += p.numel()
    return {"base_total": base_total, **counts,
            "trainable": counts["lora"] + counts["saved_copies"] + counts["base_trainable"],
            "base_trainable_kinds": sorted(trainable_old_names)}


# --- ledgers for teaching charts ----------------------------------------------------------------------
def bias_mode_ledgers(model: str, cfg: LoraConfig) -> list[dict]:
    """The ledger for `cfg` under each bias mode: trainable, total, and the extra over bias='none'."""
    ledgers = {mode: count_lora_parameters(model, dataclasses.replace(cfg, bias=mode)) for mode in BIAS_MODES}
    none = ledgers["none"].trainable
    return [{"bias": mode, "trainable": b.trainable, "extra trainable": b.trainable - none, "all params": b.total,
             "trainable%": b.trainable_percent} for mode, b in ledgers.items()]


def standard_target_sets(model_type: str) -> dict[str, list[str] | str | None]:
    """Common target choices for an architecture: PEFT's default, all attention projections, all-linear."""
    sets: dict[str, list[str] | str | None] = {}
    if model_type in DEFAULT_TARGETS:
        sets[f"PEFT default {DEFAULT_TARGETS[model_type]}"] = None
    if model_type == "gpt2":
        sets["attention (c_attn + attn.c_proj)"] = r".*\.attn\.c_(attn|proj)"
    elif model_type in ("llama", "mistral", "qwen2", "gemma"):
        sets["attention (q, k, v, o)"] = ["q_proj", "k_proj", "v_proj", "o_proj"]
    sets["all-linear"] = "all-linear"
    return sets


def rank_sweep(model: str, configs: dict[str, LoraConfig], ranks: list[int]) -> list[dict]:
    """Ledgers over `ranks` for each labelled config: [{label, r, trainable, total, trainable%}].

    Every LoRA factor has r rows or r columns, so the adapter's count is exactly linear in r:
    one ledger at r=1 gives every rank (tests pin this against a full recount). A rank a config
    cannot take (above some layer's min(in, out)) is left out, and so is a config matching nothing.
    """
    points = []
    for label, cfg in configs.items():
        try:
            unit = count_lora_parameters(model, dataclasses.replace(cfg, r=1))
        except ValueError:
            continue
        limit = min(min(row.in_features, row.out_features) for row in unit.rows)
        for r in (r for r in ranks if r <= limit):
            lora = r * unit.lora_params
            trainable, total = unit.other_trainable + lora, unit.total - unit.lora_params + lora
            points.append({"label": label, "r": r, "trainable": trainable, "total": total,
                           "trainable%": 100 * trainable / total})
    return points


def percent_of_weight(row: LedgerRow) -> float:
    """LoRA parameters of one module as a percentage of its frozen weight: r(in+out) / (in·out)."""
    return 100 * row.lora_per_module / row.weight_params


def explain_claimed_count(model: str, cfg: LoraConfig, claimed: int) -> dict:
    """Set a claimed trainable count against the ledger for `cfg` (one module kind).

    Reports the real count, how many modules the claim implies, a ledger with that many layers
    (if whole) to show which setting would give the claim, and the percentages both ways.
    """
    book: Ledger = count_lora_parameters(model, cfg)
    if len(book.rows) != 1:
        raise ValueError(f"target_modules={cfg.target_modules!r} matches {len(book.rows)} module kinds: "
                         "the claim check needs exactly one")
    (row,) = book.rows
    implied = claimed / row.lora_per_module
    reproduced = None
    if implied.is_integer() and 0 < implied < row.count:
        reproduced = count_lora_parameters(model, dataclasses.replace(
            cfg, layers_to_transform=list(range(int(implied))))).trainable
    return {"claimed": claimed, "trainable": book.trainable, "total": book.total, "base_total": book.base_total,
            "per_module": row.lora_per_module, "modules": row.count, "implied_modules": implied,
            "reproduced_with_first_layers": reproduced,
            "claimed_percent_of_total": 100 * claimed / book.total, "trainable_percent": book.trainable_percent,
            "ratio": book.trainable / claimed}
