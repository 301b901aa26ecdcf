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
# # Lesson 3 · GPT-2's Conv1D and `fan_in_fan_out`
#
# `nn.Linear` stores its weight as **(out, in)** and computes $y = x W^\top + b$. GPT-2's projections
# are not `nn.Linear`: they are transformers' `Conv1D`, which stores its weight as **(in, out)** and
# computes $y = x W + b$. Same function, transposed storage. The name is a leftover from OpenAI's
# original TensorFlow code, which wrote each projection as a convolution of width 1 and kept that
# kernel layout; the released checkpoints carry it.
#
# Anyone who loads GPT-2 weights into plain `nn.Linear` layers must transpose them. nanoGPT's
# `from_pretrained` keeps a short `transposed` list for exactly this: the weights of `attn.c_attn`,
# `attn.c_proj`, `mlp.c_fc` and `mlp.c_proj`. PEFT calls the (in, out) layout `fan_in_fan_out=True`.
#
# For LoRA the layout matters in exactly one place, and this lesson finds it: the merge.

# %%
import torch

import lora_core as lc
from lora_core import viz
from lora_core.teach import anatomy
from lora_core.teach.lesson import setup

# Every lesson starts here: print the versions and the device, stay offline (HF_HUB_OFFLINE=1 unless
# you set it), and read LORA_FAST=1 into FAST (CI: fewer steps, the same pictures and checks).
FAST = setup("this lesson runs on the CPU")

# %% [markdown]
# ## 1. Conv1D is a Linear with its weight transposed
#
# `Conv1D(nf, nx)` maps `nx` input features to `nf` outputs; its weight is (nx, nf) = (in, out).
# We check that it equals $xW + b$, and that an `nn.Linear` holding $W^\top$ computes the same thing:
# that is what nanoGPT's `transposed` list does when it loads GPT-2.

# %%
import copy

import torch.nn as nn
import torch.nn.functional as F
from transformers.pytorch_utils import Conv1D

torch.manual_seed(0)
conv = Conv1D(nf=2304, nx=768)                       # GPT-2's c_attn: 768 -> 2304 (q, k, v stacked)
with torch.no_grad():
    conv.weight.normal_(std=0.02)
    conv.bias.normal_(std=0.02)
x = torch.randn(4, 768)                              # 4 tokens

linear = nn.Linear(768, 2304)
with torch.no_grad():
    linear.weight.copy_(conv.weight.T)               # (out, in) = transpose of (in, out)
    linear.bias.copy_(conv.bias)
    y_conv = conv(x)
    gap_matmul = float((y_conv - (x @ conv.weight + conv.bias)).abs().max())   # (4, 768) @ (768, 2304)
    gap_linear = float((y_conv - linear(x)).abs().max())
    gap_functional = float((y_conv - F.linear(x, conv.weight.T, conv.bias)).abs().max())

print("Conv1D weight", tuple(conv.weight.shape), "| nn.Linear weight", tuple(linear.weight.shape))
print(f"max |Conv1D − (xW + b)| = {gap_matmul:.1e},  |Conv1D − Linear(Wᵀ)| = {gap_linear:.1e}, "
      f"|Conv1D − F.linear(x, Wᵀ)| = {gap_functional:.1e}")
assert max(gap_matmul, gap_linear, gap_functional) < 1e-5

# %% [markdown]
# Here is one block of distilgpt2. Every projection is a `Conv1D`; the box sizes are parameter counts.
# The model is `distilgpt2-random`: the real shapes and tokenizer with seeded random weights, built
# offline. The layout question is about shapes only, so random weights are enough.

# %%
model, tok = lc.load_model("distilgpt2-random", device="cpu")
cfg = lc.LoraConfig(r=8, lora_alpha=16, target_modules=["c_attn"], init_lora_weights=False)
viz.module_treemap(anatomy.block_tree(model, cfg), "distilgpt2, block 0: LoRA on c_attn").show()
print({name: tuple(model.get_submodule(f"transformer.h.0.{name}").weight.shape)
       for name in ("attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj")})

# %% [markdown]
# ## 2. Where the transpose goes
#
# The LoRA branch is $x \to A x \to B(Ax)$, with $A$ (r, in) and $B$ (out, r). It never touches $W$,
# so it does not care how $W$ is stored. And $\Delta W = s\,BA$ is (out, in), like every matrix in
# the LoRA paper.
#
# The layouts meet only when $\Delta W$ is **written into** the weight. For `nn.Linear` the merged
# weight is $W + \Delta W$; for `Conv1D` it is $W + \Delta W^\top$. That is all `fan_in_fan_out` means.
#
# We put an adapter with a non-zero $B$ on every `c_attn` (as if trained: `init_lora_weights=False`
# makes both factors random; we shrink $B$ so that $\Delta W$ is a fraction of $W$), then merge by hand.

# %%
ids = tok("LoRA adapts a frozen model with a small low-rank update, and the merge must respect the layout.",
          return_tensors="pt").input_ids
ours = copy.deepcopy(model)
lc.inject_lora(ours, cfg)
for _, layer in lc.lora_layers(ours):
    with torch.no_grad():
        layer.adapter().B.mul_(0.1)

name, layer = lc.lora_layers(ours)[0]
W, delta = layer.base_layer.weight.detach(), layer.delta_weight().detach()
print(f"{name}: W {tuple(W.shape)} (in, out), ΔW {tuple(delta.shape)} (out, in), "
      f"fan_in_fan_out={layer.fan_in_fan_out}, ‖ΔW‖/‖W‖ = {float(delta.norm() / W.norm()):.2f}")

by_hand = copy.deepcopy(ours)
with torch.no_grad():
    unmerged = ours(ids).logits
    for _, lyr in lc.lora_layers(by_hand):
        lyr.base_layer.weight.add_(lyr.delta_weight().T)   # (in, out) += ΔWᵀ
        lyr.merged_adapters = ["default"]                  # the branch is now inside W: skip it
    merged_by_hand = by_hand(ids).logits
    lc.merge_lora(ours)
    merged_lc = ours(ids).logits
    weight_gap = max(float((a.base_layer.weight - b.base_layer.weight).abs().max())
                     for (_, a), (_, b) in zip(lc.lora_layers(ours), lc.lora_layers(by_hand), strict=True))
    lc.unmerge_lora(ours)

print(f"max |Δlogit|, merged by hand vs unmerged: {float((merged_by_hand - unmerged).abs().max()):.1e}")
print(f"max |W|-gap, lc.merge_lora vs by hand: {weight_gap:.1e}")
# fp32 logits over six layers: W + ΔW rounds once per weight, so merged and unmerged agree to ~1e-5,
# not bit for bit. 1e-4 is the tolerance PEFT's own merge tests use (tests/testing_common.py).
torch.testing.assert_close(merged_by_hand, unmerged, rtol=1e-4, atol=1e-4)
torch.testing.assert_close(merged_lc, unmerged, rtol=1e-4, atol=1e-4)
assert weight_gap < 1e-6

# %% [markdown]
# ## 3. Forgetting the transpose
#
# **On a non-square layer it fails loudly.** `c_attn`'s weight is (768, 2304) and $\Delta W$ is
# (2304, 768): they cannot be added.

# %%
try:
    W + delta
    raise AssertionError("expected a shape error")
except RuntimeError as err:
    message = str(err)
print("RuntimeError:", message)
assert "must match" in message

# %% [markdown]
# **On a square layer it fails silently.** `attn.c_proj` maps 768 → 768, so $W + \Delta W$ (no
# transpose) has the right shape and runs. But it is a different matrix, and the merged model is no
# longer the fine-tuned one. We compare the wrong merge with the unmerged adapter and with the base
# model, on the same tokens.

# %%
square_cfg = lc.LoraConfig(r=8, lora_alpha=16, target_modules=r".*\.attn\.c_proj", init_lora_weights=False)
tuned = copy.deepcopy(model)
lc.inject_lora(tuned, square_cfg)
for _, lyr in lc.lora_layers(tuned):
    with torch.no_grad():
        lyr.adapter().B.mul_(0.1)

wrong = copy.deepcopy(tuned)
with torch.no_grad():
    for _, lyr in lc.lora_layers(wrong):
        lyr.base_layer.weight.add_(lyr.delta_weight())     # (768, 768) + (768, 768): runs, but transposed
        lyr.merged_adapters = ["default"]
    tuned_logits = tuned(ids).logits
    wrong_logits = wrong(ids).logits
    base_logits = model(ids).logits
    lc.merge_lora(tuned)
    right_logits = tuned(ids).logits

adapter_effect = float((tuned_logits - base_logits).abs().max())
wrong_gap = float((wrong_logits - tuned_logits).abs().max())
right_gap = float((right_logits - tuned_logits).abs().max())
print(f"what the adapter changes:                     max |Δlogit| = {adapter_effect:.3f}")
print(f"merged without the transpose vs the adapter:  max |Δlogit| = {wrong_gap:.3f}   <- silently wrong")
print(f"lc.merge_lora (transposes) vs the adapter:    max |Δlogit| = {right_gap:.1e}")
assert wrong_gap > 1e3 * right_gap and wrong_gap > 0.1 * adapter_effect

# %% [markdown]
# The error is about as large as the adapter's whole effect, and nothing raised. This is why a merge test
# must use a non-zero $B$ (with $B = 0$ the wrong merge adds zeros too) and must compare logits.
#
# ## 4. PEFT does the same
#
# PEFT notices that the target is a `Conv1D`, warns that `fan_in_fan_out` was `False`, and sets it to
# `True` itself. Load our adapter into PEFT and compare, before and after merging.

# %%
import warnings

from peft import LoraConfig as PeftLoraConfig
from peft import get_peft_model
from peft.utils import set_peft_model_state_dict

ours = copy.deepcopy(model)
lc.inject_lora(ours, cfg)
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    theirs = get_peft_model(copy.deepcopy(model),
                            PeftLoraConfig(r=8, lora_alpha=16, target_modules=["c_attn"], init_lora_weights=False))
print("PEFT warned:", next(str(w.message) for w in caught if "fan_in_fan_out" in str(w.message)))
set_peft_model_state_dict(theirs, lc.adapter_state_dict(ours))      # the same A and B in PEFT
peft_layer = theirs.base_model.model.transformer.h[0].attn.c_attn
print("PEFT's c_attn layer: fan_in_fan_out =", peft_layer.fan_in_fan_out)

with torch.no_grad():
    gap_unmerged = float((theirs(ids).logits - ours(ids).logits).abs().max())
    lc.merge_lora(ours)
    peft_merged = theirs.merge_and_unload()
    gap_merged = float((peft_merged(ids).logits - ours(ids).logits).abs().max())
    gap_weights = max(float((layer.base_layer.weight - peft_merged.get_submodule(n).weight).abs().max())
                      for n, layer in lc.lora_layers(ours))
print(f"max |Δlogit| PEFT vs lora_core: unmerged {gap_unmerged:.1e}, merged {gap_merged:.1e}; "
      f"merged weights {gap_weights:.1e}")
assert peft_layer.fan_in_fan_out and max(gap_unmerged, gap_merged) < 1e-4 and gap_weights < 1e-6

# %% [markdown]
# ## Check yourself
#
# 1. What shape does gpt2-medium's `attn.c_attn` weight have (its width is 1024)?
# 2. Which of distilgpt2's four projection kinds are square, so that a forgotten transpose would
#    pass silently?
# 3. For a LoRA layer on `c_attn`, what shape does `layer.delta_weight()` return?
#
# The cell below computes the answers.

# %%
medium = lc.build_on_meta("gpt2-medium")
answer_1 = tuple(medium.transformer.h[0].attn.c_attn.weight.shape)
print("1.", answer_1, "(in, out): 1024 -> 3·1024")
assert answer_1 == (1024, 3072)

shapes = {n: tuple(model.get_submodule(f"transformer.h.0.{n}").weight.shape)
          for n in ("attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj")}
answer_2 = [n for n, (i, o) in shapes.items() if i == o]
print("2.", answer_2, "of", shapes)
assert answer_2 == ["attn.c_proj"]

answer_3 = tuple(lc.lora_layers(ours)[0][1].delta_weight().shape)
print("3.", answer_3, "= (out, in), whatever the base layer's storage")
assert answer_3 == (2304, 768)
