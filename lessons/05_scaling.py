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
# # Lesson 5 · Scaling: α/r, rsLoRA's α/√r, and α as a learning rate
#
# LoRA adds $s \cdot BA$ to $W$, and the scale $s$ is not learned. The LoRA paper sets
# $s = \alpha / r$; rsLoRA (Kalajdzievski 2023, [arXiv 2312.03732](https://arxiv.org/abs/2312.03732))
# argues for $s = \alpha / \sqrt{r}$ (`use_rslora=True`). This lesson asks three questions:
#
# 1. How does each rule change as $r$ grows, and why would $\sqrt{r}$ be the right divisor?
# 2. Under Adam, what does α actually do? (It behaves like a learning rate, with a twist.)
# 3. What does the popular r = 64, α = 16 setting mean? (The update is shrunk to a quarter.)

# %%
import torch

import lora_core as lc
from lora_core import viz
from lora_core.teach import toy
from lora_core.teach.lesson import setup

# Every lesson starts here: print the versions and the device, stay offline (HF_HUB_OFFLINE=1 unless
# you set it), and read LORA_FAST=1 into FAST (CI: fewer steps, the same pictures and checks).
FAST = setup("this lesson runs on the CPU")

# %% [markdown]
# ## 1. Two rules
#
# At a fixed α, $\alpha / r$ falls 4× from r = 16 to r = 64; $\alpha / \sqrt{r}$ falls only 2×.
# `LoraConfig.scaling` is the one place both rules live, and PEFT computes the same numbers.

# %%
from peft import LoraConfig as PeftLoraConfig
from peft import get_peft_model

ALPHA = 16
RANKS = [1, 2, 4, 8, 16, 32, 64, 128, 256]
rules = {"α/r (LoRA, PEFT default)": [lc.LoraConfig(r=r, lora_alpha=ALPHA).scaling for r in RANKS],
         "α/√r (use_rslora=True)": [lc.LoraConfig(r=r, lora_alpha=ALPHA, use_rslora=True).scaling for r in RANKS]}
for r, plain, rs in zip(RANKS, *rules.values(), strict=True):
    assert plain == ALPHA / r and abs(rs - ALPHA / r ** 0.5) < 1e-12

peft_scales = {}
for rs in (False, True):
    peft_model = get_peft_model(torch.nn.Sequential(torch.nn.Linear(128, 128)),
                                PeftLoraConfig(r=64, lora_alpha=ALPHA, use_rslora=rs, target_modules=["0"]))
    peft_scales[rs] = peft_model.base_model.model[0].scaling["default"]
print(f"r=64, α=16: lora_core {lc.LoraConfig(r=64, lora_alpha=ALPHA).scaling:g} / rsLoRA "
      f"{lc.LoraConfig(r=64, lora_alpha=ALPHA, use_rslora=True).scaling:g};  PEFT {peft_scales[False]:g} / "
      f"{peft_scales[True]:g}")
assert peft_scales == {False: 0.25, True: 2.0}
viz.scale_vs_rank(RANKS, rules, highlight=(64, 0.25), alpha=ALPHA).show()

# %% [markdown]
# ### Why √r? A by-hand experiment
#
# The branch output is a sum over the $r$ channels of the bottleneck:
# $(BAx)_i = \sum_{j=1}^{r} B_{ij}\,(Ax)_j$. With Adam every entry of $B$ moves by about `lr` per step,
# whatever $r$ is, so after training the entries of $B$ have a size that does not depend on $r$. A sum
# of $r$ terms of that size with unrelated signs grows like $\sqrt{r}$. Dividing by $r$ then shrinks the
# update like $1/\sqrt{r}$; dividing by $\sqrt{r}$ keeps it steady. That is rsLoRA's argument, in the
# simplest case; the paper proves it for forward and backward passes as $r$ grows.
#
# We measure it: $A$ with the usual Kaiming-uniform init, $B$ with entries $\pm 0.01$ and random signs,
# and the size of $s \cdot BAx$ for both rules.

# %%
import math

import torch.nn as nn

gen = torch.Generator().manual_seed(0)
d = 1024
x = torch.randn(256, d, generator=gen)                         # 256 inputs
branch_size = {"no scale": [], "α/r": [], "α/√r": []}
for r in RANKS:
    A = torch.empty(r, d)
    nn.init.kaiming_uniform_(A, a=math.sqrt(5), generator=gen)  # (r, d), as PEFT initialises lora_A
    B = 0.01 * torch.randint(0, 2, (d, r), generator=gen).mul(2).sub(1).float()   # (d, r): entries ±0.01
    out = (x @ A.T @ B.T).norm(dim=1).mean().item()             # (256, d) -> (256, r) -> (256, d)
    branch_size["no scale"].append(out)
    branch_size["α/r"].append(out * ALPHA / r)
    branch_size["α/√r"].append(out * ALPHA / r ** 0.5)
for name, sizes in branch_size.items():
    print(f"{name:>9}: " + "  ".join(f"r={r}: {v:.3g}" for r, v in zip(RANKS, sizes, strict=True)))

growth = {name: sizes[-1] / sizes[2] for name, sizes in branch_size.items()}   # r = 256 against r = 4
print({name: round(g, 2) for name, g in growth.items()}, "(√64 = 8)")
assert 6 < growth["no scale"] < 10 and growth["α/r"] < 0.2 and 0.7 < growth["α/√r"] < 1.3

# %% [markdown]
# ### In training
#
# Now real Adam runs on `toy.train_toy`: a frozen 128 × 128 layer learns a hidden update of rank 4
# (the same toy as lesson 4). α = 16 for every run, so only the rule differs. The curves are the exact
# expected loss. Under α/r the three ranks start almost together (at step 20, r = 16 and r = 64 are
# level): the larger rank's extra capacity is eaten by its smaller scale, and it helps only later.
# Under α/√r the larger rank pulls ahead from the first steps.

# %%
steps = 60 if FAST else 150
runs = {(r, rs): toy.train_toy(toy.ToyConfig(r=r, lora_alpha=ALPHA, use_rslora=rs, lr=1e-3, steps=steps))
        for rs in (False, True) for r in (4, 16, 64)}
for rs, label in ((False, "α/r"), (True, "α/√r (rsLoRA)")):
    viz.curves({f"r={r}": runs[r, rs].losses for r in (4, 16, 64)}, f"Loss under {label}, α = {ALPHA}",
               "expected loss", log_y=True).show()

at_20 = {key: run.losses[19] for key, run in runs.items()}
spread = {rs: at_20[4, rs] / at_20[64, rs] for rs in (False, True)}    # how much better r=64 is than r=4
print("loss at step 20:", {f"r={r}, {'α/√r' if rs else 'α/r'}": round(v, 4) for (r, rs), v in at_20.items()})
print(f"loss(r=4) / loss(r=64) at step 20: α/r {spread[False]:.2f}, α/√r {spread[True]:.2f}")
print(f"r=64 after {steps} steps: α/r {runs[64, False].losses[-1]:.2e}, α/√r {runs[64, True].losses[-1]:.2e}")
assert spread[True] > 2 * spread[False] and runs[64, True].losses[-1] < runs[64, False].losses[-1]

# %% [markdown]
# ## 2. Under Adam, α acts like a learning rate
#
# **The first step, by hand.** Adam divides each gradient by a running estimate of its own size. On
# the first step that estimate is the gradient itself, so the step is $-\text{lr} \cdot \text{sign}(g)$,
# entry by entry. And since $B = 0$, the gradient of $A$ is zero: only $B$ moves. So after one step
#
# $$\Delta W_1 = s \cdot B_1 A_0 = -\,s \cdot \text{lr} \cdot \text{sign}(g_B)\, A_0 .$$
#
# Only the product $s \cdot \text{lr}$ appears (and $\text{sign}(g_B)$ does not depend on $s > 0$). So
# (α, lr) and (2α, lr/2) take the same first step (exactly, but for Adam's tiny ε). We check the
# formula with `torch.optim.Adam`.

# %%
torch.manual_seed(0)
layer = lc.LoraLinear(nn.Linear(32, 32), lc.LoraConfig(r=4, lora_alpha=8))
A, B = layer.adapter().A, layer.adapter().B                  # the layer's own parameters
A0 = A.detach().clone()
opt = torch.optim.Adam([A, B], lr=1e-3)
xb, yb = torch.randn(16, 32), torch.randn(16, 32)
(layer(xb) - yb).square().mean().backward()
g_B = B.grad.clone()
opt.step()

predicted_B1 = -1e-3 * torch.sign(g_B)
print(f"max |B₁ − (−lr·sign g_B)| = {float((B.detach() - predicted_B1).abs().max()):.1e}; "
      f"A moved: {not torch.equal(A, A0)}")
torch.testing.assert_close(B.detach(), predicted_B1, rtol=1e-3, atol=1e-8)
assert torch.equal(A, A0)

# %% [markdown]
# **After the first step they drift apart.** From step 2 on, $A$ moves too, by about `lr` per entry,
# and *not* by $s \cdot \text{lr}$. Halving lr halves how far $A$ moves, and doubling α does not make up
# for that. So (2α, lr/2) is only an approximation of (α, lr).
#
# **An exact equivalent exists.** $\Delta W = s\,BA$ does not change under $(B, A, s) \to (cB, cA, s/c^2)$.
# The gradients of the rescaled factors are $1/c$ times the old ones, which Adam ignores; so if lr
# becomes $c \cdot \text{lr}$, the rescaled pair follows the old path exactly, scaled by $c$. Doubling α
# means $c = 1/\sqrt{2}$: lr/√2 *and* $A_0/\sqrt{2}$. `toy.adam_equivalent` builds that config.

# %%
adam_steps = 40 if FAST else 80
base_cfg = toy.ToyConfig(r=8, lora_alpha=16, lr=1e-3, steps=adam_steps)
half_cfg = toy.ToyConfig(**{**base_cfg.__dict__, "lora_alpha": 32, "lr": 5e-4})
twin_cfg = toy.adam_equivalent(base_cfg, 2.0)
print(f"adam_equivalent: α={twin_cfg.lora_alpha:g}, lr={twin_cfg.lr:.3e}, A₀ scaled by {twin_cfg.init_scale:.4f}")
base_run, half_run, twin_run = (toy.train_toy(c) for c in (base_cfg, half_cfg, twin_cfg))
curves = {"(α=16, lr=1e-3)": base_run.losses, "(α=32, lr=5e-4)": half_run.losses,
          "(α=32, lr=7.07e-4, A₀/√2)": twin_run.losses}
viz.curves(curves, "(α, lr) against (2α, lr/2) and the exact equivalent", "expected loss",
           dashed=["(α=32, lr=7.07e-4, A₀/√2)"]).show()

for s_ in (1, 2, 10, adam_steps):
    print(f"step {s_:>3}: " + "  ".join(f"{name} {v[s_ - 1]:.5f}" for name, v in curves.items()))
assert abs(half_run.losses[0] / base_run.losses[0] - 1) < 1e-5          # step 1: the same (up to Adam's ε)
assert abs(half_run.losses[-1] / base_run.losses[-1] - 1) > 1e-3        # later: apart
assert max(abs(a / b - 1) for a, b in zip(twin_run.losses, base_run.losses, strict=True)) < 1e-4   # retraced

# %% [markdown]
# So α carries no information that the learning rate and the init scale do not. In practice: if you
# change α, expect to retune the learning rate, and compare runs at equal $s \cdot \text{lr}$.
#
# ## 3. r = 64 with α = 16
#
# A common QLoRA recipe uses r = 64 and α = 16. The scale is $16/64 = 0.25$: every update $BA$ is
# shrunk 4× before it reaches $W$. Under Adam that works like a smaller learning rate. Compare it with
# α = 128 (scale 2) at the same lr, on the toy problem.

# %%
quarter = lc.LoraConfig(r=64, lora_alpha=16)
print(f"r=64, α=16: scale {quarter.scaling:g} (shrinks B·A {1 / quarter.scaling:g}×); "
      f"with use_rslora: {lc.LoraConfig(r=64, lora_alpha=16, use_rslora=True).scaling:g}")
assert quarter.scaling == 0.25

pair = {a: toy.train_toy(toy.ToyConfig(r=64, lora_alpha=a, lr=1e-3, steps=steps)) for a in (16, 128)}
viz.curves({f"α={a} (scale {a / 64:g})": run.losses for a, run in pair.items()},
           "r = 64: α = 16 against α = 128", "expected loss", log_y=True).show()
viz.curves({f"α={a} (scale {a / 64:g})": run.delta_norms for a, run in pair.items()},
           "r = 64: ‖ΔW‖_F during training", "‖ΔW‖_F").show()
print(f"after 10 steps ‖ΔW‖: α=16 {pair[16].delta_norms[9]:.3f}, α=128 {pair[128].delta_norms[9]:.3f}")
print(f"after {steps} steps loss: α=16 {pair[16].losses[-1]:.2e}, α=128 {pair[128].losses[-1]:.2e}")
assert pair[16].delta_norms[9] < pair[128].delta_norms[9] and pair[16].losses[-1] > pair[128].losses[-1]

# %% [markdown]
# Both settings get there eventually: the target is reachable at either scale. α = 16 just takes
# smaller steps in $\Delta W$, exactly as a lower learning rate would.
#
# ## Check yourself
#
# 1. What is the scale for r = 16, α = 32 under α/r, and under α/√r?
# 2. You move from r = 16 to r = 64 with rsLoRA and want the same scale. By what factor must α change?
# 3. Under Adam, which learning rate at α = 64 gives exactly the same first step as (α = 16, lr = 1e-3)?
#
# The cell below computes the answers.

# %%
answer_1 = (lc.LoraConfig(r=16, lora_alpha=32).scaling, lc.LoraConfig(r=16, lora_alpha=32, use_rslora=True).scaling)
print(f"1. α/r = {answer_1[0]:g}, α/√r = {answer_1[1]:g}")
assert answer_1 == (2.0, 8.0)

answer_2 = 2   # √(64/16)
same = lc.LoraConfig(r=64, lora_alpha=32 * answer_2, use_rslora=True).scaling
print(f"2. ×{answer_2}: r=64, α=64 gives {same:g}, the same as r=16, α=32")
assert same == lc.LoraConfig(r=16, lora_alpha=32, use_rslora=True).scaling

answer_3 = 1e-3 * 16 / 64            # keep s·lr fixed
first = [toy.train_toy(toy.ToyConfig(r=8, lora_alpha=a, lr=lr, steps=1)).losses[0]
         for a, lr in ((16, 1e-3), (64, answer_3))]
print(f"3. lr = {answer_3:g}: first-step losses {first[0]:.6f} and {first[1]:.6f}")
assert abs(first[1] / first[0] - 1) < 1e-5
