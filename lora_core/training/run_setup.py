"""A fine-tuning run as the app's Fine-tuning page asks for one: the server's limits checked first, then
the configs and the data, then the run, labelled with the base it trains on; and what the page reads off it.

    request = RunRequest(model_name="distilgpt2-random", r=8, target_modules=["c_attn"], steps=40)
    plan = plan_run(request, load_settings())                 # every ValueError before any model work
    run = start_run(plan, *load_model(request.model_name))    # a LiveRun, with base name, precision, size
    view = live_view(run)                                     # the numbers and curves while it trains

Nothing here knows about Streamlit; the page keeps the cached base and the session state.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch.nn as nn
from transformers import PreTrainedTokenizerBase

from ..config import ALL_LINEAR, LoraConfig
from ..inject import candidate_modules
from ..models.sources import build_on_meta
from ..peft_io import peft_snippet
from ..quant.nf4 import PRECISIONS, weight_bytes
from .data import Dataset, load_dataset, load_jsonl
from .live import LiveRun
from .trainer import TrainConfig

if TYPE_CHECKING:
    from ..serve.settings import Settings

__all__ = ["DATA_CHOICES", "INIT_CHOICES", "PRECISIONS", "R_CHOICES", "RunPlan", "RunRequest", "adapter_label",
           "default_targets", "download_name", "export_snippet", "live_view", "plan_run", "rank_choices",
           "results_view", "start_run"]

SHIPPED_DATA = "recommendations"
UPLOAD = "upload a .jsonl"
DATA_CHOICES = (SHIPPED_DATA, UPLOAD)
INIT_CHOICES = (True, "gaussian", "pissa", False)
# The form's r slider. The Load page's adapter limit is derived from its largest (serve.upload_limits), so
# every adapter the form can make loads back.
R_CHOICES = (1, 2, 4, 8, 16, 32, 64)
FORM_TARGETS = ("q_proj", "v_proj", "c_attn")  # the form's default: PEFT's defaults for Llama and GPT-2
# What the exported adapter fits, said beside the PEFT snippet for the bases that need a word.
BASE_NOTES = {"smollm2-135m": "the exact base: SmolLM2-135M-Instruct dequantized from its Q4_1 GGUF. The hub's "
                              "HuggingFaceTB/SmolLM2-135M-Instruct is close to it, not identical.",
              "distilgpt2-random": "random weights (seed 0): the adapter only fits this exact random base."}
MIB = 2**20


def rank_choices(settings: Settings) -> list[int]:
    """The form's r slider: R_CHOICES up to the server's max_r (at least the smallest, r = 1)."""
    return [r for r in R_CHOICES if r <= settings.max_r] or [R_CHOICES[0]]


@dataclass(frozen=True)
class RunRequest:
    """What the Fine-tuning form asks for, as typed; `plan_run` checks all of it."""

    model_name: str
    precision: str = "fp32"                # how the frozen base is stored: fp32, bf16 or nf4
    r: int = 8
    lora_alpha: float = 16.0
    lora_dropout: float = 0.0
    init_lora_weights: bool | str = True
    target_modules: list[str] = field(default_factory=lambda: ["c_attn"])  # 'all-linear' among them wins
    use_rslora: bool = False
    lr: float = 2e-3
    steps: int = 40
    batch_size: int = 8
    seq_len: int = 64
    data: str = SHIPPED_DATA               # SHIPPED_DATA or UPLOAD
    seed: int = 0                          # A's init, the data order and dropout: a sweep's repeats differ by it


@dataclass(frozen=True)
class RunPlan:
    """A checked request: the LoRA and training configs and the dataset, ready to start."""

    request: RunRequest
    lora_config: LoraConfig
    train_config: TrainConfig
    dataset: Dataset


def default_targets(candidates: list[str]) -> list[str]:
    """The form's starting targets among a model's candidate modules (q_proj, v_proj on Llama; c_attn on GPT-2)."""
    return [t for t in FORM_TARGETS if t in candidates]


def plan_run(request: RunRequest, settings: Settings, upload: bytes | None = None,
             upload_name: str = "upload") -> RunPlan:
    """Check the request against the server's limits, build the configs, read the data.

    The order is the one a learner fixes things in: limits, then the LoRA and training settings,
    then the file. Each failure is a ValueError naming the field, its value and what is allowed.
    """
    for name, value in (("r", request.r), ("steps", request.steps), ("batch_size", request.batch_size),
                        ("seq_len", request.seq_len)):
        settings.check(name, value)
    if request.precision not in PRECISIONS:
        raise ValueError(f"precision={request.precision!r} is not allowed: use one of {', '.join(PRECISIONS)}")
    if not request.target_modules:
        # LoraConfig cannot know the model; here we do (a random-weights model has its namesake's shape)
        suggestion = default_targets(candidate_modules(build_on_meta(request.model_name.removesuffix("-random"))))
        raise ValueError(f"target_modules=[] is not allowed: pick at least one module of {request.model_name}, "
                         f"e.g. {suggestion}, or {ALL_LINEAR!r}")
    targets = ALL_LINEAR if ALL_LINEAR in request.target_modules else list(request.target_modules)
    lora_config = LoraConfig(r=request.r, lora_alpha=request.lora_alpha, lora_dropout=request.lora_dropout,
                             target_modules=targets, use_rslora=request.use_rslora,
                             init_lora_weights=request.init_lora_weights, task_type="CAUSAL_LM")
    train_config = TrainConfig(lr=request.lr, steps=int(request.steps), batch_size=int(request.batch_size),
                               seq_len=int(request.seq_len), seed=request.seed)
    if request.data == SHIPPED_DATA:
        dataset = load_dataset(SHIPPED_DATA)
    elif request.data != UPLOAD:
        raise ValueError(f"data={request.data!r} is not allowed: use one of {DATA_CHOICES}")
    elif upload is None:
        raise ValueError(f"data={UPLOAD!r} needs a file: choose one in the uploader")
    else:
        settings.check("upload_bytes", len(upload))
        dataset = Dataset.from_pairs(load_jsonl(upload, max_rows=settings.max_dataset_rows), name=upload_name)
    return RunPlan(request, lora_config, train_config, dataset)


def start_run(plan: RunPlan, base: nn.Module, tokenizer: PreTrainedTokenizerBase) -> LiveRun:
    """Start the run on its own module tree over `base`, labelled with the base's name, precision and size."""
    run = LiveRun.start(base, tokenizer, plan.dataset, plan.lora_config, plan.train_config, seed=plan.request.seed)
    run.base_name, run.base_precision = plan.request.model_name, plan.request.precision
    run.base_bytes = weight_bytes(base)
    return run


# --- what the page reads off a run ----------------------------------------------------------------------
def live_view(run: LiveRun) -> dict:
    """The numbers and curves the page shows while the run trains (and after)."""
    trainable, total = run.parameters
    last = run.history[-1] if run.history else {}
    latest = run.probes[-1] if run.probes else {"step": run.step, "samples": [""] * len(run.sample_prompts)}
    return {"step": run.step, "steps": run.train_config.steps, "progress": run.step / run.train_config.steps,
            "started": bool(last), "loss": last.get("loss"), "tokens_per_s": last.get("tokens_per_s"),
            "delta_norm": last.get("delta_norm", 0.0), "trainable": trainable, "total": total,
            "trainable_percent": 100 * trainable / total,
            "loss_curve": [h["loss"] for h in run.history], "ppl_curve": [p["ppl"] for p in run.probes],
            "samples_step": latest["step"],
            "samples": list(zip(run.sample_prompts, latest["samples"], strict=True))}


def results_view(run: LiveRun) -> dict | None:
    """Held-out BLEU, loss and general-English perplexity before and after, with their changes; the base's
    size in MiB; and the held-out table. None when the data had no held-out split."""
    before, after = run.before, run.after
    if "bleu" not in before or "bleu" not in after:
        return None
    measured = ("bleu", "heldout_loss", "ppl_general")
    return {**{k: after[k] for k in measured}, **{f"{k}_change": after[k] - before[k] for k in measured},
            "n_prompts": len(before["prompts"]), "base_mib": run.base_bytes / MIB, "base_precision": run.base_precision,
            "table": [{"prompt": p, "reference": ref, "before": b, "after": a} for p, ref, b, a in
                      zip(before["prompts"], before["references"], before["predictions"], after["predictions"],
                          strict=True)]}


def adapter_label(run: LiveRun, fallback_name: str = "") -> str:
    """How the run's adapter is listed for other pages: base, rank and steps ('distilgpt2 r=8 (40 steps)')."""
    return f"{run.base_name or fallback_name} r={run.lora_config.r} ({run.step} steps)"


def export_snippet(run: LiveRun, fallback_name: str = "") -> str:
    """PEFT code that loads the downloaded adapter onto the base it was trained on."""
    base_name = run.base_name or fallback_name
    source = getattr(run.model.config, "name_or_path", "") or base_name
    return peft_snippet(source, note=BASE_NOTES.get(base_name, ""))


def download_name(run: LiveRun, fallback_name: str = "") -> str:
    """The adapter zip's file name: lora-<base>-r<r>.zip."""
    return f"lora-{run.base_name or fallback_name}-r{run.lora_config.r}.zip"
