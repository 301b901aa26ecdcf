"""LoRA fine-tuning across processes: the same Trainer, with accelerate's DDP under it.

    torchrun --nproc_per_node 2 -m lora_core.finetune --model distilgpt2-random --steps 20   # 2 CPU processes
    accelerate launch --num_processes 4 -m lora_core.finetune ...                            # 4 GPUs (NCCL)

Data parallelism in one picture. Every process holds the whole model: the frozen base and the adapter. Each step,
every process draws the same global batch of `world_size * batch_size` examples (one seeded order for all), keeps
its own slice of it (accelerate's `split_between_processes`), and runs forward and backward on that slice alone.
DDP then all-reduces the gradients, so every process holds the gradient of the whole global batch and takes the
same optimizer step. Only parameters that require grad have gradients, so with LoRA only the adapter's factors
(plus biases under `bias`, and `modules_to_save` copies) cross the wire: for distilgpt2's c_attn at r = 8 that is
147,456 floats per step (0.59 MB), against 81.9 M (328 MB) for full fine-tuning. `WireCounter` measures it from
DDP's own buckets through a communication hook.

The result equals one process training on the global batch: each process scales its summed token loss by
`world_size / n_targets`, where n_targets counts the completion tokens of the whole global batch (every process
knows the batch, so no collective is needed), and DDP's average over processes undoes the `world_size`. Padding
differs (each slice pads to its own longest example), which changes nothing but fp32 rounding. Each process draws
its dropout masks from its own stream (the seed, offset by its rank), so with dropout > 0 the two runs are equal
in distribution, not bitwise.

`strategy="fsdp"` (the CLI's --fsdp) shards every weight instead of copying it: FSDP2's `fully_shard` on each
transformer block and the root, as PEFT's FSDP guide wraps a model. The model is sharded while still on the CPU,
so each device only ever holds 1/N of the frozen base (each process does load the whole base into CPU memory
first). Each process gathers a block's weights when it runs it (forward and backward): the base crosses the wire
every step, which DDP never sends. The gradients of what trains are reduce-scattered, so the result is the same.

Every process checks the same all-reduced loss and gradient norm, so a diverging step stops every process at the
same place and no process is left waiting on a collective. Rank 0 alone logs and saves, once, into a temporary
folder renamed into place (`save_adapter_atomically`); it alone evaluates under DDP, while under FSDP every
process takes part in each forward.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import socket
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist
import torch.nn as nn
from torch.distributed.algorithms.ddp_comm_hooks import default_hooks
from transformers import PreTrainedTokenizerBase

from ..device import autocast
from ..peft_io import adapter_config_dict, adapter_keys, save_adapter
from .data import IGNORE_INDEX, Dataset, collate
from .metrics import token_nll
from .trainer import TrainConfig, Trainer

BACKENDS = ("gloo", "nccl")
STRATEGIES = ("ddp", "fsdp")
# what a run writes into its folder: replaced together when the folder is saved again
RUN_FILES = ("adapter_config.json", "adapter_model.safetensors", "metrics.json", "merged")


def world_size() -> int:
    """The number of processes the launcher (torchrun, accelerate launch) started; 1 when run plainly."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def local_launcher(processes: int) -> list[str]:
    """`python -m torch.distributed.run` starting `processes` processes on this machine (127.0.0.1, a free port);
    append `-m module args` or a script."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(processes),
            "--master_addr", "127.0.0.1", "--master_port", str(port)]


def launch_type() -> str:
    """"FSDP" or "DEEPSPEED" when `accelerate launch` was given such a config (it says so in the environment),
    else "DDP"."""
    for kind in ("FSDP", "DEEPSPEED"):
        if os.environ.get(f"ACCELERATE_USE_{kind}", "false").lower() in ("1", "true"):
            return kind
    return "DDP"


def check_backend(backend: str | None, device: str) -> str:
    """The process-group backend: `backend`, or gloo on a CPU and NCCL on CUDA. Unknown ones are a ValueError."""
    if backend is None:
        return "nccl" if device == "cuda" else "gloo"
    if backend not in BACKENDS:
        raise ValueError(f"backend={backend!r} is not allowed: use 'gloo' (CPU) or 'nccl' (CUDA)")
    if backend == "nccl" and device != "cuda":
        raise ValueError(f"backend='nccl' is not allowed with device={device!r}: NCCL moves CUDA tensors only; "
                         "use backend='gloo' on a CPU")
    return backend


def check_merge(distributed_type: str) -> None:
    """Merging ΔW into a sharded base is not supported (PEFT's FSDP and DeepSpeed docs say so): refuse up front,
    on every process alike, rather than after training with one process waiting on the others."""
    if distributed_type in ("FSDP", "DEEPSPEED"):
        raise ValueError(f"merge=True is not allowed under {distributed_type}: the frozen base is sharded across "
                         "processes, so no process holds a whole weight to merge ΔW into. Save the adapter, then "
                         "merge it in one process (lc.load_adapter, then lc.merge_and_unload)")


@dataclass
class WireCounter:
    """What DDP all-reduced: bytes and calls, counted from its gradient buckets (a communication hook)."""

    bytes: int = 0
    calls: int = 0


def _counting_allreduce(counter: WireCounter, bucket):  # no annotations: DDP checks them, and they are strings here
    """DDP's own all-reduce (sum, then divide by the world size) of a dist.GradBucket, after counting its bytes."""
    buffer = bucket.buffer()  # the flattened gradients of one bucket of parameters
    counter.bytes += buffer.numel() * buffer.element_size()
    counter.calls += 1
    return default_hooks.allreduce_hook(None, bucket)


def shard_for_fsdp(model: nn.Module) -> nn.Module:
    """FSDP2 (`fully_shard`) as PEFT's FSDP guide wraps a model: each transformer block (the classes the model
    lists in `_no_split_modules`) is one unit, then the root. A unit may hold frozen and trainable weights
    together. Every weight becomes a DTensor sharded along dim 0 across the processes; in place."""
    from torch.distributed.fsdp import fully_shard

    blocks = set(getattr(model, "_no_split_modules", None) or ())
    for module in model.modules():
        if type(module).__name__ in blocks:
            fully_shard(module)
    fully_shard(model)
    return model


def _write_peft_files(tensors: dict[str, torch.Tensor], config: dict, folder: Path) -> None:
    from safetensors.torch import save_file

    save_file(tensors, folder / "adapter_model.safetensors", metadata={"format": "pt"})
    (folder / "adapter_config.json").write_text(json.dumps(config, indent=2, sort_keys=True))


def save_adapter_atomically(model: nn.Module, out: str | os.PathLike,
                            full_state: dict[str, torch.Tensor] | None = None) -> Path:
    """`save_adapter` into a fresh folder beside `out`, then renamed into place: a reader never sees half a save.

    `full_state`: the adapter's tensors under PEFT's keys, gathered whole from a sharded (FSDP) model, whose own
    parameters hold only this process's shards. An existing `out` is replaced whole, keeping files that are not
    a run's (`RUN_FILES`)."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.new.", dir=out.parent))
    try:
        if full_state is None:
            save_adapter(model, tmp)
        else:
            tensors = {key: full_state[key].contiguous() for key in adapter_keys(model)}
            _write_peft_files(tensors, adapter_config_dict(model), tmp)
        if out.exists():  # swap folders: the old one aside, the new one in, one rename each
            old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old.", dir=out.parent))
            os.replace(out, old / "run")
            os.replace(tmp, out)
            for item in (old / "run").iterdir():  # keep a user's own files; a past run's results go
                if item.name not in RUN_FILES and not (out / item.name).exists():
                    os.replace(item, out / item.name)
            shutil.rmtree(old)
        else:
            os.replace(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


class DistributedTrainer(Trainer):
    """A Trainer whose steps run on every process of a launch, with DDP (through accelerate) summing the gradients.

    `cfg.batch_size` is per process: one step reads `world_size * batch_size * grad_accum` examples in all, as a
    single-process Trainer with `batch_size * world_size` does. `self.model` stays the plain model, for evaluation
    and saving on rank 0; `self.ddp_model` is the wrapped one the steps run through.
    """

    def __init__(self, model: nn.Module, tokenizer: PreTrainedTokenizerBase, dataset: Dataset,
                 cfg: TrainConfig | None = None, full_finetune: bool = False, backend: str | None = None,
                 strategy: str = "ddp"):
        from accelerate import Accelerator, PartialState
        from accelerate.utils import DistributedDataParallelKwargs

        if strategy not in STRATEGIES:
            raise ValueError(f"strategy={strategy!r} is not allowed: use 'ddp' (each process holds the whole base) "
                             "or 'fsdp' (the base sharded across processes)")
        if launch_type() != "DDP":  # before accelerate reads the config (a DeepSpeed one imports deepspeed)
            raise ValueError(f"distributed_type={launch_type()!r} is not allowed: DistributedTrainer shards with its "
                             "own strategy='fsdp' (--fsdp); launch without an accelerate FSDP or DeepSpeed config")
        if strategy == "fsdp" and world_size() < 2:
            raise ValueError("strategy='fsdp' is not allowed in one process: launch with torchrun --nproc_per_node N")
        cfg = cfg or TrainConfig()
        device = cfg.device or ("cuda" if torch.cuda.is_available() else "cpu")
        backend = check_backend(backend, device.split(":")[0])
        PartialState(cpu=device == "cpu", backend=backend)  # the process group; Accelerator shares it
        # find_unused_parameters=False: every trainable parameter gets a gradient every step (checked in tests);
        # broadcast_buffers=False: the model's buffers (causal masks, rotary tables) never change
        ddp = DistributedDataParallelKwargs(find_unused_parameters=False, broadcast_buffers=False)
        self.accelerator = acc = Accelerator(cpu=device == "cpu", kwargs_handlers=[ddp])
        if acc.distributed_type not in ("NO", "MULTI_CPU", "MULTI_GPU"):
            raise ValueError(f"distributed_type={acc.distributed_type.value!r} is not allowed: DistributedTrainer "
                             "shards with its own strategy='fsdp' (--fsdp); launch without an accelerate FSDP or "
                             "DeepSpeed config")
        total = acc.num_processes * cfg.batch_size
        if total > len(dataset.train):
            raise ValueError(f"world_size={acc.num_processes} is not allowed with batch_size={cfg.batch_size} on "
                             f"{len(dataset.train)} training examples: one global batch ({total}) would repeat "
                             "examples within a step; use fewer processes or a smaller batch_size")
        # FSDP: build on the CPU and shard there; fully_shard puts each shard on this process's device
        here = "cpu" if strategy == "fsdp" else str(acc.device)
        super().__init__(model, tokenizer, dataset, TrainConfig(**{**cfg.__dict__, "device": here}), full_finetune)
        self.cfg = TrainConfig(**{**cfg.__dict__, "device": str(acc.device)})
        self.strategy = strategy
        self.wire: WireCounter | None = WireCounter()  # DDP's all-reduced bytes; None under FSDP (no hook)
        if strategy == "ddp":
            self.ddp_model, self.optimizer = acc.prepare(self.model, self.optimizer)
            if isinstance(self.ddp_model, nn.parallel.DistributedDataParallel):
                self.ddp_model.register_comm_hook(self.wire, _counting_allreduce)
        else:  # the weights are replaced by sharded ones: collect what trains, and build the optimizer, again
            self.ddp_model, self.wire = shard_for_fsdp(self.model), None
            self.device = acc.device
            self.names = [n for n, p in self.model.named_parameters() if p.requires_grad]
            self.params = [p for p in self.model.parameters() if p.requires_grad]
            self.optimizer = self._build_optimizer(self.model)
            self._last_good = self._snapshot()
        # one data order for all, but each process its own dropout stream (the seed, offset by the rank)
        seed = cfg.seed + 7919 * acc.process_index
        self._rng_state = {"cpu": torch.Generator().manual_seed(seed).get_state()}
        if self.device.type == "cuda":
            self._rng_state["cuda"] = torch.Generator(device=self.device).manual_seed(seed).get_state()

    @property
    def is_main(self) -> bool:
        """Rank 0: the one process that logs, evaluates and saves."""
        return self.accelerator.is_main_process

    def _draw(self, n: int) -> list[int]:
        """The next `n` example indices of the shared order (the same on every process)."""
        while len(self._queue) < n:
            self._queue += torch.randperm(len(self.examples), generator=self._order_rng).tolist()
        picked, self._queue = self._queue[:n], self._queue[n:]
        return picked

    def _forward_backward(self, lr: float) -> tuple[float, int, torch.Tensor]:
        cfg, acc = self.cfg, self.accelerator
        world = acc.num_processes
        rounds = [self._draw(cfg.batch_size * world) for _ in range(cfg.grad_accum)]  # the global batch
        n_targets = sum(sum(t != IGNORE_INDEX for t in self.examples[i][1][1:]) for r in rounds for i in r)
        local = torch.zeros(2, dtype=torch.float64, device=self.device)  # (loss, tokens) of this slice
        self.ddp_model.train()
        with self._own_rng():
            for k, picked in enumerate(rounds):
                with acc.split_between_processes(picked) as mine:
                    b = {key: v.to(self.device) for key, v in
                         collate([self.examples[i] for i in mine], self.tokenizer.pad_token_id).items()}
                last = k == len(rounds) - 1  # reduce the gradients once per step, after the last micro-batch
                if self.strategy == "fsdp":
                    self.ddp_model.set_requires_gradient_sync(last)
                quiet = self.strategy == "ddp" and not last
                with acc.no_sync(self.ddp_model) if quiet else contextlib.nullcontext():
                    with autocast(self.device):
                        logits = self.ddp_model(input_ids=b["input_ids"], attention_mask=b["attention_mask"],
                                                use_cache=False).logits  # (b, T, V)
                    loss = token_nll(logits, b["labels"]) / n_targets
                    (loss * world).backward()  # DDP averages over processes; the sum is what one process gets
                local += torch.tensor([loss.item(), float(b["attention_mask"].sum())], dtype=torch.float64,
                                      device=self.device)
        if dist.is_initialized():  # every process sees the global loss, so all stop together if it is not finite
            dist.all_reduce(local)
        loss_sum, tokens = local[0].item(), int(local[1].item())
        if not math.isfinite(loss_sum):
            self._diverge("the loss", loss_sum, lr)
        norm = torch.nn.utils.clip_grad_norm_(self.params, cfg.max_grad_norm or math.inf)  # equal everywhere
        norm = norm.full_tensor() if hasattr(norm, "full_tensor") else norm  # FSDP: a replicated DTensor
        if not torch.isfinite(norm):
            self._diverge("the gradient norm", norm.item(), lr)
        return loss_sum, tokens, norm

    def save(self, out: str | os.PathLike) -> Path | None:
        """Rank 0 writes the adapter atomically; every process waits until it is there. Returns the folder on
        rank 0, None elsewhere. Under FSDP every process first takes part in gathering the adapter's shards."""
        full = None
        if self.strategy == "fsdp":  # every process gathers each adapter tensor, in the same order
            params = dict(self.model.named_parameters(remove_duplicate=False))
            full = {key: params[name].detach().full_tensor().cpu() for key, name in adapter_keys(self.model).items()}
        path = save_adapter_atomically(self.model, out, full) if self.is_main else None
        self.accelerator.wait_for_everyone()
        return path

