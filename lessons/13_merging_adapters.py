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
# # Lesson 13 · Merging adapters: weighted sums, TIES and DARE, by hand
#
# Two LoRA adapters trained on two tasks live on one frozen base. Can one adapter do both jobs?
# PEFT's `add_weighted_adapter` builds a new adapter from several, in eleven ways. This lesson derives the
# ideas behind them by hand and checks each one against `lora_core` and PEFT:
#
# | idea | the question | what we measure |
# |---|---|---|
# | a task vector | what does an adapter add? | ΔW = B·A·scaling per layer |
# | `linear` vs `cat` vs `svd` | is the new adapter Σ wᵢ·ΔWᵢ? | the relative error of each, from the factors |
# | TIES (arXiv 2306.01708) | what if two adapters disagree in sign? | trim, elect a sign, average the agreeing values |
# | DARE (arXiv 2311.03099) | can we drop most of a delta? | a random mask, rescaled: the same mean |
# | one adapter, weight 1.0 | does "merging" one adapter return it? | ΔW after the merge, ours and PEFT's, with rsLoRA |

# %%
import copy
import warnings

import torch
import torch.nn as nn
from peft import LoraConfig as PeftLoraConfig
from peft import get_peft_model
from peft.utils import merge_utils

import lora_core as lc
from lora_core import combining, viz
from lora_core.teach import merging_steps
from lora_core.teach.lesson import setup

warnings.filterwarnings("ignore", category=FutureWarning)  # deprecation notices from inside transformers

# Every lesson starts here: print the versions and the device, stay offline (HF_HUB_OFFLINE=1 unless
# you set it), and read LORA_FAST=1 into FAST (CI: fewer DARE draws, the same pictures and checks).
FAST = setup("this lesson runs on the CPU")

# %% [markdown]
# ## 1. Two adapters on one base
#
# A small base, two Linear layers of width 48, and two adapters on both: `recsys` (r=4, α=8) and `e2e`
# (r=4, α=16, rsLoRA). `init_lora_weights=False` gives both a non-zero B, as if trained, and a
# `torch.Generator` makes them the same on every machine. Each adapter's **task vector** is its ΔW per layer.

# %%
class Base(nn.Module):
    def __init__(self, width: int = 48):
        super().__init__()
        self.up, self.down = nn.Linear(width, width), nn.Linear(width, width)

    def forward(self, x):
        return self.down(torch.relu(self.up(x)))


with torch.random.fork_rng(devices=[]):
    torch.manual_seed(0)
    base = Base()
gen = torch.Generator().manual_seed(0)
RECSYS = dict(r=4, lora_alpha=8, target_modules=["up", "down"], init_lora_weights=False)
E2E = dict(r=4, lora_alpha=16, use_rslora=True, target_modules=["up", "down"], init_lora_weights=False)

model = copy.deepcopy(base)
lc.inject_lora(model, lc.LoraConfig(**RECSYS), generator=gen, adapter_name="recsys")
lc.add_adapter(model, "e2e", lc.LoraConfig(**E2E), generator=gen)
up = model.up
source_state = {k: v.clone() for k, v in model.state_dict().items()}  # the two adapters, for PEFT's copy below
tau = {name: up.delta_weight(name).detach() for name in ("recsys", "e2e")}  # (48, 48) each
for name, t in tau.items():
    a = up.adapter(name)
    print(f"{name:6s} r={a.r} α={a.lora_alpha:g} scaling={a.scaling:g}  ‖ΔW(up)‖ = {t.norm():.4f}")
print("adapters:", list(lc.adapter_config(model, n).r for n in ("recsys", "e2e")), "active:", lc.active_adapters(model))

# %% [markdown]
# ## 2. Is the merged adapter Σ wᵢ·ΔWᵢ? Three answers
#
# What we want is τ = w₁·ΔW₁ + w₂·ΔW₂. A LoRA adapter stores factors, not ΔW, so each method has to find new
# factors B', A' whose product is τ (the new adapter gets scaling 1):
#
# - **`cat`** stacks the factors: A' = [w₁s₁A₁; w₂s₂A₂], B' = [B₁ B₂]. Then B'A' = Σ wᵢsᵢBᵢAᵢ exactly, at rank r₁+r₂.
# - **`linear`** adds the factors: A' = Σ √|wᵢsᵢ|·sign·Aᵢ, B' = Σ √|wᵢsᵢ|·Bᵢ, keeping rank r. The product
#   B'A' has **cross terms** √…B₁A₂ and √…B₂A₁ that no adapter trained: it is not τ.
# - **`svd`** forms τ and keeps its top r' singular directions: exact when τ's rank is at most r'.
#
# By hand, from the factors:

# %%
w = (0.7, 0.5)
a1, a2 = up.adapter("recsys"), up.adapter("e2e")
target = w[0] * tau["recsys"] + w[1] * tau["e2e"]                                   # (48, 48)

cat_A = torch.cat([w[0] * a1.scaling * a1.A, w[1] * a2.scaling * a2.A]).detach()  # (8, 48)
cat_B = torch.cat([a1.B, a2.B], dim=1).detach()                                    # (48, 8)
root = [(w[i] * a.scaling) ** 0.5 for i, a in enumerate((a1, a2))]                 # both weights > 0 here
lin_A = (root[0] * a1.A + root[1] * a2.A).detach()                                 # (4, 48)
lin_B = (root[0] * a1.B + root[1] * a2.B).detach()                                 # (48, 4)
U, S, Vh = torch.linalg.svd(target)
svd_B, svd_A = U[:, :4] * S[:4], Vh[:4]                                             # rank 4 of a rank-8 τ

by_hand = {"cat": cat_B @ cat_A, "linear": lin_B @ lin_A, "svd": svd_B @ svd_A}
for kind, delta in by_hand.items():
    print(f"{kind:6s} relative error vs Σ wᵢ·ΔWᵢ: {(delta - target).norm() / target.norm():.4f}")

# %% [markdown]
# `cat` is exact, `svd` at rank 4 loses what τ holds beyond its top four directions (τ has rank 8), and
# `linear` is off by its cross terms. Now the library: `lc.add_weighted_adapter` builds each one as a new
# adapter, and PEFT's does the same on a copy of the same model.

# %%
def peft_twin() -> nn.Module:
    """PEFT's model with the same two adapters, our factors copied in (our keys are PEFT's)."""
    twin = get_peft_model(copy.deepcopy(base), PeftLoraConfig(**RECSYS), adapter_name="recsys")
    twin.add_adapter("e2e", PeftLoraConfig(**E2E))
    twin.base_model.model.load_state_dict(source_state)
    return twin


theirs = peft_twin()
for kind in ("cat", "linear", "svd"):
    lc.add_weighted_adapter(model, ["recsys", "e2e"], list(w), f"m_{kind}", combination_type=kind)
    theirs.add_weighted_adapter(["recsys", "e2e"], list(w), f"m_{kind}", combination_type=kind)
    ours_delta = model.up.delta_weight(f"m_{kind}")
    peft_delta = theirs.base_model.model.up.get_delta_weight(f"m_{kind}")
    print(f"{kind:6s} ours vs by hand {(ours_delta - by_hand[kind]).abs().max():.1e}"
          f" | ours vs PEFT {(ours_delta - peft_delta).abs().max():.1e}")
    assert torch.allclose(ours_delta, by_hand[kind], atol=1e-5)
    assert torch.allclose(ours_delta, peft_delta, atol=1e-5)

# %% [markdown]
# ## 3. TIES: trim, elect a sign, merge the agreeing values
#
# When two task vectors disagree in sign at an entry, their sum cancels both. TIES (Yadav et al. 2023)
# does three things per entry, on the weighted task vectors:
#
# 1. **trim**: keep the k = ⌊density·numel⌋ largest |values| of each task vector, zero the rest;
# 2. **elect**: the sign of the sum of the trimmed values (the larger mass wins);
# 3. **disjoint merge**: the *mean* of the values that agree with the elected sign.
#
# By hand, on three 4×6 task tensors:

# %%
tensors = merging_steps.task_tensors(3, (4, 6), seed=1)
weights, density = [1.0, 0.6, 0.8], 0.5
k = int(density * 24)
trimmed = torch.stack([t * (t.abs() >= t.abs().flatten().topk(k).values[-1]) for t in tensors])  # (3, 4, 6)
sign = torch.where(trimmed.sum(0) >= 0, 1.0, -1.0)                                                # (4, 6)
agree = trimmed.sign() == sign                                                                    # (3, 4, 6)
weighted = trimmed * torch.tensor(weights).view(3, 1, 1)
ties_by_hand = (weighted * agree).sum(0) / agree.sum(0).clamp(min=1)                              # (4, 6)

ours_ties = combining.ties(tensors, weights, density)
peft_ties = merge_utils.ties(tensors, torch.tensor(weights), density)
print("kept per tensor:", [int(c) for c in (trimmed != 0).sum((1, 2))], "of 24 | elected −1 at",
      int((sign < 0).sum()), "entries")
print(f"by hand vs lora_core {(ties_by_hand - ours_ties).abs().max():.1e} | lora_core vs PEFT "
      f"{(ours_ties - peft_ties).abs().max():.1e}")
assert torch.equal(ours_ties, peft_ties) and torch.allclose(ties_by_hand, ours_ties)

# %% [markdown]
# Each step, drawn by `viz.merging.ties_steps_figure`: the trimmed tensors, the elected signs, and the merge
# beside the plain weighted sum.

# %%
walk = merging_steps.ties_walkthrough_of(tensors, weights, density)
print(walk["steps"])
viz.merging.ties_steps_figure(walk)

# %% [markdown]
# ## 4. DARE: drop and rescale
#
# DARE (Yu et al. 2023) keeps each entry with probability p = density and divides the survivors by p,
# so every entry keeps its expected value: E[mask·τ/p] = p·τ/p = τ. One Bernoulli draw per entry. With the
# same seed, our `torch.Generator` draws PEFT's mask (PEFT draws from the global RNG).

# %%
tau_small = tensors[0]
p = 0.3
mask = torch.bernoulli(torch.full_like(tau_small, p), generator=torch.Generator().manual_seed(7))
dare_by_hand = tau_small * mask / p
ours_dare = combining.dare_linear([tau_small], [1.0], p, generator=torch.Generator().manual_seed(7))
with torch.random.fork_rng(devices=[]):
    torch.manual_seed(7)
    peft_dare = merge_utils.dare_linear([tau_small], torch.tensor([1.0]), p)
print(f"kept {int(mask.sum())} of {mask.numel()} | by hand = lora_core: {torch.equal(dare_by_hand, ours_dare)}"
      f" | lora_core = PEFT: {torch.equal(ours_dare, peft_dare)}")
assert torch.equal(dare_by_hand, ours_dare) and torch.equal(ours_dare, peft_dare)

draws = 200 if FAST else 2000
g = torch.Generator().manual_seed(0)
mean = torch.stack([combining.dare_linear([tau_small], [1.0], p, generator=g) for _ in range(draws)]).mean(0)
print(f"mean of {draws} DARE draws vs τ: max |difference| {(mean - tau_small).abs().max():.3f}"
      f" (one draw: {(ours_dare - tau_small).abs().max():.3f})")
viz.merging.dare_figure(merging_steps.dare_walkthrough(density=p, seed=0, draws=draws))

# %% [markdown]
# ## 5. One adapter, weight 1.0: the merge must return it
#
# "Merging" a single adapter with weight 1.0 should change nothing. PEFT's new adapter gets r' = r and
# α' = r and copies `use_rslora` from the source, so with rsLoRA its scaling is r/√r = √r instead of 1:
# the merged ΔW is √r times the source's (PEFT issue #3761). `lora_core` writes the new adapter with
# `use_rslora=False, lora_alpha=r'`, scaling exactly 1. `e2e` uses rsLoRA at r=4, so PEFT's copy is 2×.

# %%
lc.add_weighted_adapter(model, ["e2e"], [1.0], "e2e_copy", combination_type="linear")
theirs = peft_twin()
theirs.add_weighted_adapter(["e2e"], [1.0], "e2e_copy", combination_type="linear")
source = model.up.delta_weight("e2e")
ours_copy = model.up.delta_weight("e2e_copy")
peft_copy = theirs.base_model.model.up.get_delta_weight("e2e_copy")
ratio = float(peft_copy.norm() / source.norm())
print(f"ours: max |ΔW' − ΔW| = {(ours_copy - source).abs().max():.1e} | PEFT: ‖ΔW'‖/‖ΔW‖ = {ratio:.4f} (√4 = 2)")

x = torch.randn(5, 48, generator=torch.Generator().manual_seed(3))
outputs = {}
for name in ("e2e", "e2e_copy"):
    lc.set_adapter(model, name)
    theirs.set_adapter(name)
    with torch.no_grad():
        outputs[name] = (model(x), theirs(x))
print(f"outputs, copy vs source: ours {(outputs['e2e_copy'][0] - outputs['e2e'][0]).abs().max():.1e}"
      f" | PEFT {(outputs['e2e_copy'][1] - outputs['e2e'][1]).abs().max():.3f}")

# %% [markdown]
# ## Check yourself
#
# 1. Two adapters of rank 4 merged with `cat`: what is the new adapter's rank?
# 2. TIES with two equal task vectors τ and τ, weights (1, 1), density 1: is the result τ or 2τ? And the plain
#    weighted sum (`task_arithmetic`)?
# 3. DARE at density 0.3: by what factor are the kept entries multiplied?
# 4. PEFT merges one rsLoRA adapter of rank 16 with weight 1.0. By what factor is ΔW off?
# 5. Which of `cat`, `linear` and `svd` reproduced Σ wᵢ·ΔWᵢ exactly in section 2?
#
# The cell below computes each answer with `lora_core` and asserts it.

# %%
lc.set_adapter(model, "recsys")
lc.add_weighted_adapter(model, ["recsys", "e2e"], [1.0, 1.0], "both_cat", combination_type="cat")
answer_1 = lc.adapter_config(model, "both_cat").r
t = tensors[0]
answer_2 = (combining.ties([t, t], [1.0, 1.0], 1.0), combining.task_arithmetic([t, t], [1.0, 1.0]))
kept = combining.random_pruning(torch.ones(1000), 0.3, rescale=True, generator=torch.Generator().manual_seed(0))
answer_3 = float(kept.max())
answer_4 = 16 / 16 ** 0.5  # PEFT's scaling r'/√r' with α' = r' where it should be 1
errors = {kind: float((model.up.delta_weight(f"m_{kind}").detach() - target).norm() / target.norm())
          for kind in ("cat", "linear", "svd")}
answer_5 = [kind for kind, e in errors.items() if e < 1e-5]

print("1. cat rank:", answer_1)
print("2. TIES of (τ, τ) is τ:", torch.allclose(answer_2[0], t), "| task arithmetic is 2τ:",
      torch.allclose(answer_2[1], 2 * t))
print(f"3. kept entries × {answer_3:.4f} (1/0.3 = {1 / 0.3:.4f})")
print(f"4. PEFT's ΔW is {answer_4:g}× the source's at r=16 with rsLoRA")
print("5. exact:", answer_5, "| relative errors:", {k: round(v, 4) for k, v in errors.items()})
assert answer_1 == 8
assert torch.allclose(answer_2[0], t) and torch.allclose(answer_2[1], 2 * t)
assert abs(answer_3 - 1 / 0.3) < 1e-6
assert answer_4 == 4.0 and abs(ratio - 2.0) < 1e-5
assert torch.allclose(ours_copy, source, atol=1e-6)
assert answer_5 == ["cat"] and errors["linear"] > 1e-3 and errors["svd"] > 1e-3
