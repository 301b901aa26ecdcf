"""How fast is a LoRA training step? Timed against its floor: the frozen base's own backward.

    python -m lora_core.bench                       # CPU, fp32, batch 8 × seq 64, a table
    python -m lora_core.bench --json --runs 3       # one JSON line, medians of three runs
    python -m lora_core.bench --device cuda --dtype bf16 --batch 16 --seq 256 --compile --cuda-graphs

A LoRA step can never be cheaper than the *floor*: a step through the frozen base with every
parameter frozen, whose backward still computes the gradient of the loss with respect to the
activations, all the way down (here: to the input embeddings' output, which is made to require
grad so that the backward really runs). LoRA adds, on top, the small A/B matmuls, their weight
gradients and an AdamW step over r·(in+out) numbers per layer; full fine-tuning adds a weight
gradient for every matrix (a second matmul per layer in the backward) and AdamW over all of
them. So LoRA saves the weight gradients and the optimizer states, memory first, and time only
where those are a large share of the step (LoRA, arXiv 2106.09685, Section 4.2).

Variants, all in ONE process, on distilgpt2's shapes with seeded random weights built from
`load_config("distilgpt2")` (no download), sharing one frozen base (`shared_base_copy`):

    frozen        every parameter frozen; backward through the activations only (the floor)
    ours          lora_core's `inject_lora`, AdamW over the factors
    peft          `peft.get_peft_model` with the same config, AdamW over the factors
    full          full fine-tuning (its own copy of the weights), AdamW over everything

`--adapters` picks what ours and peft train, on the same targets and ranks (variants.py): one plain LoRA adapter
("lora", the default), one DoRA adapter ("dora") and two LoRA adapters both active ("two-adapters"). For each, the
result's "comparisons" hold ours ÷ floor, PEFT ÷ floor and ours ÷ PEFT from the same interleaved run, and every
case records its trainable parameters, gradient and AdamW bytes and the activation bytes one forward saves.

Timing: every variant is warmed up, then timed one step at a time in interleaved rounds (the
order rotates each round), so load from other processes hits every variant alike; each case
reports the median. Ratios are computed within the run. `--runs N` repeats the whole
measurement N times in this process and reports the median of the per-run medians and ratios.
Nothing here is asserted on: timings are measurements, never test conditions.
"""

from __future__ import annotations

import copy
import os
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import torch
import torch.nn as nn
from transformers import AutoModelForCausalLM, PretrainedConfig

from ..device import describe_device, pick_device
from ..inject import lora_layers
from ..layers import LoraLinear
from ..models.sources import load_config
from ..sharing import shared_base_copy
from .report import DEFAULT_CASE, adapter_ratios, floor_ratios
from .step import cuda_graph_step, frozen_graph_step, graph_twin, train_step
from .variants import ADAPTERS, TARGETS, check_adapter, ours_model, peft_model, saved_activation_bytes

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}
# "ours" is lora_core as shipped; "ours-addmm" and "ours-plain" force LoraLinear's slower forward paths,
# so one run can show what each fast path buys (see LoraLinear.forward_path and docs/performance.md).
VARIANTS = ("frozen", "ours", "ours-addmm", "ours-plain", "peft", "full")

@dataclass
class BenchConfig:
    """What to time. The defaults are the CPU setting quoted in the issue: fp32, batch 8 × seq 64."""

    device: str = "cpu"                                    # "cpu" or "cuda"
    dtype: str = "fp32"                                    # "fp32" or "bf16" (weights; adapters stay fp32)
    batch: int = 8
    seq: int = 64
    repeats: int = 7                                       # timed steps per variant and run (median taken)
    warmup: int = 2                                        # untimed steps per variant first
    runs: int = 1                                          # whole measurements; medians across runs reported
    targets: tuple[str, ...] = ("c_attn", "all-linear")
    ranks: tuple[int, ...] = (8, 64)
    lora_alpha: float = 16.0
    lr: float = 1e-4
    compile: bool = False                                  # also time torch.compile'd models
    cuda_graphs: bool = False                              # also time whole-step CUDA graphs (CUDA only)
    compile_budget_s: float = 240.0                        # stop compiling once one compile takes longer
    variants: tuple[str, ...] = ("frozen", "ours", "peft", "full")
    adapters: tuple[str, ...] = ("lora",)                  # what ours and peft train (variants.ADAPTERS)
    threads: int | None = None                             # CPU threads for the run; None keeps torch's setting
    seed: int = 0

    def __post_init__(self) -> None:
        if self.dtype not in DTYPES:
            raise ValueError(f"dtype={self.dtype!r} is not allowed: choose one of {sorted(DTYPES)}")
        if self.threads is not None and self.threads < 1:
            raise ValueError(f"threads={self.threads!r} is not allowed: it must be at least 1, or None")
        for name in ("batch", "seq", "repeats", "runs"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name}={getattr(self, name)!r} is not allowed: it must be at least 1")
        if self.warmup < 0:
            raise ValueError(f"warmup={self.warmup!r} is not allowed: it must be 0 or more")
        unknown = [t for t in self.targets if t not in TARGETS]
        if unknown:
            raise ValueError(f"targets={unknown!r} is not allowed: each target set must be one of {sorted(TARGETS)}")
        bad = [v for v in self.variants if v not in VARIANTS]
        if bad or "frozen" not in self.variants:
            raise ValueError(f"variants={list(self.variants)!r} is not allowed: 'frozen' (the floor) plus any of "
                             f"{', '.join(VARIANTS[1:])}")
        if not self.adapters:
            raise ValueError("adapters=[] is not allowed: name at least one of " + ", ".join(ADAPTERS))
        for adapter in self.adapters:
            check_adapter(adapter)
        self.targets, self.ranks, self.variants = tuple(self.targets), tuple(self.ranks), tuple(self.variants)
        self.adapters = tuple(self.adapters)


# A small setting for the app's live button: the same four variants, c_attn r=8 only, ~20-30 s on 2 cores.
# One thread: on a shared 2-core machine a second OpenMP thread that gets descheduled stalls every op.
LIVE = BenchConfig(batch=2, seq=32, repeats=5, warmup=1, targets=("c_attn",), ranks=(8,), threads=1)


@dataclass
class Case:
    """One timed variant. `ms` holds the median step time per mode ("eager", "compiled", ...)."""

    name: str
    variant: str                       # frozen | ours | ours-addmm | ours-plain | peft | full
    targets: str | None = None         # "c_attn" | "all-linear" for adapters
    r: int | None = None
    adapter: str | None = None         # ours and peft: "lora" | "dora" | "two-adapters" (variants.py)
    trainable: int = 0                 # trainable parameters
    state_bytes: int = 0               # AdamW moments actually held after a step (measured from the tensors)
    grad_bytes: int = 0                # one gradient per trainable parameter, in its dtype
    saved_bytes: int = 0               # activations one eager forward saves for the backward (weights excluded)
    ms: dict[str, float] = field(default_factory=dict)
    ms_runs: dict[str, list[float]] = field(default_factory=dict)
    vs_frozen: dict[str, float] = field(default_factory=dict)  # per mode: over the frozen step of the same mode
    vs_floor: dict[str, float] = field(default_factory=dict)   # per mode: over the floor (the fastest frozen step)
    peak_mib: dict[str, float] = field(default_factory=dict)  # CUDA: allocator peak during one step, above resident
    skipped: dict[str, str] = field(default_factory=dict)     # mode -> why it was not timed


# --- the model -------------------------------------------------------------------------------------
def random_model(config: str | PretrainedConfig = "distilgpt2", device: str | torch.device = "cpu",
                 dtype: torch.dtype = torch.float32, seed: int = 0) -> nn.Module:
    """A causal LM with the config's exact shapes and seeded random weights (no download)."""
    cfg = load_config(config) if isinstance(config, str) else config
    with torch.random.fork_rng(devices=[]):  # our seed only; the caller's RNG is left alone
        torch.manual_seed(seed)
        model = AutoModelForCausalLM.from_config(cfg)
    return model.to(device=device, dtype=dtype).train()  # train mode: dropout on, as in a real step


def _require_grad_on_output(module: nn.Module, inputs, output: torch.Tensor) -> torch.Tensor:
    # The floor's backward must run: with every weight frozen, nothing would need a gradient, so the
    # embeddings' output is made a leaf that does, and autograd walks back through every block.
    return output.detach().requires_grad_(True)


@dataclass
class _Runner:
    case: Case
    model: nn.Module
    optimizer: torch.optim.Optimizer | None
    steps: dict[str, Callable[[], None]] = field(default_factory=dict)


def _build(cfg: BenchConfig, base: nn.Module) -> list[_Runner]:
    runners = []

    def optimizer_for(model: nn.Module) -> torch.optim.Optimizer:
        params = [p for p in model.parameters() if p.requires_grad]
        return torch.optim.AdamW(params, lr=cfg.lr)

    frozen = shared_base_copy(base)
    frozen.get_input_embeddings().register_forward_hook(_require_grad_on_output)
    runners.append(_Runner(Case("frozen (floor)", "frozen"), frozen, None))
    for targets in cfg.targets:
        for r in cfg.ranks:
            for adapter in cfg.adapters:
                # a plain LoRA case keeps its old name; "ours dora c_attn r=8", "peft two-adapters c_attn r=8"
                label = f"{targets} r={r}" if adapter == "lora" else f"{adapter} {targets} r={r}"
                # the forced slower paths (ours-addmm, ours-plain) are timed for plain LoRA only
                for variant in ("ours", "ours-addmm", "ours-plain") if adapter == "lora" else ("ours",):
                    if variant not in cfg.variants:
                        continue
                    ours = ours_model(shared_base_copy(base), targets, r, cfg.lora_alpha, adapter)
                    path = {"ours": "one-node", "ours-addmm": "addmm", "ours-plain": "plain"}[variant]
                    for _, layer in lora_layers(ours):
                        if isinstance(layer, LoraLinear):
                            layer.forward_path = path
                    runners.append(_Runner(Case(f"{variant} {label}", variant, targets, r, adapter), ours,
                                           optimizer_for(ours)))
                if "peft" in cfg.variants:
                    try:
                        theirs = peft_model(shared_base_copy(base), targets, r, cfg.lora_alpha, adapter)
                    except ImportError as err:  # PEFT is a test dependency, not a runtime one
                        print(f"skipping PEFT: {err}", file=sys.stderr)
                        continue
                    runners.append(_Runner(Case(f"peft {label}", "peft", targets, r, adapter), theirs,
                                           optimizer_for(theirs)))
    if "full" in cfg.variants:
        full = copy.deepcopy(base).requires_grad_(True)  # its own weights: AdamW writes them
        runners.append(_Runner(Case("full fine-tuning", "full"), full, optimizer_for(full)))
    for run in runners:
        run.case.trainable = sum(p.numel() for p in run.model.parameters() if p.requires_grad)
        run.case.grad_bytes = sum(p.numel() * p.element_size() for p in run.model.parameters() if p.requires_grad)
    return runners


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _add_compiled(runners: list[_Runner], ids: torch.Tensor, cfg: BenchConfig, device: torch.device,
                  log: Callable[[str], None]) -> None:
    """torch.compile each model (forward and, through AOTAutograd, backward); give up gracefully."""
    why = None
    if not hasattr(torch, "compile"):
        why = "torch.compile is not available"
    else:
        # Every variant runs the same transformers code objects with different modules inside; with
        # dynamo's default of 8 compiled versions per frame, later variants would silently fall back
        # to eager. Allow one version per variant (and mode).
        import torch._dynamo.config as dynamo

        dynamo.recompile_limit = max(dynamo.recompile_limit, 4 * len(runners))
        dynamo.accumulated_recompile_limit = max(dynamo.accumulated_recompile_limit, 64 * len(runners))
    for run in runners:
        if why:
            run.case.skipped["compiled"] = why
            continue
        try:
            compiled = torch.compile(run.model)
            step = lambda m=compiled, o=run.optimizer: train_step(m, o, ids)
            t0 = time.perf_counter()
            step()  # the first call compiles
            _sync(device)
            took = time.perf_counter() - t0
        except Exception as err:  # an unsupported backend or compiler: report, keep the eager numbers
            why = f"torch.compile failed: {type(err).__name__}: {str(err).splitlines()[0][:160]}"
            run.case.skipped["compiled"] = why
            continue
        run.steps["compiled"] = step
        log(f"compiled {run.case.name} in {took:.0f} s")
        if took > cfg.compile_budget_s:
            why = f"skipped: one compile took {took:.0f} s (> {cfg.compile_budget_s:.0f} s budget)"


def _add_cuda_graphs(runners: list[_Runner], ids: torch.Tensor, cfg: BenchConfig, device: torch.device) -> None:
    """A captured whole step per variant, with its own capturable AdamW (the eager steps keep theirs)."""
    for run in runners:
        if device.type != "cuda":
            run.case.skipped["cudagraph"] = "CUDA graphs need a CUDA device"
            continue
        twin = graph_twin(run.model)  # its own trainable weights: eager and captured steps never share them
        try:
            if run.optimizer is None:
                run.steps["cudagraph"] = frozen_graph_step(twin, ids)
            else:
                params = [p for p in twin.parameters() if p.requires_grad]
                opt = torch.optim.AdamW(params, lr=cfg.lr, capturable=True)
                run.steps["cudagraph"] = cuda_graph_step(twin, opt, ids)
        except Exception as err:  # e.g. a host sync inside the model's forward breaks capture
            run.case.skipped["cudagraph"] = f"capture failed: {type(err).__name__}: {str(err).splitlines()[0][:160]}"


def _measure_once(runners: list[_Runner], cfg: BenchConfig, device: torch.device) -> dict[str, dict[str, float]]:
    """One run: warm every (variant, mode), then interleaved timed rounds; median ms per (case, mode)."""
    jobs = [(run, mode) for run in runners for mode in run.steps]
    for _ in range(cfg.warmup):
        for run, mode in jobs:
            run.steps[mode]()
    _sync(device)
    times: dict[tuple[str, str], list[float]] = {(run.case.name, mode): [] for run, mode in jobs}
    for k in range(cfg.repeats):
        shift = k % len(jobs)
        for run, mode in jobs[shift:] + jobs[:shift]:  # rotate, so no variant always runs first
            _sync(device)
            t0 = time.perf_counter()
            run.steps[mode]()
            _sync(device)
            times[run.case.name, mode].append((time.perf_counter() - t0) * 1e3)
    out: dict[str, dict[str, float]] = {}
    for (name, mode), ts in times.items():
        out.setdefault(name, {})[mode] = statistics.median(ts)
    return out


def _peak_memory(runners: list[_Runner], device: torch.device) -> None:
    """CUDA only: the allocator's peak during one step, above what was resident before it."""
    if device.type != "cuda":
        return
    for run in runners:
        for mode, step in run.steps.items():
            _sync(device)
            torch.cuda.reset_peak_memory_stats(device)
            before = torch.cuda.memory_allocated(device)
            step()
            _sync(device)
            run.case.peak_mib[mode] = (torch.cuda.max_memory_allocated(device) - before) / 2**20


def _state_bytes(optimizer: torch.optim.Optimizer | None) -> int:
    if optimizer is None:
        return 0
    return sum(t.numel() * t.element_size() for state in optimizer.state.values()
               for t in state.values() if torch.is_tensor(t) and t.dim() > 0)


def run_benchmark(cfg: BenchConfig | None = None, model_config: str | PretrainedConfig = "distilgpt2",
                  log: Callable[[str], None] | None = None) -> dict:
    """Time every variant of `cfg` and return the JSON-ready result (see the module docstring)."""
    cfg = cfg or BenchConfig()
    log = log or (lambda msg: None)
    threads = torch.get_num_threads()
    if cfg.threads is not None:
        torch.set_num_threads(cfg.threads)
    try:
        return _run(cfg, model_config, log)
    finally:
        torch.set_num_threads(threads)


def _run(cfg: BenchConfig, model_config: str | PretrainedConfig, log: Callable[[str], None]) -> dict:
    load_start = list(os.getloadavg()) if hasattr(os, "getloadavg") else None
    device = pick_device(cfg.device)
    dtype = DTYPES[cfg.dtype]
    base = random_model(model_config, device, dtype, cfg.seed)
    vocab = base.get_input_embeddings().num_embeddings
    ids = torch.randint(0, vocab, (cfg.batch, cfg.seq), generator=torch.Generator().manual_seed(cfg.seed)).to(device)
    runners = _build(cfg, base)
    for run in runners:
        run.steps["eager"] = lambda m=run.model, o=run.optimizer: train_step(m, o, ids)
    if cfg.compile:
        _add_compiled(runners, ids, cfg, device, log)
    if cfg.cuda_graphs:
        _add_cuda_graphs(runners, ids, cfg, device)
    per_run = []
    for i in range(cfg.runs):
        per_run.append(_measure_once(runners, cfg, device))
        log(f"run {i + 1}/{cfg.runs} done")
    _peak_memory(runners, device)
    for run in runners:  # one untimed forward each, after the timing: what the backward would read
        run.case.saved_bytes = saved_activation_bytes(run.model, ids)

    cases = [run.case for run in runners]
    for run in runners:
        case = run.case
        case.state_bytes = _state_bytes(run.optimizer)
        for mode in run.steps:
            case.ms_runs[mode] = [r[case.name][mode] for r in per_run]
            case.ms[mode] = statistics.median(case.ms_runs[mode])
    headline, floor_mode, ours_mode = floor_ratios(cases, cfg.runs)
    result = {
        "benchmark": "lora_core.bench",
        "model": (f"{model_config} shapes, random weights" if isinstance(model_config, str)
                  else f"{model_config.model_type} config, random weights"),
        "default_case": f"{DEFAULT_CASE[0]} r={DEFAULT_CASE[1]}",
        "floor_mode": floor_mode,   # which frozen step was the floor
        "ours_mode": ours_mode,     # which of our steps the headline uses
        **{k: (statistics.median(v) if v else None) for k, v in headline.items()},
        "ratios_per_run": headline,
        "comparisons": adapter_ratios(cases, cfg.runs),  # per adapter, targets and r: ours, PEFT, the floor
        "device": device.type,
        "device_name": describe_device(device),
        "dtype": cfg.dtype,
        "batch": cfg.batch,
        "seq": cfg.seq,
        "repeats": cfg.repeats,
        "warmup": cfg.warmup,
        "runs": cfg.runs,
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        # 1/5/15-minute load averages at the start and the end: other processes' load, in context
        "load_average_start": load_start,
        "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "peak_memory": device.type == "cuda",
        "config": {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(cfg).items()},
        "cases": [asdict(c) for c in cases],
    }
    return result
