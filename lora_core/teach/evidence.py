"""The Evidence record behind interview answers and claims, and the live measurements it shows.

    from lora_core.teach import evidence
    evidence.merged_vs_unmerged()["max_abs_logit_diff"]   # merged vs unmerged logits on a tiny GPT-2
    evidence.init_stats()["rows"]                        # what A and B look like at step 0, per init mode

Models with weights are a tiny GPT-2 built by `seeded.tiny_gpt2` (Conv1D layers, lm_head tied to wte),
so nothing needs a download. Every random draw comes from a local torch.Generator and nothing sets
process-wide torch state, because pages run side by side in one server. Results that take more than a
few milliseconds are cached (`functools.lru_cache`, keyed on plain numbers and names only): the claims
check pays for its compute once per process. Training experiments (toy runs, step times, saved runs)
live in `training_runs.py`, quantization and memory in `evidence_quant.py`.

References: LoRA (arXiv 2106.09685), QLoRA (arXiv 2305.14314), rsLoRA (arXiv 2312.03732),
DoRA (arXiv 2402.09353), VeRA (arXiv 2310.11454), PiSSA (arXiv 2404.02948), LoftQ (arXiv 2310.08659).
"""

from __future__ import annotations

import ast
import functools
import importlib
import importlib.util
import json
import math
import tempfile
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn as nn
from transformers import GPT2ForSequenceClassification

from ..config import LoraConfig
from ..counting import count_lora_parameters, ledger_of
from ..inject import inject_lora, lora_layers
from ..layers import make_lora_layer
from ..merging import merge_and_unload, merge_lora
from ..peft_io import save_adapter
from ..quant import codebook as quant
from ..sharing import shared_base_copy, shares_storage
from . import seeded
from .seeded import generator, linear, materialize_gpt2, random_ids, tiny_gpt2, tiny_gpt2_config, tiny_gpt2_on_meta


@dataclass
class Evidence:
    """What a page shows behind an answer or a verdict. Values are computed; only formatting happens here."""

    metrics: dict[str, str] = field(default_factory=dict)  # headline numbers, label -> formatted value
    table: list[dict] = field(default_factory=list)         # a small table, one dict per row
    figure: dict | None = None   # data for `lora_core.viz.evidence_figure`: {"kind": ..., ...}
    code: str = ""               # a snippet to show as code (e.g. source that fails to parse)
    note: str = ""               # where the numbers come from


def percent(x: float, digits: int = 1) -> str:
    """A fraction written as a percentage: percent(0.1797, 2) == '17.97%'."""
    return f"{100 * x:.{digits}f}%"


def curves_figure(series: dict, title: str, y_title: str, log_y: bool = True, dashed: tuple = ()) -> dict:
    """The figure spec of named curves (`viz.evidence_figure` draws it)."""
    return {"kind": "curves", "series": series, "title": title, "y_title": y_title, "log_y": log_y,
            "dashed": list(dashed)}


# --- timing ---------------------------------------------------------------------------------------
def best_ms(fns: dict[str, Callable[[], object]], repeats: int) -> dict[str, float]:
    """The fastest of `repeats` timed calls of each function in `fns`, in ms, after one warm-up call each.

    Calls take turns (round-robin), so a burst of load elsewhere hits every function alike, and
    the minimum is kept, as `timeit` recommends: other processes only ever add time. The timing runs
    on the thread count torch already has: torch.set_num_threads would change it for every session
    of a shared server, so callers report `torch.get_num_threads()` beside the numbers instead.
    """
    for fn in fns.values():
        fn()  # the first call pays for allocation and kernel selection
    best = dict.fromkeys(fns, math.inf)
    for _ in range(repeats):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            best[name] = min(best[name], time.perf_counter() - t0)
    return {name: 1e3 * t for name, t in best.items()}


def _excess_kurtosis(x: torch.Tensor) -> float:
    """E[(x-μ)⁴]/σ⁴ − 3: −1.2 for a uniform distribution, 0 for a normal one."""
    z = x.double().flatten()
    z = (z - z.mean()) / z.std(unbiased=False)
    return float(z.pow(4).mean() - 3)


# --- merging ------------------------------------------------------------------------------------
@functools.lru_cache(maxsize=4)
def merged_vs_unmerged(r: int = 8, tokens: int = 32, repeats: int = 20, seed: int = 0) -> dict:
    """Unmerged vs merged logits and forward latency on a tiny GPT-2 with a live (B ≠ 0) adapter.

    The adapter wraps every Conv1D (all-linear), so the check covers GPT-2's transposed weights.
    Three models share the frozen base: the base itself, base + adapter, and the merged copy.
    Latencies are the best of `repeats` forwards each, measured now on this machine (milliseconds),
    on `threads` threads (torch's setting, reported, never changed here).
    """
    base = tiny_gpt2(seed)
    ids = random_ids(base.config.vocab_size, (1, tokens), seed)
    adapter = LoraConfig(r=r, lora_alpha=2 * r, target_modules="all-linear", init_lora_weights=False)
    lora, merged_model = shared_base_copy(base), shared_base_copy(base)  # lora_core never writes the base
    for model in (lora, merged_model):
        wrapped = inject_lora(model, adapter, generator=generator(seed + 1))  # the same adapter in both
    with torch.no_grad():
        base_logits, unmerged = base(ids).logits, lora(ids).logits
        merge_lora(merged_model)
        merged = merged_model(ids).logits
        plain = merge_and_unload(merged_model)  # the merged weights, LoRA modules gone
        unloaded = plain(ids).logits
        ms = best_ms({"base": lambda: base(ids), "unmerged": lambda: lora(ids), "merged": lambda: plain(ids)},
                     repeats)
    base_ms, unmerged_ms, merged_ms = ms["base"], ms["unmerged"], ms["merged"]
    threads = torch.get_num_threads()
    params_base = sum(p.numel() for p in base.parameters())
    return {"r": r, "wrapped": len(wrapped), "tokens": tokens,
            "adapter_effect": float((unmerged - base_logits).abs().max()),
            "max_abs_logit_diff": float((merged - unmerged).abs().max()),
            "max_abs_logit_diff_unloaded": float((unloaded - unmerged).abs().max()),
            "max_abs_logit": float(unmerged.abs().max()),
            "params_base": params_base, "params_merged": sum(p.numel() for p in plain.parameters()),
            "lora_layers_left": len(lora_layers(plain)),
            "base_ms": base_ms, "unmerged_ms": unmerged_ms, "merged_ms": merged_ms, "threads": threads}


# --- initialisation ---------------------------------------------------------------------------
@functools.lru_cache(maxsize=8)
def init_stats(in_features: int = 768, out_features: int = 768, r: int = 8, seed: int = 0) -> dict:
    """A and B at step 0 for the default init (True) and 'gaussian', on one nn.Linear.

    PEFT's default draws A with kaiming_uniform_(a=√5): gain √(2/(1+5)), so the bound is
    √3 · gain / √fan_in = 1/√in. 'gaussian' draws A from N(0, (1/r)²). Both set B = 0.
    """
    x = torch.randn(16, in_features, generator=generator(seed))
    rows, hists = [], {}
    for mode in (True, "gaussian"):
        g = generator(seed)  # the same base layer for both modes
        base = linear(in_features, out_features, g)
        layer = make_lora_layer(base, LoraConfig(r=r, init_lora_weights=mode), "layer", generator=g)
        A, B = layer.adapter().A.detach(), layer.adapter().B.detach()
        with torch.no_grad():
            change = (layer(x) - base(x)).abs().max().item()
        label = "True (PEFT default)" if mode is True else "'gaussian'"
        rows.append({"init_lora_weights": label, "A min": A.min().item(), "A max": A.max().item(),
                     "A std": A.std().item(), "A excess kurtosis": _excess_kurtosis(A),
                     "B zeros": (B == 0).float().mean().item(), "‖ΔW‖": layer.delta_weight().norm().item(),
                     "max |output − base|": change})
        hists[label] = quant.value_histogram(A, bins=60)
    return {"rows": rows, "hists": hists, "kaiming_bound": 1 / math.sqrt(in_features), "gaussian_std": 1 / r,
            "in_features": in_features, "r": r}


@functools.lru_cache(maxsize=1)
def zero_init_gradients(in_features: int = 32, out_features: int = 32, r: int = 4, seed: int = 0) -> list[dict]:
    """‖∂L/∂A‖ and ‖∂L/∂B‖ at step 0: LoRA's init (A random, B = 0) against both factors zero.

    ∂L/∂B depends on A·x and ∂L/∂A on B, so with A = B = 0 both gradients vanish and nothing trains.
    """
    g = generator(seed)
    x, y = torch.randn(16, in_features, generator=g), torch.randn(16, out_features, generator=g)
    rows = []
    for label, zero_a in (("A random, B = 0 (LoRA)", False), ("A = 0, B = 0", True)):
        g = generator(seed + 1)  # the same layer both times
        layer = make_lora_layer(linear(in_features, out_features, g), LoraConfig(r=r), "layer", generator=g)
        if zero_a:
            with torch.no_grad():
                layer.adapter().A.zero_()
        (layer(x) - y).square().mean().backward()
        rows.append({"init": label, "‖∂L/∂A‖": layer.adapter().A.grad.norm().item(),
                     "‖∂L/∂B‖": layer.adapter().B.grad.norm().item()})
    return rows


@functools.lru_cache(maxsize=1)
def conv1d_facts(r: int = 8) -> dict:
    """GPT-2's Conv1D against Llama's nn.Linear: weight layouts, and what a LoRA layer on each holds."""
    from ..models.sources import build_on_meta

    conv = build_on_meta("distilgpt2").get_submodule("transformer.h.0.attn.c_attn")
    proj = build_on_meta("SmolLM2-135M").get_submodule("model.layers.0.self_attn.k_proj")
    rows = []
    for name, layer in (("distilgpt2 attn.c_attn (Conv1D)", conv), ("SmolLM2 self_attn.k_proj (nn.Linear)", proj)):
        lora = make_lora_layer(layer, LoraConfig(r=r), name)  # on the meta device: shapes only
        rows.append({"layer": name, "weight shape": tuple(layer.weight.shape), "in→out":
                     f"{lora.in_features}→{lora.out_features}", "fan_in_fan_out": lora.fan_in_fan_out,
                     "A": tuple(lora.adapter().A.shape), "B": tuple(lora.adapter().B.shape)})
    return {"rows": rows}


# --- PEFT itself: task_type and defaults ------------------------------------------------------
def _peft():
    """PEFT, imported only when a check needs it (lora_core never depends on it), or None."""
    return importlib.import_module("peft") if importlib.util.find_spec("peft") else None


@functools.lru_cache(maxsize=1)
def task_type_check(task_types: tuple = (None, "CAUSAL_LM", "SEQ_CLS", "SEQ_2_SEQ_LM"), seed: int = 0) -> dict:
    """What `peft.get_peft_model` returns for each task_type on a tiny GPT-2, and what forward gives.

    Each run gets the same base weights and the same non-zero adapter, so equal logits mean the adapter
    math is the same. PEFT draws its factors from the global RNG, so each model is wrapped on the meta
    device (no draws at all) and then filled from local generators: the base with GPT-2's init, A and B
    with what init_lora_weights=False leaves them (nn.Linear's Kaiming-uniform).
    """
    peft = _peft()
    ours = {tt: count_lora_parameters(tiny_gpt2_config(), LoraConfig(r=4, target_modules=["c_attn"],
                                                                         task_type=tt)).trainable
            for tt in task_types}
    if peft is None:
        return {"available": False, "rows": [], "lora_core_trainable": ours}
    rows, reference = [], None
    for tt in task_types:
        cfg = peft.LoraConfig(r=4, target_modules=["c_attn"], task_type=tt, init_lora_weights=False)
        row = {"task_type": repr(tt)}
        try:
            # PEFT builds lora_A / lora_B without a device: inside torch.device("meta") they draw nothing.
            with warnings.catch_warnings(), torch.device("meta"):
                warnings.simplefilter("ignore")  # Conv1D fan_in_fan_out notice
                wrapped = peft.get_peft_model(tiny_gpt2_on_meta(), cfg)
        except Exception as err:  # PEFT's own failure is what we report
            rows.append(row | {"PEFT returns": f"{type(err).__name__}: {str(err)[:90]}", "forward works": False,
                               "max |Δlogits| vs task_type=None": None})
            continue
        wrapped = materialize_gpt2(wrapped, seed).eval()
        g = generator(seed + 1)
        with torch.no_grad():
            for name, p in wrapped.named_parameters():
                if ".lora_A." in name or ".lora_B." in name:
                    nn.init.kaiming_uniform_(p, a=math.sqrt(5), generator=g)
        ids = random_ids(wrapped.config.vocab_size, (1, 8), seed)
        with torch.no_grad():
            logits = wrapped(input_ids=ids).logits
        reference = logits if reference is None else reference
        rows.append(row | {"PEFT returns": type(wrapped).__name__, "forward works": True,
                           "max |Δlogits| vs task_type=None": float((logits - reference).abs().max())})
    return {"available": True, "rows": rows, "lora_core_trainable": ours}


# The sequence classifier of classification_head_check: the tiny GPT-2 at width 32, two labels, so c_attn is
# 32→96 and LoRA at r=2 on two blocks costs 2·2·(32+96) = 512, and the score head 32·2 = 64.
SEQ_CLS_TINY = dict(n_embd=32, n_head=2, num_labels=2, pad_token_id=0)


def _tiny_sequence_classifier(seed: int | None = None) -> nn.Module:
    """GPT2ForSequenceClassification from the tiny config, built on meta (no draws from any global RNG), then
    given memory and GPT-2's init from `generator(seed)`; left on meta when `seed` is None."""
    with torch.device("meta"):
        model = GPT2ForSequenceClassification(tiny_gpt2_config(**SEQ_CLS_TINY))
    if seed is None:
        return model
    model = model.to_empty(device="cpu")
    seeded.init_gpt2_weights(model, generator(seed))
    return model


def _head_trains(model: nn.Module) -> bool:
    """Whether any parameter of the classification head `score` (or PEFT's copy of it) has requires_grad."""
    return any(p.requires_grad for name, p in model.named_parameters() if "score" in name)


def _saved_keys(save: Callable[[str], object]) -> list[str]:
    """The tensor names in the adapter_model.safetensors that `save(folder)` writes."""
    from safetensors import safe_open

    with tempfile.TemporaryDirectory() as folder:
        save(folder)
        with safe_open(str(Path(folder) / "adapter_model.safetensors"), "pt") as f:
            return sorted(f.keys())


@functools.lru_cache(maxsize=2)
def classification_head_check(r: int = 2, seed: int = 0) -> dict:
    """LoRA on c_attn of a fresh GPT2ForSequenceClassification, without and with task_type="SEQ_CLS".

    PEFT's PeftModelForSequenceClassification adds the head ("classifier", "score") to modules_to_save:
    a trainable copy that the adapter file stores. Without the task_type the freshly initialised head
    stays frozen and is not saved, so training runs and the head never learns. Both libraries are
    asked: trainable counts, whether `score` trains, and which keys each one writes to the adapter file
    ("adapter_file_keys", by (task_type, library)). "without" and "with" are lora_core's trainable counts.
    """
    peft = _peft()
    rows, ours, files = [], {}, {}
    for task_type in (None, "SEQ_CLS"):
        model = _tiny_sequence_classifier(seed)
        inject_lora(model, LoraConfig(r=r, target_modules=["c_attn"], task_type=task_type),
                    generator=generator(seed + 1))
        book = ledger_of(model)
        keys = _saved_keys(lambda folder, m=model: save_adapter(m, folder))
        ours[task_type] = book.trainable
        row = {"task_type": repr(task_type), "lora_core trainable": book.trainable, "LoRA factors": book.lora_params,
               "head trainable (lora_core)": _head_trains(model),
               "head in adapter file (lora_core)": any(".score." in k for k in keys)}
        files[(repr(task_type), "lora_core")] = keys
        if peft is not None:
            with warnings.catch_warnings(), torch.device("meta"):
                warnings.simplefilter("ignore")  # Conv1D fan_in_fan_out notice
                wrapped = peft.get_peft_model(_tiny_sequence_classifier(),
                                              peft.LoraConfig(r=r, target_modules=["c_attn"], task_type=task_type))
            wrapped = wrapped.to_empty(device="cpu")
            seeded.init_gpt2_weights(wrapped, generator(seed))   # the base; then PEFT's init for A and B
            with torch.no_grad():
                for name, p in wrapped.named_parameters():  # A Kaiming-uniform, B zero: PEFT's default
                    if ".lora_A." in name:
                        nn.init.kaiming_uniform_(p, a=math.sqrt(5), generator=generator(seed + 1))
                    elif ".lora_B." in name:
                        p.zero_()
            peft_keys = _saved_keys(wrapped.save_pretrained)
            row |= {"PEFT class": type(wrapped).__name__,
                    "PEFT trainable": wrapped.get_nb_trainable_parameters()[0],
                    "head trainable (PEFT)": _head_trains(wrapped),
                    "head in adapter file (PEFT)": any(".score." in k for k in peft_keys)}
            files[(repr(task_type), "PEFT")] = peft_keys
        rows.append(row)
    return {"rows": rows, "without": ours[None], "with": ours["SEQ_CLS"], "available": peft is not None,
            "adapter_file_keys": files, "head_params": ours["SEQ_CLS"] - ours[None], "r": r,
            "config": {k: getattr(model.config, k) for k in ("n_embd", "n_layer", "num_labels")}}


@functools.lru_cache(maxsize=1)
def peft_defaults() -> dict:
    """r, lora_alpha, lora_dropout and init of a bare LoraConfig(): ours, and PEFT's if installed."""
    keys = ("r", "lora_alpha", "lora_dropout", "init_lora_weights")
    ours = LoraConfig()
    out = {"lora_core": {k: getattr(ours, k) for k in keys} | {"scaling": ours.scaling}}
    peft = _peft()
    if peft is not None:
        theirs = peft.LoraConfig()
        out["peft"] = {k: getattr(theirs, k) for k in keys} | {"scaling": theirs.lora_alpha / theirs.r}
    return out


def library_of(name: str = "SFTTrainer") -> dict:
    """Which installed library exports `name`: PEFT, TRL, transformers (checked by import, not by memory)."""
    found = {}
    for lib in ("peft", "trl", "transformers"):
        installed = importlib.util.find_spec(lib) is not None
        module = importlib.import_module(lib) if installed else None
        found[lib] = {"installed": installed, "exports": bool(module) and hasattr(module, name)}
    peft = _peft()
    trainers = sorted(n for n in dir(peft) if "Trainer" in n) if peft else []
    import transformers
    return {"name": name, "libraries": found, "peft_names_with_Trainer": trainers,
            "transformers_Trainer": hasattr(transformers, "Trainer")}


# --- source code ----------------------------------------------------------------------------------
# Seed 001's LoraConfig example, as data: the arguments it passes, in its order.
SEED_001_ARGS = {"r": 8, "lora_alpha": 16, "target_modules": ["q", "v"], "lora_dropout": 0.01, "bias": "none",
                 "task_type": "SEQ_2_SEQ_LM"}


def config_call(args: dict, missing_comma_after: str | None = None) -> str:
    """Python source for `config = LoraConfig(...)`, one keyword per line, optionally dropping one comma."""
    lines = ["config = LoraConfig("]
    lines += [f"    {k}={json.dumps(v)}{'' if k == missing_comma_after else ','}" for k, v in args.items()]
    return "\n".join([*lines, ")"]) + "\n"


def syntax_check(args: dict = SEED_001_ARGS, missing_comma_after: str = "bias") -> dict:
    """`ast.parse` the call with the comma missing (seed 001's bug) and with it restored."""
    broken = config_call(args, missing_comma_after)
    try:
        ast.parse(broken)
        error = None
    except SyntaxError as err:
        error = {"message": err.msg, "line": err.lineno, "text": (err.text or "").rstrip()}
    fixed = config_call(args)
    call = ast.parse(fixed).body[0].value
    return {"broken": broken, "error": error, "fixed": fixed, "fixed_keywords": [k.arg for k in call.keywords]}


# --- serving ------------------------------------------------------------------------------------------
@functools.lru_cache(maxsize=1)
def shared_adapters(r: int = 8, seed: int = 0) -> dict:
    """Two adapters on one frozen base: how many base tensors the copies share, and what each adds."""
    base = tiny_gpt2(seed)
    a, b = shared_base_copy(base), shared_base_copy(base)
    inject_lora(a, LoraConfig(r=r, target_modules=["c_attn"]), generator=generator(seed + 1))
    inject_lora(b, LoraConfig(r=r, target_modules="all-linear"), generator=generator(seed + 2))
    base_tensors = len(list(base.parameters()))
    added = lambda m: sum(p.numel() for p in m.parameters() if p.requires_grad)
    return {"base_tensors": base_tensors, "shared_a": shares_storage(a, base), "shared_b": shares_storage(b, base),
            "base_params": sum(p.numel() for p in base.parameters()), "adapter_a": added(a), "adapter_b": added(b)}


# --- variants ----------------------------------------------------------------------------------------
def variant_counts(model: str = "distilgpt2", targets: tuple[str, ...] = ("c_attn",), r: int = 8,
                   vera_r: int = 256) -> list[dict]:
    """Trainable parameters of LoRA and four variants on the same targets, from the ledger's shapes.

    DoRA adds a magnitude vector (out) per layer; VeRA freezes shared random A and B and trains
    two vectors per layer, d (vera_r) and b (out); PiSSA and LoftQ change only the init.
    """
    book = count_lora_parameters(model, LoraConfig(r=r, target_modules=list(targets)))
    outs = sum(row.count * row.out_features for row in book.rows)
    layers = sum(row.count for row in book.rows)
    lora = book.lora_params
    return [{"method": f"LoRA r={r}", "trainable": lora, "how": "Σ count·r·(in+out)"},
            {"method": f"DoRA r={r}", "trainable": lora + outs, "how": "LoRA + Σ count·out (magnitudes)"},
            {"method": f"VeRA r={vera_r}", "trainable": layers * vera_r + outs, "how": "Σ count·(r + out)"},
            {"method": f"PiSSA r={r}", "trainable": lora, "how": "as LoRA (SVD init)"},
            {"method": f"LoftQ r={r}", "trainable": lora, "how": "as LoRA (quantization-aware init)"}]
