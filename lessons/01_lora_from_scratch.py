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
# # Lesson 1 · LoRA from scratch
#
# Fine-tuning turns a weight matrix $W$ into $W + \Delta W$. Full fine-tuning learns every entry of
# $\Delta W$. **LoRA** (Hu et al. 2021, [arXiv 2106.09685](https://arxiv.org/abs/2106.09685))
# freezes $W$ and learns $\Delta W$ as a product of two thin matrices:
#
# $$\Delta W = \tfrac{\alpha}{r}\, B A, \qquad A \in \mathbb{R}^{r \times \text{in}},\quad
#   B \in \mathbb{R}^{\text{out} \times r},\quad r \ll \min(\text{in}, \text{out})$$
#
# so a layer computes $h = W x + b + \tfrac{\alpha}{r}\, B (A x)$.
#
# Three details carry the whole method:
#
# * **B starts at zero**, so $\Delta W = 0$ and the adapted model starts exactly where the base model was.
# * **A starts random.** If both started at zero, both gradients would stay zero forever:
#   $\partial L / \partial B$ contains $A$ and $\partial L / \partial A$ contains $B$.
# * **ΔW is never formed.** The input goes through an $r$-wide bottleneck, $x \to Ax \to B(Ax)$,
#   so the extra work is small.
#
# In this lesson we write the layer ourselves in about 20 lines, then check that `lora_core` and
# Hugging Face PEFT compute exactly the same thing from the same weights.

# %%
import torch

import lora_core as lc
from lora_core.teach.lesson import setup

# Every lesson starts here: print the versions and the device, stay offline (HF_HUB_OFFLINE=1 unless
# you set it), and read LORA_FAST=1 into FAST (CI: fewer steps, the same pictures and checks).
FAST = setup("this lesson is small and runs on the CPU")

# %% [markdown]
# ## 1. Write the layer
#
# The layer wraps an existing `nn.Linear`, freezes it, and adds the two factors.
# `nn.Linear` stores its weight as (out, in) and computes `x @ W.T + b`; we keep that convention, so
# $A$ is (r, in), $B$ is (out, r) and $BA$ is (out, in), the same shape as $W$.

# %%
import math

import torch.nn as nn


class TinyLoRA(nn.Module):
    """h = base(x) + (alpha / r) · B(A(dropout(x))), with the base layer frozen."""

    def __init__(self, base: nn.Linear, r: int, alpha: float, dropout: float = 0.0):
        super().__init__()
        self.base = base.requires_grad_(False)                     # W and b never train
        self.A = nn.Parameter(torch.empty(r, base.in_features))    # (r, in)
        self.B = nn.Parameter(torch.zeros(base.out_features, r))   # (out, r): zero, so ΔW = 0 at the start
        nn.init.kaiming_uniform_(self.A, a=math.sqrt(5))           # the init nn.Linear gives its own weight
        self.scaling = alpha / r
        self.dropout = nn.Dropout(dropout)                         # acts on the branch's input only

    def forward(self, x: torch.Tensor) -> torch.Tensor:            # x: (..., in)
        down = self.dropout(x) @ self.A.T                          # (..., in) @ (in, r) -> (..., r)
        return self.base(x) + (down @ self.B.T) * self.scaling     # (..., r) @ (r, out) -> (..., out)

    def delta_weight(self) -> torch.Tensor:
        return self.B @ self.A * self.scaling                      # (out, r) @ (r, in) -> (out, in)


# %% [markdown]
# ## 2. At step 0 nothing has changed
#
# With $B = 0$ the branch adds exact zeros, so the output equals the base layer's output bit for bit.
# Only $A$ and $B$ are trainable: $r \cdot \text{in} + \text{out} \cdot r = r(\text{in} + \text{out})$
# numbers, against $\text{in} \cdot \text{out}$ in $W$.

# %%
IN, OUT, R, ALPHA = 64, 48, 4, 8
torch.manual_seed(0)
base = nn.Linear(IN, OUT)
mine = TinyLoRA(base, r=R, alpha=ALPHA)
x = torch.randn(5, IN)                                             # 5 tokens

assert torch.equal(mine(x), base(x))                               # exactly the base model
trainable = sum(p.numel() for p in mine.parameters() if p.requires_grad)
print(f"trainable: {trainable} = r·(in+out) = {R}·({IN}+{OUT});  frozen W: {IN * OUT}")
assert trainable == R * (IN + OUT)

# %% [markdown]
# Which factor learns first? Backpropagate one loss and look at the gradients. Because $B = 0$, the
# gradient of $A$ (which is multiplied by $B^\top$ on the way back) is exactly zero: on the first step
# only $B$ moves. From the second step on, both do.

# %%
mine(x).square().sum().backward()
print("grad of W:", mine.base.weight.grad, "| ‖grad A‖ =", float(mine.A.grad.norm()),
      "| ‖grad B‖ =", round(float(mine.B.grad.norm()), 4))
assert mine.base.weight.grad is None and float(mine.A.grad.abs().max()) == 0.0 and float(mine.B.grad.norm()) > 0

# %% [markdown]
# ## 3. A non-zero B, then `lora_core`
#
# A comparison with $B = 0$ proves nothing: every implementation returns `base(x)`. So we fill $B$
# with random numbers, as if the adapter had been trained, and copy the same $A$ and $B$ into
# `lc.LoraLinear`, which wraps the same frozen layer.

# %%
with torch.no_grad():
    mine.B.normal_(std=0.1)

cfg = lc.LoraConfig(r=R, lora_alpha=ALPHA)
ours = lc.LoraLinear(base, cfg)
with torch.no_grad():
    ours.lora_A["default"].weight.copy_(mine.A)                    # an nn.Linear(in, r): weight (r, in)
    ours.lora_B["default"].weight.copy_(mine.B)                    # an nn.Linear(r, out): weight (out, r)
    diff_ours = float((ours(x) - mine(x)).abs().max())
    delta_gap = float((ours.delta_weight() - mine.delta_weight()).abs().max())
    moved = float((mine(x) - base(x)).abs().max())

print(f"the adapter moves the output by up to {moved:.3f}")
print(f"max |lora_core − mine| = {diff_ours:.1e} on the output, {delta_gap:.1e} on ΔW")
assert moved > 0.1 and diff_ours < 1e-6 and delta_gap < 1e-7

# %% [markdown]
# ## 4. The same weights in PEFT
#
# PEFT wraps the layers of a model whose names match `target_modules`. We give it a model with one
# layer called `proj`, build the same model with `lc.inject_lora`, and copy our factors into both.
# PEFT keeps one set of factors per adapter name, under `"default"`, and so does `lora_core`: the same
# lines write into both.

# %%
import copy

from peft import LoraConfig as PeftLoraConfig
from peft import get_peft_model


class OneLayer(nn.Module):
    def __init__(self, layer: nn.Linear):
        super().__init__()
        self.proj = layer

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x)


theirs = get_peft_model(OneLayer(copy.deepcopy(base)),
                        PeftLoraConfig(r=R, lora_alpha=ALPHA, target_modules=["proj"]))
ours_model = OneLayer(copy.deepcopy(base))
lc.inject_lora(ours_model, lc.LoraConfig(r=R, lora_alpha=ALPHA, target_modules=["proj"]))

with torch.no_grad():
    theirs.base_model.model.proj.lora_A["default"].weight.copy_(mine.A)
    theirs.base_model.model.proj.lora_B["default"].weight.copy_(mine.B)
    ours_model.proj.lora_A["default"].weight.copy_(mine.A)
    ours_model.proj.lora_B["default"].weight.copy_(mine.B)
    out_mine, out_ours, out_peft = mine(x), ours_model(x), theirs(x)

print("PEFT:     ", end="")
theirs.print_trainable_parameters()
print("lora_core:", lc.peft_line(*lc.trainable_parameters(ours_model)))
print(f"max |PEFT − mine| = {float((out_peft - out_mine).abs().max()):.1e},  "
      f"max |PEFT − lora_core| = {float((out_peft - out_ours).abs().max()):.1e}")
torch.testing.assert_close(out_peft, out_mine, rtol=1e-5, atol=1e-6)
torch.testing.assert_close(out_peft, out_ours, rtol=1e-5, atol=1e-6)
assert lc.trainable_parameters(ours_model) == theirs.get_nb_trainable_parameters()

# %% [markdown]
# ## 5. Merge: no extra cost at inference
#
# After training, $W + \Delta W$ is just another matrix of the same shape. Write it into the layer
# and the branch is no longer needed: the merged layer costs exactly what the base layer cost.
# By hand, with `lc.merge_lora`, and with PEFT's `merge_and_unload`, the merged weights agree.

# %%
with torch.no_grad():
    merged_by_hand = nn.Linear(IN, OUT)
    merged_by_hand.weight.copy_(base.weight + mine.delta_weight())  # (out, in) + (out, in)
    merged_by_hand.bias.copy_(base.bias)
    lc.merge_lora(ours_model)
    peft_merged = theirs.merge_and_unload()                          # a plain OneLayer again
    gap_out = float((merged_by_hand(x) - mine(x)).abs().max())
    gap_ours = float((ours_model.proj.base_layer.weight - merged_by_hand.weight).abs().max())
    gap_peft = float((peft_merged.proj.weight - merged_by_hand.weight).abs().max())

print(type(peft_merged.proj).__name__, "after PEFT's merge_and_unload")
print(f"merged vs unmerged output: {gap_out:.1e};  merged W, lora_core vs hand: {gap_ours:.1e}, "
      f"PEFT vs hand: {gap_peft:.1e}")
assert gap_out < 1e-5 and gap_ours < 1e-6 and gap_peft < 1e-6

# %% [markdown]
# `lc.merge_lora` is explicit and out of place: it swaps in a new weight and keeps the old one, so
# `lc.unmerge_lora` restores $W$ bit for bit. PEFT merges in place and unmerges by subtracting
# $\Delta W$ again; in floating point $(W + \Delta W) - \Delta W$ is not always $W$.

# %%
lc.unmerge_lora(ours_model)
assert torch.equal(ours_model.proj.base_layer.weight, base.weight)

again = get_peft_model(OneLayer(copy.deepcopy(base)), PeftLoraConfig(r=R, lora_alpha=ALPHA, target_modules=["proj"]))
peft_layer = again.base_model.model.proj
with torch.no_grad():
    peft_layer.lora_A["default"].weight.copy_(mine.A)
    peft_layer.lora_B["default"].weight.copy_(mine.B)
peft_layer.merge()
peft_layer.unmerge()
off = peft_layer.base_layer.weight != base.weight
print(f"lora_core merge + unmerge: W is back bit for bit. PEFT merge + unmerge: {int(off.sum())} of {off.numel()} "
      f"entries differ, by up to {float((peft_layer.base_layer.weight - base.weight).abs().max()):.1e}")

# %% [markdown]
# ## Check yourself
#
# 1. A LoRA layer with r = 8 wraps `nn.Linear(1024, 256)`. How many parameters train?
# 2. You double α and keep r. What happens to ΔW?
# 3. A freshly created adapter (B = 0) is merged into W. How much does W change?
#
# The cell below computes the answers.

# %%
layer = lc.LoraLinear(nn.Linear(1024, 256), lc.LoraConfig(r=8, lora_alpha=16))
answer_1 = sum(p.numel() for p in (layer.adapter().A, layer.adapter().B))
print("1.", answer_1, "= 8·(1024+256)")
assert answer_1 == 8 * (1024 + 256) == 10_240

doubled = TinyLoRA(base, r=R, alpha=2 * ALPHA)
with torch.no_grad():
    doubled.A.copy_(mine.A)
    doubled.B.copy_(mine.B)
    ratio = float(doubled.delta_weight().norm() / mine.delta_weight().norm())
print(f"2. ΔW is multiplied by {ratio:g}: the scale α/r doubles")
assert abs(ratio - 2) < 1e-6

fresh = OneLayer(copy.deepcopy(base))
lc.inject_lora(fresh, lc.LoraConfig(r=R, lora_alpha=ALPHA, target_modules=["proj"]))
lc.merge_lora(fresh)
change = float((fresh.proj.base_layer.weight - base.weight).abs().max())
print("3. W changes by", change, "(B = 0, so ΔW = 0)")
assert change == 0.0
