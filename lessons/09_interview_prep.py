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
# # Lesson 9 · Interview prep: LoRA, QLoRA and PEFT in 16 questions
#
# These are the questions that come up again and again, in interviews and in code review. Each gets a
# short answer you could say out loud. Where the answer is a number, the number below it is **computed
# live** by `lora_core` (and checked against PEFT where PEFT can count it). Don't memorise "147,456";
# learn the formula that produces it.
#
# Try to answer each question before you read the answer.

# %%
import copy
import time
import warnings
from dataclasses import replace

import pandas as pd
import peft
import torch
import torch.nn as nn
from IPython.display import display

import lora_core as lc
from lora_core.bench import report as bench_report
from lora_core.quant import codebook, memory
from lora_core.teach import anatomy, evidence, peft_reference, toy
from lora_core.teach.lesson import setup

warnings.filterwarnings("ignore", message=".*fan_in_fan_out.*")
warnings.filterwarnings("ignore", category=FutureWarning)

# Every lesson starts here: print the versions and the device, stay offline (HF_HUB_OFFLINE=1 unless
# you set it), and read LORA_FAST=1 into FAST (CI: fewer timing repeats; every answer is still computed).
FAST = setup("everything here is small and runs on the CPU")
REPEATS = 2 if FAST else 5

# %% [markdown]
# ## Counting and scaling
#
# ### Q1 · How many parameters does LoRA train for a given layer, and for a whole model?
#
# A layer with weight (out × in) gets A (r × in) and B (out × r): **r·(in + out)** new parameters,
# against in·out frozen ones. Sum over every wrapped module. For distilgpt2 with r = 8 on `c_attn`
# (768 → 2304, in 6 layers):

# %%
cfg = lc.LoraConfig(r=8, lora_alpha=16, target_modules=["c_attn"])
by_hand = 6 * 8 * (768 + 2304)
ledger = lc.count_lora_parameters("distilgpt2", cfg)
peft_trainable, peft_total = peft_reference.peft_reference_count("distilgpt2", cfg)
print(f"by hand 6 × 8 × (768 + 2304) = {by_hand:,}; lora_core {ledger.trainable:,}; PEFT {peft_trainable:,}")
print(lc.peft_line(ledger.trainable, ledger.total), "(the total includes the adapter)")
assert by_hand == ledger.trainable == peft_trainable and ledger.total == peft_total

# %% [markdown]
# Follow-up: *how big is the adapter file?* 4 bytes per fp32 parameter. For SmolLM2-135M with PEFT's default
# targets (q_proj, v_proj) at r = 8, next to the 135M-parameter model:

# %%
smol = lc.count_lora_parameters("SmolLM2-135M", lc.LoraConfig(r=8, lora_alpha=16))
print(f"{smol.trainable:,} parameters × 4 B = {smol.trainable * 4 / 2**20:.2f} MiB of adapter, vs "
      f"{smol.base_total * 4 / 2**20:.0f} MiB for the fp32 base model")

# %% [markdown]
# ### Q2 · Why is B initialised to zero? Why not A as well?
#
# With B = 0, ΔW = B·A = 0, so training starts exactly at the pretrained model. Only one factor may be
# zero, though. The gradient of A is multiplied by B, and the gradient of B is multiplied by A. With
# B = 0, A gets no gradient at the first step and B does, so B moves first and A follows. Zero both,
# and both gradients stay zero forever.
#
# Follow-up: *how is A drawn?* The paper's text says "random Gaussian". Its reference code (loralib's
# `reset_parameters`) uses `kaiming_uniform_(A, a=math.sqrt(5))`, a uniform on ±1/√in, and PEFT's default
# follows that code; PEFT's `init_lora_weights="gaussian"` is the paper's wording. Lesson 6 checks it.


# %%
def first_gradients(zero_a: bool) -> tuple[float, float]:
    torch.manual_seed(0)
    layer = lc.LoraLinear(nn.Linear(16, 16), lc.LoraConfig(r=4, lora_alpha=8))   # B = 0, A random
    A, B = layer.adapter().A, layer.adapter().B
    if zero_a:
        nn.init.zeros_(A)
    layer(torch.randn(32, 16)).pow(2).mean().backward()
    return A.grad.norm().item(), B.grad.norm().item()


A0 = lc.LoraLinear(nn.Linear(16, 16), lc.LoraConfig(r=4)).adapter().A.detach()
print(f"A at init: max |a| = {A0.abs().max().item():.3f} ≤ 1/√16 = {1 / 16 ** 0.5:.3f} (Kaiming-uniform, a = √5)")
assert A0.abs().max() <= 1 / 16 ** 0.5
for zero_a in (False, True):
    grad_a, grad_b = first_gradients(zero_a)
    print(f"A {'zero  ' if zero_a else 'random'}, B zero: ‖∂L/∂A‖ = {grad_a:.4f}, ‖∂L/∂B‖ = {grad_b:.4f}")
assert first_gradients(False)[0] == 0 < first_gradients(False)[1] and first_gradients(True) == (0, 0)

# %% [markdown]
# ### Q3 · What does α do?
#
# It sets the scale of the update: ΔW = (α/r)·B·A. It adds no parameters. Under Adam, a bigger α
# behaves much like a bigger learning rate, because Adam's step size doesn't depend on the gradient's
# scale. The exact statement: (2α, lr/√2, A₀/√2) retraces (α, lr, A₀) step for step. So fix α and tune the
# learning rate. Which α? The paper's text sets α to the first r it tries and does not tune it; that is not
# α = r. The authors' own scripts (microsoft/LoRA `examples/`) use α = 2r for RoBERTa and DeBERTa (r = 8,
# α = 16; r = 16, α = 32) and α = 32 with r = 4 for GPT-2 on E2E. Evidence on the toy problem from lesson 5:

# %%
toy_cfg = toy.ToyConfig(lora_alpha=16, lr=1e-3, steps=60)
base_run = toy.train_toy(toy_cfg)
twin_run = toy.train_toy(toy.adam_equivalent(toy_cfg, 2.0))                # 2α with lr and A₀ rescaled
naive_run = toy.train_toy(replace(toy_cfg, lora_alpha=32))                # 2α, nothing else changed
gap = lambda run: max(abs(a - b) / a for a, b in zip(base_run.losses, run.losses, strict=True))
print(f"largest relative loss gap vs (α, lr): Adam-equivalent twin {gap(twin_run):.1e}; "
      f"just doubling α {gap(naive_run):.1%}")
assert gap(twin_run) < 1e-3 < gap(naive_run)

# %% [markdown]
# ### Q4 · What is rsLoRA?
#
# Rank-stabilised LoRA (Kalajdzievski 2023, [arXiv 2312.03732](https://arxiv.org/abs/2312.03732)) scales
# by **α/√r** instead of α/r. With α/r, raising r at a fixed α shrinks the update, so large ranks learn
# slowly. α/√r keeps the update's size steady across ranks. In PEFT it's `use_rslora=True`.

# %%
scales = pd.DataFrame({r: {"α/r": lc.LoraConfig(r=r, lora_alpha=16).scaling,
                           "α/√r (rsLoRA)": lc.LoraConfig(r=r, lora_alpha=16, use_rslora=True).scaling}
                       for r in (4, 8, 16, 64, 256)}).T.rename_axis("r (α = 16)")
display(scales.round(3))
assert scales.loc[256, "α/r"] == 16 / 256 and scales.loc[256, "α/√r (rsLoRA)"] == 1.0

# %% [markdown]
# ## Where things happen inside the layer
#
# ### Q5 · Where does `lora_dropout` act?
#
# On the **input of the LoRA branch**, in training only: h = W x + (α/r)·B·A·dropout(x). It doesn't zero
# entries of A or B, and it doesn't touch the frozen path. Survivors are scaled by 1/(1−p).

# %%
trace = anatomy.trace_dropout(p=0.1)
print(f"p = 0.1: zeros in the branch input {trace['branch_input_zero_fraction']:.1%}, in the frozen path's "
      f"input {trace['base_input_zero_fraction']:.0%}, in A {trace['A_zero_fraction']:.0%}, "
      f"in B {trace['B_zero_fraction']:.0%}; survivors × {trace['kept_scale']:.4f}")
eval_trace = anatomy.trace_dropout(p=0.1, train=False)
print(f"eval mode: zeros in the branch input {eval_trace['branch_input_zero_fraction']:.0%}")
assert trace["A_zero_fraction"] == trace["B_zero_fraction"] == trace["base_input_zero_fraction"] == 0
assert eval_trace["branch_input_zero_fraction"] == 0

# %% [markdown]
# ### Q6 · GPT-2's attention layers are `Conv1D`, not `nn.Linear`. Why does that matter?
#
# `Conv1D` stores its weight as (in, out), the transpose of `nn.Linear`'s (out, in). LoRA's factors are
# the same, but merging must transpose ΔW. That is the `fan_in_fan_out=True` flag, which PEFT sets for
# Conv1D. It also breaks a popular recipe for "all linear layers": a regex for `Linear` over `print(model)`
# finds only the output layer. `target_modules="all-linear"` matches Linear *and* Conv1D, minus the
# output layer.

# %%
report = anatomy.regex_vs_all_linear(lc.build_on_meta("distilgpt2"))
print("regex r'\\((\\w+)\\): Linear' finds:", report["regex"])
print("all-linear wraps:", report["all_linear"], f"({report['all_linear_modules']} modules)")
print(f"and leaves out {report['excluded_output_layer']} (tied to the input embedding: "
      f"{report['output_tied_to_embedding']})")
print("PEFT's default targets when target_modules=None:",
      {k: lc.inject.DEFAULT_TARGETS[k] for k in ("gpt2", "llama", "mistral")})
assert report["regex"] == ["lm_head"] and report["all_linear_modules"] == 24

# %% [markdown]
# ### Q7 · Does LoRA pick "the subset of parameters that matter"?
#
# No. It **adds** new parameters (A and B) and freezes *all* the old ones. Nothing old trains, unless
# `bias` or `modules_to_save` asks for it.

# %%
split = anatomy.added_not_selected("distilgpt2", cfg)
print(f"old parameters: {split['base_total']:,}, of which trainable {split['base_trainable']:,}; "
      f"new LoRA parameters: {split['lora']:,}")
assert split["base_trainable"] == 0 and split["lora"] == split["trainable"] == by_hand

# %% [markdown]
# ## Merging and serving
#
# ### Q8 · What does a LoRA adapter cost at inference?
#
# **Merged, nothing.** W' = W + (α/r)·B·A has W's shape, so the merged model *is* the base
# architecture, with the same parameter count and the same matmuls. Unmerged, each wrapped layer runs two
# extra thin matmuls. That costs some latency, but it lets one frozen base serve many adapters. Checked on
# distilgpt2's shapes (random weights, with a non-zero B so the check means something):

# %%
tiny, _ = lc.load_model("distilgpt2-random", device="cpu")
base_params = sum(p.numel() for p in tiny.parameters())
lc.inject_lora(tiny, cfg)
torch.manual_seed(0)
with torch.no_grad():
    for _, layer in lc.lora_layers(tiny):
        layer.adapter().B.normal_(std=0.02)            # as if trained
ids = torch.randint(0, 50257, (2, 32))
with torch.no_grad():
    unmerged = tiny(ids).logits
    merged_model = lc.merge_and_unload(tiny)
    merged = merged_model(ids).logits
merged_params = sum(p.numel() for p in merged_model.parameters())
print(f"max |Δlogit| merged vs unmerged {(merged - unmerged).abs().max().item():.1e}; parameters after merging "
      f"{merged_params:,} (base {base_params:,}); LoRA layers left {len(lc.lora_layers(merged_model))}")
assert merged_params == base_params and torch.allclose(merged, unmerged, atol=1e-4)

# %% [markdown]
# ### Q9 · Can you merge a QLoRA adapter into the 4-bit base?
#
# Not without losing it. The merged weight has to be re-quantized, and a typical ΔW is *smaller than
# NF4's rounding step*, so most of it rounds away. Merge into a 16-bit copy of the base instead:
# dequantize, add ΔW, keep 16 bits. By hand on a normal weight, with ‖ΔW‖ = 2% of ‖W‖:

# %%
nf4 = codebook.nf4_codebook()
W = codebook.normal_weights((576, 576))
g = torch.Generator().manual_seed(1)
delta = torch.randn(576, 8, generator=g) @ torch.randn(8, 576, generator=g)    # rank 8, like B·A
delta *= 0.02 * W.norm() / delta.norm()
W4 = codebook.dequantize(codebook.quantize_blockwise(W, nf4))                       # the 4-bit base, dequantized
requantized = codebook.dequantize(codebook.quantize_blockwise(W4 + delta, nf4))     # "merge into 4 bits"
kept = ((requantized - W4) - delta).norm() / delta.norm()
print(f"merged into 4 bits, the change to the weights differs from ΔW by {kept:.0%} of ‖ΔW‖: "
      "it is mostly rounding noise. Merged into 16 bits, it is ΔW up to 16-bit rounding.")
assert kept > 0.5

# %% [markdown]
# ## QLoRA
#
# ### Q10 · What is NF4?
#
# A 4-bit data type whose 16 levels are **quantiles of N(0, 1)**, scaled to [−1, 1], with an exact zero.
# Weights that are roughly normal then use every level about equally often. It is not a logarithmic
# grid. Each block of 64 weights is divided by its own absmax before rounding (lesson 8 builds it).

# %%
print("NF4 levels:", [round(v, 4) for v in nf4.tolist()])
print(f"{(nf4 < 0).sum().item()} negative, {(nf4 == 0).sum().item()} zero, {(nf4 > 0).sum().item()} positive levels")
errors = {name: codebook.quantization_error(W, book)["rmse"] for name, book in codebook.codebooks().items()}
print("round-trip RMSE on a normal weight, blocks of 64:", {k: f"{v:.2e}" for k, v in errors.items()})
assert (nf4 > 0).sum() == 8 and (nf4 < 0).sum() == 7 and min(errors, key=errors.get) == "NF4"

# %% [markdown]
# ### Q11 · What are QLoRA's three ideas, and what does double quantization save?
#
# The paper's three (section 3): **NF4**, **double quantization** and **paged optimizers** (optimizer states
# in NVIDIA unified memory, evicted to CPU RAM when a long batch spikes memory and paged back for the update).
# Blockwise absmax quantization is older: it comes from the 8-bit optimizers paper (arXiv 2110.02861).
#
#
# Double quantization: the fp32 absmax per block of 64 costs 32/64 = 0.5 bits per weight. QLoRA quantizes
# those constants to 8 bits (blocks of 256, one fp32 scale each): 8/64 + 32/(64·256) ≈ 0.127 bits. For Llama-2-7b:

# %%
seed = memory.SEED_002_QLORA
plain, double = (memory.estimate_memory(replace(seed, double_quant=dq)) for dq in (False, True))
print(f"{codebook.constant_bits_per_param(64)} → "
      f"{codebook.constant_bits_per_param(64, double_quant=True):.4f} bits/weight; "
      f"Llama-2-7b constants {plain.quant_constants / 2**30:.3f} → {double.quant_constants / 2**30:.3f} GiB")
assert abs(codebook.constant_bits_per_param(64, double_quant=True) - 0.127) < 0.001

# %% [markdown]
# ### Q12 · Full fine-tuning vs LoRA vs QLoRA: where does the memory go?
#
# Full fine-tuning stores a gradient and two Adam moments for every weight. How many bytes that is depends
# on the recipe: `torch.optim.AdamW` keeps its moments in the parameter's dtype (pure bf16: 2+2+2+2 = 8 B
# per parameter), the QLoRA paper counts fp32 moments (12 B), mixed precision with fp32 master weights is
# 16 B. LoRA stores them only for A and B (fp32: 16 B each), so the frozen 16-bit base becomes the big fixed
# cost. QLoRA cuts that base to ~4 bits. Activations shrink less: LoRA saves no input for a frozen
# projection that no A reads, and gradient checkpointing is the tool for the rest.
# Seed 002's Llama-2-7b setup (batch 4, 512 tokens), full fine-tuning counted as torch's AdamW runs it:

# %%
methods = memory.compare_methods(seed)
display(pd.DataFrame({m: {k: v / 2**30 for k, v in e.breakdown().items()} | {"total": e.total / 2**30}
                      for m, e in methods.items()}).T.round(2))
assert methods["full"].total > methods["lora"].total > methods["qlora"].total
per_param = {p: memory.estimate_memory(replace(seed, method="full", optimizer_precision=p))
             for p in memory.OPTIMIZER_PRECISIONS}
for p, e in per_param.items():
    print(f"full FT, {memory.PRECISION_LABELS[p]}: total {e.total / 2**30:.1f} GiB")
assert [e.bytes_per_trainable_param for e in per_param.values()] == [8, 12, 16]
assert methods["lora"].bytes_per_trainable_param == 16

# %% [markdown]
# ## Speed
#
# ### Q13 · Is LoRA faster than full fine-tuning? When is it not?
#
# Per step, only somewhat. The forward pass is the same full model, and the backward pass still
# carries gradients through every frozen layer to reach the adapters below. What LoRA skips is the
# *weight-gradient* matmul of each frozen layer, plus the optimizer's work on those weights. Counted in
# FLOPs: forward ≈ 2N, input gradients ≈ 2N, weight gradients ≈ 2N per token, so 6N → 4N, **at best
# ~1.5×**. (Small models also skip the big embedding/output-layer gradient and the AdamW update over
# all weights, which can give more on a CPU.) Where LoRA is *not* faster:
#
# * inference with the adapter **unmerged**: extra matmuls in every wrapped layer;
# * **QLoRA** per step: every matmul first dequantizes its 4-bit weight, so steps are slower than 16-bit
#   LoRA. You trade time for memory;
# * wall-clock to a given quality, if the small adapter needs more steps.
#
# One measurement on this machine (timings vary; only printed, never asserted):


# %%
def step_seconds(model: nn.Module, repeats: int) -> float:
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-5)
    batch = torch.randint(0, 50257, (4, 64))
    model.train()
    times = []
    for _ in range(repeats + 1):  # the first step warms up and is not counted
        start = time.perf_counter()
        model(input_ids=batch, labels=batch).loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        times.append(time.perf_counter() - start)
    return min(times[1:])


full_model, _ = lc.load_model("distilgpt2-random", device="cpu")
lora_model = copy.deepcopy(full_model)
lc.inject_lora(lora_model, lc.LoraConfig(r=8, lora_alpha=16, target_modules="all-linear"))
t_full, t_lora = step_seconds(full_model, REPEATS), step_seconds(lora_model, REPEATS)
print(f"distilgpt2 shapes, batch 4 × 64 tokens, AdamW: full {t_full:.3f} s/step, LoRA (all-linear, r=8) "
      f"{t_lora:.3f} s/step → {t_full / t_lora:.2f}× (best of {REPEATS})")

# The project's shipped CPU benchmark (results/bench/cpu.json), measured, with its setting: each step ÷ the floor.
shipped = bench_report.shipped_result("cpu")
if shipped is not None:
    rows = {r["case"]: r["vs_floor"] for r in bench_report.case_rows(shipped)}
    print(f"shipped ({shipped['model']}, {shipped['device_name']}, {shipped['dtype']}, batch {shipped['batch']} × "
          f"seq {shipped['seq']}): " + ", ".join(f"{case} {ratio:.2f}×" for case, ratio in rows.items()))
    assert rows["full fine-tuning"] > max(v for k, v in rows.items() if k != "full fine-tuning")

# %% [markdown]
# ## Variants and odds and ends
#
# ### Q14 · DoRA and PiSSA, one line each?
#
# * **DoRA** (Liu et al. 2024, [arXiv 2402.09353](https://arxiv.org/abs/2402.09353)) splits each weight
#   into a magnitude (one number per output row) and a direction. LoRA updates the direction, and the
#   magnitude vector trains as well. PEFT: `use_dora=True`. It costs one extra vector per layer:
# * **PiSSA** (Meng et al. 2024, [arXiv 2404.02948](https://arxiv.org/abs/2404.02948)) initialises A and B
#   from the top-r singular vectors of W and freezes the residual W − ΔW, so training starts on W's
#   principal directions instead of at ΔW = 0 (lesson 6).


# %%
class OneLayer(nn.Module):
    def __init__(self, proj: nn.Module):
        super().__init__()
        self.proj = proj

    def forward(self, x):
        return self.proj(x)


counts = {}
for use_dora in (False, True):
    wrapped = peft.get_peft_model(OneLayer(nn.Linear(768, 2304)),
                                  peft.LoraConfig(r=8, target_modules=["proj"], use_dora=use_dora))
    counts["DoRA" if use_dora else "LoRA"] = wrapped.get_nb_trainable_parameters()[0]
pissa = anatomy.init_gallery(nn.Linear(256, 256), r=8)["rows"][3]
extra = counts["DoRA"] - counts["LoRA"]
print(f"768→2304 layer, r=8: LoRA trains {counts['LoRA']:,}, DoRA {counts['DoRA']:,} "
      f"(+{extra:,} = one magnitude per output row)")
print(f"PiSSA at step 0: ‖ΔW‖ = {pissa['delta_norm']:.2f}, yet the output moves by "
      f"{pissa['max_abs_output_change']:.1e}")
assert extra == 2304 and pissa["max_abs_output_change"] < 1e-4

# %% [markdown]
# ### Q15 · What does `task_type` do?
#
# It picks the wrapper class PEFT returns. For a causal LM (`"CAUSAL_LM"` → `PeftModelForCausalLM`) that
# adds generation helpers and the right `forward` signature, and the adapter's math is the same with or
# without it:

# %%
tiny, _ = lc.load_model("distilgpt2-random", device="cpu")
outputs = {}
for task_type in (None, "CAUSAL_LM"):
    torch.manual_seed(0)
    wrapped = peft.get_peft_model(copy.deepcopy(tiny), peft.LoraConfig(r=8, target_modules=["c_attn"],
                                                                       init_lora_weights=False, task_type=task_type))
    with torch.no_grad():
        outputs[task_type] = (type(wrapped).__name__, wrapped(input_ids=ids).logits)
print({k: v[0] for k, v in outputs.items()}, "| same logits:", torch.equal(outputs[None][1], outputs["CAUSAL_LM"][1]))
assert torch.equal(outputs[None][1], outputs["CAUSAL_LM"][1])

# %% [markdown]
# **For a classification model a missing task_type does quietly hurt** (CLAIMS row 4). `"SEQ_CLS"` (and
# `"TOKEN_CLS"`) add the head (`classifier` / `score`) to `modules_to_save`: a trainable copy, stored in the
# adapter file. Without it, the freshly initialised head stays **frozen** and is **not saved**: training runs,
# the loss may even fall through the adapters, but the classifier is a random projection that never learns.
# On a tiny GPT2ForSequenceClassification (width 32, 2 blocks, 2 labels), LoRA r = 2 on `c_attn` (32 → 96):

# %%
head = evidence.classification_head_check(r=2)
cfg_cls = head["config"]
lora_by_hand = cfg_cls["n_layer"] * head["r"] * (cfg_cls["n_embd"] + 3 * cfg_cls["n_embd"])  # blocks · r · (in + out)
head_by_hand = cfg_cls["n_embd"] * cfg_cls["num_labels"]                         # score: (32 → 2), no bias
display(pd.DataFrame(head["rows"]).set_index("task_type"))
print(f"by hand: LoRA {lora_by_hand}, score head {head_by_hand} → {lora_by_hand + head_by_hand} with SEQ_CLS")
assert (head["without"], head["with"]) == (lora_by_hand, lora_by_hand + head_by_hand) == (512, 576)
no_task, seq_cls = head["rows"]
assert not no_task["head trainable (lora_core)"] and not no_task["head in adapter file (lora_core)"]
assert seq_cls["head trainable (lora_core)"] and seq_cls["head in adapter file (lora_core)"]
if head["available"]:
    assert (no_task["PEFT trainable"], seq_cls["PEFT trainable"]) == (512, 576)
    assert not no_task["head in adapter file (PEFT)"] and seq_cls["head in adapter file (PEFT)"]

# %% [markdown]
# ### Q16 · Does LoRA adapt "only a few layers"?
#
# Not unless you ask. PEFT puts an adapter on every module matching `target_modules`, in every layer.
# `layers_to_transform` restricts it. In seed 002's QLoRA setup the memory saving comes from the 4-bit
# base, not from skipping layers (CLAIMS row 16):

# %%
qlora = memory.estimate_memory(seed)
print(f"seed 002 (Llama-2-7b, q_proj + v_proj, r = 64): LoRA in {qlora.layers_with_lora} of {qlora.num_layers} "
      f"layers, {qlora.trainable_params:,} trainable parameters")
first_four = lc.count_lora_parameters("Llama-2-7b", lc.LoraConfig(r=64, layers_to_transform=[0, 1, 2, 3]))
print(f"with layers_to_transform=[0, 1, 2, 3]: {first_four.trainable:,}")
assert qlora.layers_with_lora == qlora.num_layers and first_four.trainable * 8 == qlora.trainable_params

# %% [markdown]
# ## Check yourself
#
# Quick-fire, with the numbers worked out by the library:
#
# 1. LoRA parameters for Llama-2-7b's 4096 × 4096 `q_proj` at r = 16 (one layer)?
# 2. The LoRA scale at r = 64, α = 16, with and without rsLoRA?
# 3. Bits per weight of NF4 storage with double quantization at block 64?
# 4. The gradient of A at the first step with PEFT's default init?

# %%
answer_1 = lc.count_lora_parameters("Llama-2-7b", lc.LoraConfig(r=16, target_modules=["q_proj"])).rows[0]
answer_1 = answer_1.lora_per_module
answer_2 = (lc.LoraConfig(r=64, lora_alpha=16).scaling, lc.LoraConfig(r=64, lora_alpha=16, use_rslora=True).scaling)
answer_3 = 4 + codebook.constant_bits_per_param(64, double_quant=True)
answer_4 = first_gradients(False)[0]
print(f"1. 16 × (4096 + 4096) = {answer_1:,}")
print(f"2. α/r = {answer_2[0]:g}; α/√r = {answer_2[1]:g}")
print(f"3. 4 + 8/64 + 32/(64·256) = {answer_3:.4f} bits")
print(f"4. ‖∂L/∂A‖ = {answer_4:g}: B = 0 multiplies it away, so only B moves at step 1")
assert answer_1 == 16 * (4096 + 4096) == 131_072
assert answer_2 == (0.25, 2.0) and abs(answer_3 - 4.127) < 1e-3 and answer_4 == 0
