# ---
# jupyter:
#   jupytext:
#     cell_metadata_filter: -all
#     notebook_metadata_filter: kernelspec,-jupytext.text_representation.jupytext_version
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Lesson 14 · LoRA across machines: what data parallelism sends, and why LoRA sends so little
#
# One laptop trains SmolLM2; a team trains a 70B model on many GPUs. The usual way to spread training is
# **data parallelism**: every process holds the model, each reads its own slice of the batch, and after the
# backward they combine their gradients so that every copy takes the same step. This lesson derives that
# from first principles, then measures it:
#
# | idea | the question | what we check |
# |---|---|---|
# | gradients of slices | why may a process see only its slice? | the slices' gradients sum to the batch's |
# | all-reduce | how do N processes get that sum? | a ring all-reduce by hand, and the bytes it sends |
# | LoRA on the wire | what crosses? | only what trains: 0.59 MB a step against 328 MB for distilgpt2 |
# | the real thing | do 2 processes train the same adapter as 1? | SmolLM2 on 2 processes against 1, to rounding |
# | FSDP and ZeRO-3 | what if the base does not fit one GPU? | what sharding keeps and sends; merging and QLoRA |

# %%
import tempfile
from pathlib import Path

import torch
import torch.nn as nn
from safetensors.torch import load_file

import lora_core as lc
from lora_core import viz
from lora_core.bench import wire
from lora_core.teach import across_machines
from lora_core.teach.lesson import setup
from lora_core.training.distributed import check_merge

# Every lesson starts here: print the versions and the device, stay offline (HF_HUB_OFFLINE=1 unless
# you set it), and read LORA_FAST=1 into FAST (CI: fewer training steps, the same checks).
FAST = setup("this lesson runs on the CPU, and starts 2 local processes in section 4")

# %% [markdown]
# ## 1. The gradient of a batch is the sum of its slices' gradients
#
# The loss of a batch is a sum over its examples (here: summed over tokens, divided by the batch's token count
# n). A gradient is linear, so the gradient of a sum is the sum of the gradients. Cut the batch in two, let
# each "process" compute the gradient of **its** half's summed loss divided by the **whole** batch's n, add
# the two: that is the whole batch's gradient, exactly the same math. The only catch is the divisor: each
# process must divide by the global n, not by its own slice's.
#
# One LoRA layer with a non-zero B, and a batch of 8 rows:

# %%
gen = torch.Generator().manual_seed(0)
layer = lc.LoraLinear(nn.Linear(16, 12), lc.LoraConfig(r=4, lora_alpha=8), generator=gen)
with torch.no_grad():
    layer.base_layer.weight.copy_(torch.randn(12, 16, generator=gen))
    layer.adapter().B.copy_(torch.randn(12, 4, generator=gen) * 0.1)  # trained-looking: B is not zero
x, y = torch.randn(8, 16, generator=gen), torch.randn(8, 12, generator=gen)
n = y.numel()                                              # the whole batch's count: the divisor everyone uses


def grads(rows: slice) -> list[torch.Tensor]:
    """Gradients of (this slice's summed squared error) / n with respect to what trains."""
    layer.zero_grad(set_to_none=True)
    ((layer(x[rows]) - y[rows]) ** 2).sum().div(n).backward()   # (rows, 16) -> (rows, 12)
    return [p.grad.clone() for p in layer.parameters() if p.requires_grad]


whole = grads(slice(0, 8))
halves = [grads(slice(0, 4)), grads(slice(4, 8))]
summed = [a + b for a, b in zip(*halves, strict=True)]
for w, s in zip(whole, summed, strict=True):
    assert torch.allclose(w, s, atol=1e-6)
print("trainable tensors:", [tuple(g.shape) for g in whole], "(A and B; the base has no gradient)")
print("max |whole-batch gradient − sum of the two halves|:", max((w - s).abs().max().item()
                                                                 for w, s in zip(whole, summed, strict=True)))

# %% [markdown]
# DDP (PyTorch's DistributedDataParallel) **averages** the gradients over the N processes instead of summing
# them, so `lora_core`'s DistributedTrainer multiplies each process's loss by N before the backward: the
# average of N·gᵢ is the sum of gᵢ. Dividing by the global token count needs no communication, because every
# process draws the same global batch (one seeded order) and keeps its own slice.

# %% [markdown]
# ## 2. All-reduce, by hand: how N processes each end up with the sum
#
# Sending every gradient to one process and back would make that process a bottleneck. The **ring
# all-reduce** cuts each process's gradient into N chunks and passes chunks around a ring in two phases:
#
# * **reduce-scatter**, N − 1 steps: each process sends one chunk to its right neighbour, which adds it to its
#   own. Afterwards, process i holds the full sum of chunk (i + 1) mod N;
# * **all-gather**, N − 1 steps: the finished chunks travel round the ring until everyone has all of them.
#
# Each step sends one chunk (1/N of the gradient) per process, so each process sends 2(N − 1)/N of the
# gradient's bytes in all, nearly 2× the gradient whatever N is. That is why the *size* of what trains is
# the size of the bill.

# %%
def ring_allreduce(tensors: list[torch.Tensor]) -> tuple[list[torch.Tensor], int]:
    """Every process's tensor replaced by the sum of all, the ring way; returns (results, bytes sent per process)."""
    N = len(tensors)
    chunks = [list(t.flatten().clone().chunk(N)) for t in tensors]    # chunks[process][k]
    sent = 0
    for step in range(N - 1):                                         # reduce-scatter
        outgoing = [chunks[i][(i - step) % N].clone() for i in range(N)]
        for i in range(N):
            chunks[(i + 1) % N][(i - step) % N] += outgoing[i]        # the right neighbour adds what it got
        sent += outgoing[0].numel() * outgoing[0].element_size()
    for step in range(N - 1):                                         # all-gather
        outgoing = [chunks[i][(i + 1 - step) % N].clone() for i in range(N)]
        for i in range(N):
            chunks[(i + 1) % N][(i + 1 - step) % N] = outgoing[i]     # the right neighbour keeps what it got
        sent += outgoing[0].numel() * outgoing[0].element_size()
    return [torch.cat(c).view_as(t) for c, t in zip(chunks, tensors, strict=True)], sent


N = 4
per_process = [torch.randn(1000, generator=gen) for _ in range(N)]    # 1,000 fp32 numbers: 4,000 bytes each
reduced, sent = ring_allreduce(per_process)
total = torch.stack(per_process).sum(0)
assert all(torch.allclose(r, total, atol=1e-5) for r in reduced)
assert sent == 2 * (N - 1) / N * 4000
print(f"{N} processes, a 4,000-byte gradient each: every process ends with the sum, having sent {sent:,} bytes "
      f"= 2(N−1)/N × 4,000")

# %% [markdown]
# ## 3. What crosses the wire with LoRA: only what trains
#
# DDP all-reduces the gradient of every parameter that requires grad, and nothing else. Under LoRA the
# frozen base has no gradient at all, so the wire carries the adapter's factors: 4 bytes (fp32) per trainable
# parameter per step. On distilgpt2 with c_attn at r = 8 (lesson 2's count) against full fine-tuning:

# %%
lora_trainable = lc.count_lora_parameters("distilgpt2", lc.LoraConfig(r=8, target_modules=["c_attn"])).trainable
full_trainable = lc.count_lora_parameters("distilgpt2", lc.LoraConfig(r=8, target_modules=["c_attn"])).base_total
print(f"LoRA c_attn r=8: {lora_trainable:,} trainable → {4 * lora_trainable / 1e6:.2f} MB of gradients a step")
print(f"full fine-tuning: {full_trainable:,} trainable → {4 * full_trainable / 1e6:.2f} MB a step, "
      f"{full_trainable / lora_trainable:.0f}× more")

# %% [markdown]
# That is the formula. `python -m lora_core.bench.wire` measured it: two processes (gloo, on this kind of
# CPU) trained distilgpt2's shapes with the app's DistributedTrainer, and a DDP communication hook counted
# the bytes of every gradient bucket DDP all-reduced. The shipped measurement:

# %%
measured = wire.shipped()
rows = wire.table(measured)
viz.wire_bars(rows, "Bytes all-reduced per step, measured on 2 processes")

# %%
by_case = {r["case"]: r for r in measured["rows"]}
assert by_case["LoRA c_attn r=8"]["allreduced_bytes_per_step"] == 4 * lora_trainable
assert by_case["full fine-tuning"]["allreduced_bytes_per_step"] == 4 * full_trainable
for r in rows:
    print(f"{r['case']:>22}: {r['MB all-reduced per step']:9.3f} MB per step, {r['× fewer than full']:5.0f}× fewer "
          f"than full; {r['s per step']:.2f} s per step here")

# %% [markdown]
# On this 2-core VM full fine-tuning's step took several times LoRA's. That gap mixes two costs the measurement
# does not separate: computing every weight's gradient and AdamW over 82 M weights, and moving 328 MB. The wire
# alone, between machines: a ring of N processes sends 2(N − 1)/N of the gradient from each, so on a 10 Gb/s
# link (1.25 GB/s):

# %%
link = 10e9 / 8                                            # bytes per second on a 10 Gb/s network
for processes in (2, 8, 64):
    ring = 2 * (processes - 1) / processes
    print(f"{processes:>3} processes: full fine-tuning {ring * 4 * full_trainable / link * 1e3:6.1f} ms of sending "
          f"a step, LoRA c_attn r=8 {ring * 4 * lora_trainable / link * 1e3:5.2f} ms")

# %% [markdown]
# ## 4. The real thing: SmolLM2 on 2 processes against 1
#
# `python -m lora_core.finetune` runs unchanged under `torchrun --nproc_per_node 2`: each process trains on
# its slice of every global batch of 2 × `--batch-size` examples, DDP (through accelerate) all-reduces the
# gradients, and rank 0 alone evaluates and writes the adapter. A plain run with `--batch-size` doubled reads
# the same global batches. The two adapters should agree to fp32 rounding: the slices are padded to their own
# longest example rather than the whole batch's, which changes the order of a few additions and nothing else.
# One place magnifies rounding: Adam divides each gradient by its own running size, so a number whose gradient
# is near zero (B is zero at step 1, so A's gradient is tiny) moves by up to a whole step of lr on noise alone.
# (SmolLM2 has no dropout inside; with `--dropout` above 0 the two runs would draw different masks.)

# %%
steps = 2 if FAST else 4
common = ["--model", "smollm2-135m", "--rank", "8", "--alpha", "16", "--targets", "q_proj,v_proj",
          "--steps", str(steps), "--seq-len", "48", "--lr", "1e-3", "--eval-limit", "2",
          "--max-new-tokens", "4", "--samples", "0", "--device", "cpu"]
work = Path(tempfile.mkdtemp(prefix="lesson14-"))
two = across_machines.launch_finetune(2, [*common, "--batch-size", "2"], work / "two")
one = across_machines.launch_finetune(1, [*common, "--batch-size", "4"], work / "one")
a2, a1 = load_file(work / "two" / "adapter_model.safetensors"), load_file(work / "one" / "adapter_model.safetensors")
assert a2.keys() == a1.keys()
diff = torch.cat([(a2[k] - a1[k]).abs().flatten() for k in a1])
lr = 1e-3
print(f"{two['processes']} processes × batch 2 against 1 process × batch 4, {steps} steps:")
print("  losses (2 processes):", [round(m["loss"], 6) for m in two["history"]])
print("  losses (1 process):  ", [round(m["loss"], 6) for m in one["history"]])
print(f"  adapter numbers differing by more than 1e-6: {int((diff > 1e-6).sum())} of {diff.numel():,}; "
      f"the largest difference is {diff.max():.1e}, {diff.max() / lr:.1%} of one Adam step (lr {lr:g})")
print(f"  bytes all-reduced per step: {two['allreduced_bytes_per_step']:,.0f} "
      f"(= 4 × {two['trainable_params']:,} trainable)")
for m2, m1 in zip(two["history"], one["history"], strict=True):
    assert abs(m2["loss"] - m1["loss"]) < 1e-5 * m1["loss"]
assert (diff > 1e-6).float().mean() < 1e-3 and diff.max() < 0.05 * lr
assert two["allreduced_bytes_per_step"] == 4 * two["trainable_params"]

# %% [markdown]
# ## 5. When the base does not fit: FSDP and ZeRO-3
#
# DDP keeps the **whole** frozen base on every process. For a model bigger than one GPU, FSDP (PyTorch) and
# ZeRO stage 3 (DeepSpeed) shard every weight across the N processes. Before a layer runs, its shards are
# all-gathered into the whole weight, used, and freed; that happens in the forward and again in the backward.
# So sharding trades memory for traffic, and the frozen base, which never crossed the wire under DDP, now
# crosses twice a step. For LoRA that changes the picture:
#
# * memory: the base per process drops N-fold; the adapter's state was small anyway;
# * traffic: the base's all-gathers dominate, so LoRA's wire advantage over full fine-tuning shrinks from
#   hundreds of times to about the ratio of the base's bytes to full fine-tuning's (bf16 base against fp32
#   master weights and gradients);
# * merging: no process holds a whole weight to add ΔW to, so PEFT's FSDP and DeepSpeed guides say to save the
#   adapter and merge it afterwards in one process. `lora_core`'s CLI refuses `--merge` under either, up front;
#   its `--fsdp` shards with FSDP2 (tested on 2 CPU processes: the same adapter as one process);
# * QLoRA: FSDP shards only floating-point tensors, and 4-bit codes are bytes. bitsandbytes stores the codes
#   in a float dtype (`bnb_4bit_quant_storage=torch.bfloat16`) so that FSDP can shard them; that is what let
#   Answer.AI train a 70B model with QLoRA on two 24 GB GPUs (quoted, not measured here).
#
# The plan below is arithmetic on the real counts of Llama-3-8B with q,v at r = 16, on 8 processes, with a
# bf16 base (and fp32 adapter, gradients and AdamW moments):

# %%
cfg = lc.LoraConfig(r=16, lora_alpha=32, target_modules=["q_proj", "v_proj"])
ledger = lc.count_lora_parameters("Llama-3-8B", cfg)
plan = across_machines.scale_plan(base=ledger.base_total, adapter=ledger.trainable, processes=8, base_bytes=2.0)
print(f"Llama-3-8B: {ledger.base_total:,} base parameters, {ledger.trainable:,} trainable (q,v at r=16)\n")
print(f"{'strategy':>32} | {'base GB/process':>15} | {'train state GB':>14} | {'sent GB/step':>12}")
for row in plan:
    print(f"{row.strategy:>32} | {row.base_per_process / 1e9:15.2f} | {row.trainable_state / 1e9:14.3f} | "
          f"{row.sent_per_step / 1e9:12.3f}")
try:
    check_merge("FSDP")
except ValueError as err:
    print("\n--merge under FSDP:", err)

# %% [markdown]
# ## Check yourself
#
# 1. Four processes each compute the gradient of their slice's summed loss divided by their *own* slice's
#    token count, and DDP averages them. When is that the whole batch's gradient, and when not?
# 2. With the ring all-reduce, how many bytes does each of 8 processes send for distilgpt2's c_attn r = 8
#    adapter (fp32 gradients)? And for full fine-tuning?
# 3. Under DDP, which of these cross the wire each step: the frozen base, the adapter's weights, the adapter's
#    gradients, AdamW's moments?
# 4. In the Llama-3-8B plan, by what factor does FSDP cut the base's bytes per process, and how do LoRA's bytes
#    sent per step under FSDP compare with LoRA's under DDP?

# %%
# 1. Only when every slice has the same token count: the average of per-slice means is the mean of the whole
#    only then. Slices of unequal count weight short slices up, which is why the trainer divides by the global n.
counts = torch.tensor([30.0, 10.0, 20.0, 40.0])
sums = torch.tensor([3.0, 2.0, 5.0, 4.0])
assert not torch.isclose((sums / counts).mean(), sums.sum() / counts.sum())
assert torch.isclose((sums / counts.sum() * 4).mean(), sums.sum() / counts.sum())
# 2. 2(N−1)/N × 4 bytes × trainable
answer_lora = 2 * 7 / 8 * 4 * lora_trainable
answer_full = 2 * 7 / 8 * 4 * full_trainable
print(f"2. {answer_lora / 1e6:.3f} MB per process for LoRA, {answer_full / 1e6:.1f} MB for full fine-tuning")
assert round(answer_lora) == 1_032_192 and round(answer_full / 1e6) == 573
# 3. Only the adapter's gradients; the weights and moments stay put (every process takes the same step).
ddp = plan[0]
assert ddp.what_crosses == "the adapter's gradients (all-reduce)"
# 4. The base per process falls 8×; LoRA's traffic per step grows, because the base is now gathered twice.
fsdp = plan[1]
assert abs(ddp.base_per_process / fsdp.base_per_process - 8) < 1e-9
print(f"4. base per process ÷ {ddp.base_per_process / fsdp.base_per_process:.0f}; LoRA sends "
      f"{fsdp.sent_per_step / ddp.sent_per_step:,.0f}× more per step under FSDP than under DDP")
assert fsdp.sent_per_step > 100 * ddp.sent_per_step
