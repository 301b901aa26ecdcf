"""Small training experiments and measured runs, for the interview answers and the claims check.

    from lora_core.teach import training_runs
    training_runs.alpha_lr_pair()["half_lr_max_rel_gap_early"]   # (α, lr) vs (2α, lr/2) under Adam
    training_runs.run_metrics()                                  # BLEU etc. from runs/*/metrics.json
    training_runs.seed_bleu_experiment(model_copy, tok)          # seed 000's 4-example setup, measured

Toy runs use `teach.toy` at SMALL_TOY size (a fraction of a second each) and are cached per config.
Step times are measured now, on this machine, on the threads torch already has (reported, never set).
Initial weights come from local generators (`seeded.py`), never from torch's global RNG.
"""

from __future__ import annotations

import functools
import json
import math
import statistics
import time
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F
from transformers import PreTrainedTokenizerBase

from ..config import LoraConfig
from ..inject import inject_lora
from ..settings_file import REPO_ROOT
from ..spectrum import effective_rank, energy_captured, factor_singular_values
from ..training.data import Dataset, load_dataset
from ..training.trainer import TrainConfig, Trainer
from .evidence import best_ms
from .seeded import generator, random_ids, tiny_gpt2
from .toy import ToyConfig, adam_equivalent, initial_loss, toy_problem, train_toy

RUNS_DIR = REPO_ROOT / "runs"  # where `python -m lora_core.finetune` writes
# Small enough that every toy run of the claims check takes a fraction of a second.
SMALL_TOY = dict(d=64, steps=60, batch_size=32, true_rank=4)
# Adam learning rates for the toy runs: a gentle one where α's effect on the pace is the point,
# a brisk one where the fitted update is (most of the target is learnt within 60 steps).
ALPHA_LR, FIT_LR = 1e-3, 5e-3


# --- toy training runs (lc.toy) ------------------------------------------------------------------------
def toy_run(r: int = 8, lora_alpha: float = 16, lr: float = FIT_LR, init_scale: float = 1.0) -> dict:
    """One `train_toy` run on SMALL_TOY: losses, ‖ΔW‖ per step, the final ΔW and its target (cached)."""
    return _toy_run(r, float(lora_alpha), float(lr), float(init_scale))  # one cache key per config


@functools.lru_cache(maxsize=64)
def _toy_run(r: int, lora_alpha: float, lr: float, init_scale: float) -> dict:
    cfg = ToyConfig(**SMALL_TOY, r=r, lora_alpha=lora_alpha, lr=lr, init_scale=init_scale)
    run = train_toy(cfg)
    W0, _ = toy_problem(cfg.d, cfg.true_rank, cfg.seed)
    return {"config": cfg, "losses": run.losses, "delta_norms": run.delta_norms, "initial": initial_loss(cfg),
            "delta": run.layer.delta_weight().detach(), "target": run.target_delta,
            "base_unchanged": bool(torch.equal(run.layer.base_layer.weight.detach(), W0)),
            "singular_values": factor_singular_values(*run.layer.factors(), run.layer.adapter().scaling)}


def alpha_lr_pair(r: int = 8, lora_alpha: float = 16, lr: float = ALPHA_LR) -> dict:
    """(α, lr) against (2α, lr/2) and against the exact Adam equivalent (2α, lr/√2, A₀/√2)."""
    base = ToyConfig(**SMALL_TOY, r=r, lora_alpha=lora_alpha, lr=lr)
    exact = adam_equivalent(base, 2.0)
    runs = {f"(α={lora_alpha:g}, lr={lr:g})": toy_run(r, lora_alpha, lr),
            f"(α={2 * lora_alpha:g}, lr={lr / 2:g})": toy_run(r, 2 * lora_alpha, lr / 2),
            f"(α={exact.lora_alpha:g}, lr={exact.lr:.3g}, A₀/√2)": toy_run(r, exact.lora_alpha, exact.lr,
                                                                          exact.init_scale)}
    (a, half, eq) = (v["losses"] for v in runs.values())
    gap = lambda xs, k: max(abs(x - y) / y for x, y in zip(xs[:k], a[:k], strict=True))
    early = max(1, len(a) // 6)
    return {"losses": {k: v["losses"] for k, v in runs.items()}, "early_steps": early,
            "half_lr_max_rel_gap_early": gap(half, early), "half_lr_max_rel_gap_all": gap(half, len(a)),
            "exact_max_rel_gap_all": gap(eq, len(a)), "initial": runs[next(iter(runs))]["initial"]}


def alpha_sweep(r: int = 8, factors: tuple[float, ...] = (1, 2, 4), lr: float = ALPHA_LR) -> dict:
    """Runs at α = k·r for each k, the same lr: bigger α trains faster, as a bigger lr would."""
    runs = {f"α={k * r:g} ({k:g}r)": toy_run(r, k * r, lr) for k in factors}
    return {"losses": {k: v["losses"] for k, v in runs.items()},
            "fraction_left": {k: v["losses"][-1] / v["initial"] for k, v in runs.items()},
            "scaling": {k: v["config"].lora_alpha / r for k, v in runs.items()}}


def rank_sweep_toy(ranks: tuple[int, ...] = (1, 2, 4, 8), lr: float = FIT_LR) -> dict:
    """Loss left after training at each small r (α = 2r), on a target update of rank 4."""
    runs = {r: toy_run(r, 2 * r, lr) for r in ranks}
    return {"losses": {f"r={r}": v["losses"] for r, v in runs.items()},
            "fraction_left": {r: v["losses"][-1] / v["initial"] for r, v in runs.items()},
            "true_rank": SMALL_TOY["true_rank"], "d": SMALL_TOY["d"]}


@functools.lru_cache(maxsize=2)
def full_update_spectrum(lr: float = FIT_LR, seed: int = 0) -> dict:
    """Train a full d×d update (no low-rank constraint) with Adam on the toy task; its spectrum.

    Same data stream as `train_toy`. The target update has rank `true_rank` by construction, so
    this illustrates the claim on a problem where it holds; it is not a test on a real model.
    """
    cfg = ToyConfig(**SMALL_TOY, seed=seed)
    W0, target = toy_problem(cfg.d, cfg.true_rank, cfg.seed)
    delta = torch.zeros(cfg.d, cfg.d, requires_grad=True)
    opt = torch.optim.Adam([delta], lr=lr)
    g = torch.Generator().manual_seed(cfg.seed + 2)
    for _ in range(cfg.steps):
        x = torch.randn(cfg.batch_size, cfg.d, generator=g)      # (b, d)
        y = x @ (W0 + target).T                                  # (b, d)
        loss = (x @ (W0 + delta).T - y).square().mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    sv = torch.linalg.svdvals(delta.detach())
    k = cfg.true_rank
    return {"singular_values": sv, "energy_top_k": energy_captured(sv, k), "k": k, "effective_rank": effective_rank(sv),
            "d": cfg.d, "fraction_left": float((delta.detach() - target).square().sum() / target.square().sum())}


# --- speed -----------------------------------------------------------------------------------------------
@functools.lru_cache(maxsize=2)
def step_times(repeats: int = 5, batch: int = 4, seq: int = 32, r: int = 8, seed: int = 0) -> dict:
    """Best-of-`repeats` training-step time (ms) on a small GPT-2, measured now on this CPU.

    frozen: forward + backward through the frozen model (gradients reach the input only);
    lora: the same plus adapter gradients and AdamW on the adapter (all-linear, rank r);
    full: forward + backward with every weight gradient, then AdamW on every parameter.
    GPT-2's dropout is set to 0: nn.Dropout would draw its masks from torch's global RNG, which every
    session shares, and it costs the three setups alike. `threads` is torch's thread count as it was.
    """
    overrides = dict(n_layer=4, n_embd=128, n_head=4, n_positions=seq, vocab_size=2048, resid_pdrop=0.0,
                     embd_pdrop=0.0, attn_pdrop=0.0)
    ids = random_ids(overrides["vocab_size"], (batch, seq), seed)

    def trainer(model: nn.Module, params: list[nn.Parameter], through_input: bool):
        opt = torch.optim.AdamW(params) if params else None

        def step() -> None:
            emb = model.get_input_embeddings()(ids)                          # (B, T, C)
            if through_input:  # a frozen model still backpropagates to whatever needs a gradient
                emb = emb.detach().requires_grad_()
            logits = model(inputs_embeds=emb).logits                         # (B, T, V)
            loss = F.cross_entropy(logits[:, :-1].flatten(0, 1), ids[:, 1:].flatten())
            loss.backward()
            if opt is not None:
                opt.step()
                opt.zero_grad(set_to_none=True)
        return step

    full = tiny_gpt2(seed, **overrides).train()
    frozen = tiny_gpt2(seed, **overrides).train().requires_grad_(False)
    lora = tiny_gpt2(seed, **overrides).train()
    inject_lora(lora, LoraConfig(r=r, target_modules="all-linear"), generator=generator(seed + 1))
    setups = {"frozen base (fwd+bwd)": trainer(frozen, [], True),
              "LoRA all-linear": trainer(lora, [p for p in lora.parameters() if p.requires_grad], False),
              "full fine-tuning": trainer(full, list(full.parameters()), False)}
    ms = best_ms(setups, repeats)
    frozen_ms = ms["frozen base (fwd+bwd)"]
    return {"ms": ms, "relative": {k: v / frozen_ms for k, v in ms.items()}, "batch": batch, "seq": seq,
            "params": sum(p.numel() for p in full.parameters()), "device": "cpu",
            "threads": torch.get_num_threads()}


# --- fine-tuning runs on disk ----------------------------------------------------------------------------
def run_metrics(runs_dir: str | Path | None = None) -> list[dict]:
    """The measured numbers of every `runs/*/metrics.json` written by `python -m lora_core.finetune`."""
    root = Path(runs_dir) if runs_dir is not None else RUNS_DIR
    rows = []
    for path in sorted(root.glob("*/metrics.json")):
        try:
            m = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            continue  # a run still being written, or not ours
        train = m.get("train", {})
        rows.append({"run": path.parent.name, "model": m.get("model"), "data": m.get("data"),
                     "steps": m.get("steps"), "batch size": train.get("batch_size"),
                     **({"epochs": m["epochs"]} if "epochs" in m else {}),  # older runs did not record it
                     "BLEU before": m.get("bleu_before"), "BLEU after": m.get("bleu_after"),
                     "held-out loss before": m.get("heldout_loss_before"),
                     "held-out loss after": m.get("heldout_loss_after")})
    return rows


def trained_adapter_spectra(runs_dir: str | Path | None = None) -> list[dict]:
    """Per saved adapter: how concentrated each trained ΔW = B·A·s is (σ from the factors)."""
    root = Path(runs_dir) if runs_dir is not None else RUNS_DIR
    out = []
    for cfg_path in sorted(root.glob("*/adapter_config.json")):
        weights = cfg_path.with_name("adapter_model.safetensors")
        if weights.is_file():
            # Keyed on the file's mtime: a run that is rewritten is read again, an unchanged one is not.
            summary = _adapter_spectrum(str(weights), weights.stat().st_mtime_ns, cfg_path.read_text(encoding="utf-8"))
            if summary is not None:
                out.append({"run": cfg_path.parent.name, **summary})
    return out


@functools.lru_cache(maxsize=32)
def _adapter_spectrum(weights: str, mtime_ns: int, config_json: str) -> dict | None:
    from safetensors.torch import load_file

    cfg = json.loads(config_json)
    r, alpha = cfg["r"], cfg["lora_alpha"]
    scaling = alpha / (math.sqrt(r) if cfg.get("use_rslora") else r)
    tensors = load_file(weights)
    spectra = [factor_singular_values(tensors[k.replace("lora_A", "lora_B")], tensors[k], scaling)
               for k in tensors if k.endswith("lora_A.weight")]
    if not spectra:
        return None
    normalised = torch.stack([sv / sv[0] for sv in spectra]).mean(0)  # σ_i / σ_1, averaged over modules
    return {"r": r, "modules": len(spectra),
            "median energy in σ_1": statistics.median(energy_captured(sv, 1) for sv in spectra),
            "median effective rank": statistics.median(effective_rank(sv) for sv in spectra),
            "mean σ_i/σ_1": normalised}


def seed_bleu_experiment(model: nn.Module, tokenizer: PreTrainedTokenizerBase, n_train: int = 4, epochs: int = 5,
                         eval_limit: int = 8, r: int = 8, lora_alpha: float = 16, lora_dropout: float = 0.1,
                         lr: float = 2e-3, max_new_tokens: int = 16, seed: int = 0) -> dict:
    """Seed 000's setup measured: LoRA on `n_train` examples for `epochs` epochs, BLEU on held-out prompts.

    `model` is modified (LoRA is injected): pass a copy you own, e.g. `lc.shared_base_copy(base)`.
    The training pairs are spread over the shipped recommendations set so they cover several
    interests; the held-out prompts are interests never seen in training. BLEU is sacrebleu's
    0–100 scale (the seed's 0.65 would be 65 here).
    """
    full = load_dataset("recommendations")
    step = max(1, len(full.train) // n_train)
    held_out = full.test[::max(1, len(full.test) // eval_limit)][:eval_limit]
    data = Dataset("seed-000 setup", full.train[::step][:n_train], held_out)
    inject_lora(model, LoraConfig(r=r, lora_alpha=lora_alpha, lora_dropout=lora_dropout), generator=generator(seed))
    # One batch holds every training pair, so one optimizer step is one epoch.
    trainer = Trainer(model, tokenizer, data, TrainConfig(lr=lr, steps=epochs, batch_size=len(data.train),
                                                          warmup_steps=1, seed=seed))
    t0 = time.perf_counter()
    before = trainer.evaluate("test", bleu=True, max_new_tokens=max_new_tokens)  # generation is the slow part
    history = trainer.run(epochs)
    after = trainer.evaluate("test", bleu=True, max_new_tokens=max_new_tokens)
    return {"train_pairs": len(data.train), "epochs": epochs, "test_pairs": len(data.test),
            "bleu_before": before["bleu"], "bleu_after": after["bleu"], "loss_before": before["loss"],
            "loss_after": after["loss"], "loss_change": after["loss"] - before["loss"],
            "train_loss": [m["loss"] for m in history],
            "seconds": time.perf_counter() - t0,
            "samples": [{"prompt": p, "reference": ref, "after": pred} for p, ref, pred in
                        list(zip(after["prompts"], after["references"], after["predictions"], strict=True))[:3]]}
