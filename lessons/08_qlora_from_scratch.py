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
# # Lesson 8 · QLoRA from scratch
#
# LoRA makes the *trainable* part tiny. The frozen base still has to sit in GPU memory, though. Llama-2-7b
# in fp16 is 13.5 GB of weights before a single activation is stored. **QLoRA** (Dettmers et al. 2023,
# [arXiv 2305.14314](https://arxiv.org/abs/2305.14314)) stores the frozen base in **4 bits** and trains
# ordinary LoRA adapters on top. The paper (section 3) names three ideas:
#
# 1. **NF4**, a 4-bit code whose 16 values are quantiles of a normal distribution;
# 2. **double quantization**, which quantizes the per-block scales too;
# 3. **paged optimizers**, which let the optimizer states spill to CPU RAM during memory spikes.
#
# The first two stand on **blockwise absmax** scaling (one scale per 64 weights), which QLoRA takes from
# the earlier 8-bit optimizers work (Dettmers et al. 2021, [arXiv 2110.02861](https://arxiv.org/abs/2110.02861)).
# We build NF4, blockwise absmax and double quantization by hand, measure NF4's error on real weights
# against two other 4-bit grids, add up the memory of seed 002's Llama-2-7b QLoRA setup, and end with
# what paged optimizers move and when that matters. Along the way we check three claims from seed 002
# (CLAIMS rows 15, 16 and 18).

# %%
import warnings
from dataclasses import replace

import pandas as pd
import torch
from IPython.display import display

import lora_core as lc
from lora_core import viz
from lora_core.quant import codebook, memory
from lora_core.teach import qlora_study
from lora_core.teach.lesson import setup

warnings.filterwarnings("ignore", category=FutureWarning)

# Every lesson starts here: print the versions and the device, stay offline (HF_HUB_OFFLINE=1 unless
# you set it), and read LORA_FAST=1 into FAST (nothing here is slow; kept for the lesson convention).
FAST = setup("quantization here runs on the CPU")

# %% [markdown]
# ## 1. NF4: sixteen quantiles of N(0, 1)
#
# A 4-bit code names one of 16 values, its **levels**. Where should they go? Trained weights look
# roughly normal: most are near 0, a few are large. A good code puts its levels where the weights are,
# so each level is used about equally often. That is what quantiles do: $\Phi^{-1}(p)$ is the point
# below which a fraction $p$ of a standard normal lies.
#
# NF4's recipe (from bitsandbytes, the code released with the paper):
#
# * 8 positive levels at $\Phi^{-1}$ of 9 evenly spaced probabilities from $1-\delta$ down to ½, dropping
#   the last one ($\Phi^{-1}(½) = 0$);
# * 7 negative levels, the mirror image of $\Phi^{-1}$ at 8 evenly spaced probabilities, again without ½;
# * an exact **0** as the 16th level, so zero weights (and padding) are stored exactly;
# * divide by the largest level, so the levels span exactly [−1, 1].
#
# The edge probability $1-\delta$ can't be 1, because $\Phi^{-1}(1) = \infty$. bitsandbytes'
# `create_normal_map` takes `offset=0.9677083` by default, which is $1-\delta$ with
# $\delta = \tfrac12\left(\tfrac1{30} + \tfrac1{32}\right)$: halfway between the outermost quantiles of
# 15- and 16-level codes. That value is the library's default; the QLoRA paper describes the quantiles but
# does not give it.

# %%
normal = torch.distributions.Normal(torch.tensor(0.0, dtype=torch.float64), torch.tensor(1.0, dtype=torch.float64))
edge = 1 - 0.5 * (1 / 30 + 1 / 32)
positive = normal.icdf(torch.linspace(edge, 0.5, 9, dtype=torch.float64)[:-1])     # 8 levels > 0
negative = -normal.icdf(torch.linspace(edge, 0.5, 8, dtype=torch.float64)[:-1])    # 7 levels < 0
levels = torch.cat([negative, torch.zeros(1, dtype=torch.float64), positive]).sort().values
nf4_by_hand = (levels / levels.max()).float()                                      # (16,) in [-1, 1]

nf4 = codebook.nf4_codebook()
# bitsandbytes' NF4 table, as published (QLoRA paper, appendix E):
published = torch.tensor([-1.0, -0.6961928009986877, -0.5250730514526367, -0.39491748809814453,
                          -0.28444138169288635, -0.18477343022823334, -0.09105003625154495, 0.0,
                          0.07958029955625534, 0.16093020141124725, 0.24611230194568634, 0.33791524171829224,
                          0.44070982933044434, 0.5626170039176941, 0.7229568362236023, 1.0])
display(pd.DataFrame({"by hand": nf4_by_hand, "lora_core": nf4, "bitsandbytes": published}).round(6))
print(f"edge probability 1 − δ = {edge:.7f} (lora_core uses {codebook.NF4_OFFSET})")
print("max |by hand − lora_core| =", (nf4_by_hand - nf4).abs().max().item(),
      "| max |lora_core − bitsandbytes| =", (nf4 - published).abs().max().item())
assert abs(edge - codebook.NF4_OFFSET) < 1e-7
torch.testing.assert_close(nf4_by_hand, nf4, atol=1e-6, rtol=0)
torch.testing.assert_close(nf4, published, atol=1e-6, rtol=0)

# %% [markdown]
# **Is NF4 "logarithmic"?** Seed 002 says NF4 "uses logarithmic scaling" (CLAIMS row 15). A logarithmic
# grid has a *constant ratio* between neighbouring levels: the sign bit plus a 3-bit exponent gives
# ±2⁻ᵏ, each level half the next. Look at the ratios instead of arguing:

# %%
log4 = codebook.log4_codebook()
nf4_ratios = nf4[9:] / nf4[8:-1]     # neighbouring positive levels of NF4
log_ratios = log4[9:] / log4[8:-1]   # neighbouring positive levels of the log grid
print("NF4 ratios:", [round(v, 3) for v in nf4_ratios.tolist()])
print("log ratios:", [round(v, 3) for v in log_ratios.tolist()])
assert torch.allclose(log_ratios, torch.tensor(2.0)) and nf4_ratios.max() / nf4_ratios.min() > 1.5
viz.codebook_levels(codebook.codebooks(), codebook.normal_density_on_codebook_scale()).show()

# %% [markdown]
# NF4's ratio changes from one pair of levels to the next, so it is not a log grid. Its levels are close
# together near the middle, where most weights are, and spread out in the tails, where the normal density
# thins: the dotted lines above follow the bell curve. The log grid packs half its levels near 0 and leaves
# a huge gap between ½ and 1. The uniform int4 grid ignores the density altogether.
#
# ## 2. Blockwise absmax: one scale per 64 weights
#
# The levels live in [−1, 1]; real weights don't. So each weight is divided by a scale first. One scale
# for a whole matrix would let a single outlier squash everyone else into the few levels around 0.
# Blockwise quantization (from the 8-bit optimizers paper, arXiv 2110.02861) cuts the weights into
# **blocks**; QLoRA uses **blocks of 64** and divides each block by its own largest |w| (its *absmax*).
# The block's largest weight becomes ±1 and is stored exactly; an outlier only coarsens its own block.
#
# Quantize = for each weight, store the index of the nearest level. Dequantize = level × absmax. By hand,
# on a real SmolLM2 weight:

# %%
model, _ = lc.load_model("smollm2-135m", device="cpu")
w = model.get_submodule("model.layers.15.mlp.up_proj").weight.detach()     # (1536, 576)
BLOCK = 64

blocks = w.reshape(-1, BLOCK)                                  # (n_blocks, 64); 1536·576 is a multiple of 64
absmax = blocks.abs().amax(dim=1, keepdim=True)                # (n_blocks, 1)
scaled = blocks / absmax                                       # every block now spans [-1, 1]
codes = (scaled[..., None] - nf4).abs().argmin(dim=-1)         # (n_blocks, 64): index of the nearest level
w_hat = (nf4[codes] * absmax).reshape(w.shape)                 # dequantized

display(pd.DataFrame({"w": blocks[0, :6], "w / absmax": scaled[0, :6], "code (4 bits)": codes[0, :6],
                      "level": nf4[codes[0, :6]], "ŵ = level · absmax": (nf4[codes] * absmax)[0, :6]}).round(5))

q = codebook.quantize_blockwise(w, nf4, BLOCK)
agree = (q.codes.long() == codes).float().mean().item()
print(f"{absmax.numel():,} blocks | codes equal to lora_core's: {agree:.4%} | "
      f"max |ŵ by hand − lora_core| = {(w_hat - codebook.dequantize(q)).abs().max().item():.1e}")
print(f"relative error ‖ŵ − w‖ / ‖w‖ = {((w_hat - w).norm() / w.norm()).item():.4f}")
assert agree > 0.9999 and torch.allclose(w_hat, codebook.dequantize(q), atol=1e-6)

# %% [markdown]
# (A weight exactly halfway between two levels may round either way, hence "equal" up to a few ties.)
#
# Block size trades accuracy for storage: every block stores one fp32 absmax, which costs
# 32 / block_size bits per weight on top of the 4-bit code.

# %%
sweep = pd.DataFrame([{"block size": b, "NF4 RMSE": codebook.quantization_error(w, nf4, b)["rmse"],
                       "constant bits / weight": codebook.constant_bits_per_param(b)}
                      for b in (16, 64, 256, 1024, w.numel())]).set_index("block size")
display(sweep)
assert sweep["NF4 RMSE"].is_monotonic_increasing

# %% [markdown]
# Smaller blocks are more accurate and cost more bits. At 64, the constants add 0.5 bits to every
# 4-bit weight: an eighth on top.
#
# ## 3. Double quantization: quantize the constants too
#
# The absmax constants are just numbers, so QLoRA quantizes them as well: subtract their mean, then store
# them in 8 bits, in blocks of 256 constants, each block with its own fp32 scale. Per weight:
#
# $$\underbrace{\tfrac{32}{64}}_{\text{plain}} = 0.5 \ \text{bits}
#   \quad\longrightarrow\quad
#   \underbrace{\tfrac{8}{64}}_{\text{8-bit constant}} + \underbrace{\tfrac{32}{64 \cdot 256}}_{\text{its fp32 scale}}
#   \approx 0.127 \ \text{bits}$$

# %%
plain_bits, double_bits = 32 / 64, 8 / 64 + 32 / (64 * 256)
print(f"by hand: {plain_bits} → {double_bits:.5f} bits per weight | lora_core: "
      f"{codebook.constant_bits_per_param(64)} → {codebook.constant_bits_per_param(64, double_quant=True):.5f}")
assert double_bits == codebook.constant_bits_per_param(64, double_quant=True)

dq = codebook.double_quantize(q.absmax, block_size=256, weight_block_size=64)
absmax_8bit = dq.dequantize()                                   # (n_blocks,) the constants after the round trip
w_hat_dq = (nf4[q.codes.long()] * absmax_8bit[:, None]).reshape(w.shape)
rmse = lambda a: (a - w).pow(2).mean().sqrt().item()
print(f"measured on this matrix: {dq.bits_per_param():.4f} bits per weight for the constants; "
      f"largest relative error of a constant {dq.max_relative_error(q.absmax):.2%}")
print(f"weight RMSE with fp32 constants {rmse(w_hat):.3e}, with 8-bit constants {rmse(w_hat_dq):.3e}")
assert abs(dq.bits_per_param() - double_bits) < 0.005 and rmse(w_hat_dq) < 1.05 * rmse(w_hat)

# %% [markdown]
# The total is 4 + 0.127 ≈ 4.13 bits per weight instead of 4.5, and the weights barely notice. The constants
# come back within a few percent, and a constant that is off by x% moves its 64 weights by x%. That is small
# next to the 4-bit rounding itself: the weight RMSE above hardly changes.
#
# ## 4. NF4 vs a uniform and a log grid, on real weights
#
# Same blocks (64), same absmax, three different sets of 16 levels. We measure the round-trip RMSE on
# several SmolLM2 matrices and on a seeded normal control matrix. Code entropy tells how evenly each
# grid's 16 codes are used; the maximum is 4 bits.

# %%
names = ["model.layers.0.self_attn.q_proj", "model.layers.15.mlp.up_proj", "model.layers.29.mlp.down_proj"]
weights = {name: model.get_submodule(name).weight.detach() for name in names}
weights["control: N(0, 0.02²)"] = codebook.normal_weights()
books = codebook.codebooks()
rows = []
for name, weight in weights.items():
    errors = {book: codebook.quantization_error(weight, levels, 64) for book, levels in books.items()}
    nf4_rmse = errors["NF4"]["rmse"]
    rows.append({"weight": name, "NF4 RMSE": nf4_rmse,
                 **{f"{book} RMSE ÷ NF4's": errors[book]["rmse"] / nf4_rmse for book in books if book != "NF4"},
                 **{f"{book} entropy (bits)": errors[book]["code_entropy_bits"] for book in books}})
table = pd.DataFrame(rows).set_index("weight")
display(table.round(4))
assert (table["int4 (uniform) RMSE ÷ NF4's"] > 1).all() and (table["log4 RMSE ÷ NF4's"] > 1).all()

edges, counts = codebook.value_histogram(codebook.block_normalize(w, 64)[0], bins=101, limit=1.0)
viz.weight_histogram(edges, counts, books, "up_proj of layer 15: weights ÷ block absmax, and each grid's levels").show()
errs = {book: codebook.round_trip_error(w, levels, 64) for book, levels in books.items()}
limit = max(e.abs().max().item() for e in errs.values())
viz.error_histograms({book: codebook.value_histogram(e, bins=81, limit=limit) for book, e in errs.items()}).show()

# %% [markdown]
# NF4 has the lowest error on every matrix. The uniform grid comes second. The log grid is worst by far,
# even though it spends its levels where most weights are: it rounds the large weights coarsely, and the
# large weights carry most of ‖w‖.
#
# One honest caveat: these SmolLM2 weights were unpacked from a Q4_1 GGUF file, a *uniform* 4-bit format
# with blocks of 32. That history favours the uniform grid, and NF4 still wins. The normal control has no
# such history.
#
# ## 5. What it buys: memory for seed 002's setup
#
# Seed 002 fine-tunes Llama-2-7b with QLoRA: r = 64, α = 16, dropout 0.1, NF4 with fp16 compute, batch 4,
# no nested (double) quantization, and no `target_modules`, so PEFT's default for Llama applies: `q_proj`
# and `v_proj`. The seed gives no sequence length, so the estimator assumes 512.
# `lc.quant.memory` adds up the bytes of one training step, component by component, with every formula shown.
# Parameter counts come from the real architecture on the meta device, not from a typed-in number.

# %%
seed = memory.SEED_002_QLORA
est = memory.estimate_memory(seed)
print({k: getattr(seed, k) for k in ("model", "method", "r", "lora_alpha", "lora_dropout", "target_modules",
                                     "weight_dtype", "batch_size", "seq_len", "double_quant")})
display(pd.DataFrame(est.records()).set_index("component")[["GiB", "formula"]])

# %% [markdown]
# Check the first rows by hand. LoRA trains r·(in + out) per module, on q_proj and v_proj (both
# 4096 → 4096) in each of 32 layers. QLoRA stores every Linear weight except the output layer (Q of
# them) at half a byte, everything else (embeddings, norms, output layer) in fp16, and the adapter in fp32.

# %%
P, Q, T = est.base_params, est.quantized_params, est.trainable_params
T_by_hand = 32 * 2 * 64 * (4096 + 4096)
weights_by_hand = Q * 0.5 + (P - Q) * 2 + T * 4
constants_by_hand = Q * (32 / 64) / 8                     # no double quantization in seed 002
print(f"T = {T_by_hand:,} (estimator {T:,}); weights {weights_by_hand / 2**30:.3f} GiB "
      f"(estimator {est.weights / 2**30:.3f}); constants {constants_by_hand / 2**30:.3f} GiB")
assert T == T_by_hand and est.weights == round(weights_by_hand) and est.quant_constants == round(constants_by_hand)

# %%
setups = {
    "full FT, fp16": replace(seed, method="full"),
    "LoRA, fp16 base": replace(seed, method="lora"),
    "QLoRA (seed 002)": seed,
    "QLoRA + double quant": replace(seed, double_quant=True),
    "QLoRA + double quant + checkpointing": replace(seed, double_quant=True, gradient_checkpointing=True),
}
estimates = {label: memory.estimate_memory(cfg) for label, cfg in setups.items()}
viz.memory_bars(estimates).show()
display(pd.DataFrame({label: {k: v / 2**30 for k, v in e.breakdown().items()} | {"total": e.total / 2**30}
                      for label, e in estimates.items()}).T.round(2))

# %% [markdown]
# What the bars say:
#
# * **Full fine-tuning** needs gradients and two Adam moments for all 6.7 B parameters. How many bytes
#   that is depends on how the optimizer is counted; the next cell computes each accounting.
# * **LoRA** removes those, because only 33.5 M parameters train. The fp16 base (the "weights" column, over
#   12 GiB) is now the biggest fixed cost.
# * **QLoRA** shrinks that base to under 4 GiB. This is where its saving comes from.
#   Seed 002 says QLoRA saves memory by "training only a few layers" (CLAIMS row 16). It doesn't: see below.
# * Once the weights are small, the **activations** dominate (batch 4 × 512 tokens). Gradient
#   checkpointing, not more quantization, is the next lever.

# %% [markdown]
# **Does full fine-tuning fit on one GPU?** The bars above count full fine-tuning as torch's AdamW runs it
# (moments in the weight's dtype). Two other accountings are common: fp32 moments (the QLoRA paper's) and
# mixed precision with fp32 master weights (ZeRO's). Against the memory of two real GPUs, 80 GB and 141 GB
# (decimal gigabytes, as sold), for seed 002's batch of 4 × 512 tokens:

# %%
GPUS = {"80 GB GPU": 80e9 / 2**30, "141 GB GPU": 141e9 / 2**30}    # GiB
full_rows = []
for precision in memory.OPTIMIZER_PRECISIONS:
    e = memory.estimate_memory(replace(seed, method="full", optimizer_precision=precision))
    full_rows.append({"accounting": memory.PRECISION_LABELS[precision], "B / param": e.bytes_per_trainable_param,
                      "total GiB": e.total / 2**30, **{f"fits a {g} ({v:.1f} GiB)": e.total / 2**30 <= v
                                                      for g, v in GPUS.items()}})
full_table = pd.DataFrame(full_rows).set_index("accounting")
display(full_table.round(1))
for row in full_rows:
    verdict = " and ".join(f"{'within' if row[f'fits a {g} ({v:.1f} GiB)'] else 'beyond'} one {g}"
                           for g, v in GPUS.items())
    print(f"{row['B / param']:g} B/param: {row['total GiB']:.1f} GiB, {verdict}")
for gpu, capacity in GPUS.items():
    fits = [f"{row['B / param']:g}" for row in full_rows if row["total GiB"] <= capacity]
    print(f"one {gpu} holds full fine-tuning under {len(fits)} of {len(full_rows)} accountings "
          f"({', '.join(fits) or 'none'} B/param)")
assert list(full_table["B / param"]) == sorted(full_table["B / param"])       # 8 < 12 < 16
assert any(row["total GiB"] <= GPUS["141 GB GPU"] for row in full_rows)      # not "far beyond one GPU"

# %% [markdown]
# So "far beyond one GPU" is wrong for Llama-2-7b at this batch: the numbers above say which card each
# accounting needs. LoRA and QLoRA bring it down to a fraction of that.

# %%
print(f"layers holding a LoRA adapter in seed 002's setup: {est.layers_with_lora} of {est.num_layers}")
lora_w, qlora_w = estimates["LoRA, fp16 base"].weights, est.weights
print(f"weights: LoRA {lora_w / 2**30:.2f} GiB → QLoRA {qlora_w / 2**30:.2f} GiB ({lora_w / qlora_w:.1f}× smaller)")
assert est.layers_with_lora == est.num_layers == 32 and lora_w / qlora_w > 3

# %% [markdown]
# LoRA goes into **every** layer (PEFT's default; `layers_to_transform` would be needed to restrict it).
# The 4-bit base is what saves the memory.
#
# **Seed 002 on dtypes** (CLAIMS row 18): "bf16 is better for training on new GPUs; fp32 is more precise
# but uses more memory". Both parts hold. fp32 takes twice the bytes. bf16 and fp16 take the same
# bytes, but bf16 keeps fp32's exponent range, so large activations and small gradients don't
# overflow or underflow the way they can in fp16:

# %%
for dtype in ("fp32", "bf16", "fp16"):
    e = memory.estimate_memory(replace(seed, method="lora", weight_dtype=dtype))
    torch_dtype = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[dtype]
    info = torch.finfo(torch_dtype)
    print(f"LoRA, {dtype} base: total {e.total / 2**30:6.2f} GiB | largest value {info.max:.2e}, "
          f"smallest normal {info.tiny:.1e}, step near 1: {info.eps:.1e}")
assert memory.estimate_memory(replace(seed, method="lora", weight_dtype="bf16")).total == \
    memory.estimate_memory(replace(seed, method="lora", weight_dtype="fp16")).total

# %% [markdown]
# ## 6. Paged optimizers: QLoRA's third idea
#
# The optimizer states (AdamW's two moments) are allocated in **NVIDIA unified memory**. When the GPU runs
# short, the driver **evicts those pages to CPU RAM**, and **pages them back** into GPU memory when the
# optimizer update needs them. Nothing crashes with out-of-memory; the step just waits on the PCIe copies
# while paging happens. The paper adds them for **memory spikes**: with gradient checkpointing, a mini-batch
# of long sequences can briefly need much more activation memory than an ordinary one. bitsandbytes provides
# them; transformers' Trainer calls them `paged_adamw_32bit` and `paged_adamw_8bit`.
#
# How much can paging move, and how big is such a spike? For seed 002 with checkpointing, from the estimator
# (`qlora_study.paged_optimizer_view`, the QLoRA page's section 5):

# %%
gc_seed = replace(seed, double_quant=True, gradient_checkpointing=True)
paging = qlora_study.paged_optimizer_view(gc_seed)
print(f"optimizer states: {paging['optimizer'] / 2**30:.3f} GiB = {est.trainable_params:,} × "
      f"{paging['optimizer'] / est.trainable_params:g} B (AdamW's two fp32 moments on fp32 factors), "
      f"{paging['optimizer_share']:.1%} of {paging['total'] / 2**30:.2f} GiB")
print(f"the same step at {paging['long_seq_len']:,} tokens: {paging['long_total'] / 2**30:.2f} GiB, "
      f"a spike of {paging['spike'] / 2**30:.2f} GiB of activations")
assert paging["optimizer"] == memory.estimate_memory(gc_seed).optimizer == est.trainable_params * 8

# %% [markdown]
# Paging can free at most the optimizer states. With LoRA they are small (only A and B have moments), so paging
# helps when a spike is about that size: a rare long batch on a GPU that is nearly full. A bigger spike still
# needs a shorter sequence, a smaller batch or a bigger GPU. The paper itself notes that paging only
# happens on the rare mini-batches with long sequences, so it gives no memory figure for them.
#
# ## Check yourself
#
# 1. How many bits per weight does NF4 storage cost at block size 64, with and without double quantization?
# 2. Is NF4 a logarithmic grid? What single number settles it?
# 3. In seed 002's setup, how many of Llama-2-7b's layers carry LoRA, and how many parameters train?
# 4. Which component of seed 002's training memory is largest?

# %%
answer_1 = (4 + codebook.constant_bits_per_param(64), 4 + codebook.constant_bits_per_param(64, double_quant=True))
answer_2 = (nf4_ratios.min().item(), nf4_ratios.max().item())
answer_3 = (est.layers_with_lora, est.trainable_params)
answer_4 = max(est.breakdown(), key=est.breakdown().get)
print(f"1. {answer_1[0]} bits without, {answer_1[1]:.3f} bits with double quantization.")
print(f"2. No: the ratio between neighbouring levels runs from {answer_2[0]:.2f} to {answer_2[1]:.2f}; "
      "a log grid keeps it constant.")
print(f"3. {answer_3[0]} of 32 layers; {answer_3[1]:,} trainable parameters.")
print(f"4. {answer_4}: {est.breakdown()[answer_4] / 2**30:.1f} of {est.total / 2**30:.1f} GiB.")
assert answer_1 == (4.5, 4 + double_bits) and answer_2[1] / answer_2[0] > 1.3
assert answer_3 == (32, 33_554_432) and answer_4 == "activations"
