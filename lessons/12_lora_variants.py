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
# # Lesson 12 · LoRA's variants: DoRA, LoRA+, LoRA-FA, OLoRA and PiSSA
#
# Plain LoRA trains B·A·scaling beside a frozen W. Each variant changes one thing, and each is one flag or
# one function in PEFT. This lesson derives what each changes by hand and checks it against `lora_core` and
# PEFT on the same weights:
#
# | variant | what changes | in PEFT | what we check |
# |---|---|---|---|
# | DoRA (arXiv 2402.09353) | W' = magnitude × direction | `use_dora=True` | forward, merge by hand; extra parameters |
# | LoRA+ (arXiv 2402.12354) | B learns λ× faster than A | `create_loraplus_optimizer` | groups and rates |
# | LoRA-FA (arXiv 2308.03303) | A frozen after init | `create_lorafa_optimizer` | A never moves; memory |
# | OLoRA, PiSSA | A, B from W's QR / SVD | `init_lora_weights=` | starts at W; W becomes a residual |

# %%
import copy
import warnings

import torch
import torch.nn as nn
from peft import LoraConfig as PeftLoraConfig
from peft import get_peft_model
from peft.optimizers import create_loraplus_optimizer as peft_loraplus

import lora_core as lc
from lora_core.optimizers import lorafa_activation_savings
from lora_core.teach.lesson import setup

warnings.filterwarnings("ignore", category=FutureWarning)  # deprecation notices from inside transformers

# Every lesson starts here: print the versions and the device, stay offline (HF_HUB_OFFLINE=1 unless
# you set it), and read LORA_FAST=1 into FAST (CI: fewer training steps, the same checks).
FAST = setup("this lesson runs on the CPU")

# %% [markdown]
# ## 1. DoRA: magnitude and direction
#
# DoRA writes the adapted weight as a magnitude m (one number per output feature) times a unit direction:
#
# $$W' = m \cdot \frac{W + \Delta W}{\lVert W + \Delta W \rVert_c}, \qquad \Delta W = B A \cdot \text{scaling}$$
#
# where ‖·‖_c is the norm of each row of W (the weights feeding one output feature; the paper writes W
# transposed and says "column"). At init B = 0, so m = ‖W‖_c and W' = W. Training moves m and the direction
# separately. The norm is **detached** in the backward (paper §4.3): A and B get gradients only through the
# direction's numerator, which saves memory.
#
# By hand, on a Linear 32 → 24 with a trained-looking adapter (non-zero B, m moved off its init):

# %%
with torch.random.fork_rng(devices=[]):
    torch.manual_seed(0)
    base = nn.Sequential(nn.Linear(32, 24), nn.ReLU(), nn.Linear(24, 16))
CFG = dict(r=4, lora_alpha=8, target_modules=["0", "2"], use_dora=True, init_lora_weights=False)
gen = torch.Generator().manual_seed(0)
dora = copy.deepcopy(base)
lc.inject_lora(dora, lc.LoraConfig(**CFG), generator=gen)
layer = dora[0]
with torch.no_grad():
    layer.lora_magnitude_vector["default"].weight.mul_(1.1)  # as if training had moved m

a = layer.adapter()
W, b = layer.base_layer.weight.detach(), layer.base_layer.bias.detach()
m = layer.lora_magnitude_vector["default"].weight.detach()               # (24,)
delta = (a.B @ a.A).detach() * a.scaling                                  # (24, 4) @ (4, 32) -> (24, 32)
W_dora = m[:, None] * (W + delta) / (W + delta).norm(dim=1, keepdim=True)  # (24, 32)

x = torch.randn(8, 32, generator=torch.Generator().manual_seed(1))
by_hand = x @ W_dora.T + b                                                # (8, 32) @ (32, 24) -> (8, 24)
with torch.no_grad():
    ours = layer(x)
print(f"m: {tuple(m.shape)}, ‖W‖_c at init vs m now: {(W.norm(dim=1) * 1.1 - m).abs().max():.1e}")
print(f"DoRA by hand vs lora_core: max |Δ| = {(by_hand - ours).abs().max():.1e}")

# %% [markdown]
# PEFT never builds W'. It adds a correction to the base output, with s = m / ‖W + ΔW‖_c per output feature:
# h = Wx + b + (s − 1)·Wx + s·B A x·scaling. Same numbers, written as LoRA plus an extra term. Our layer,
# PEFT's layer and the hand-built W' agree, unmerged and merged:

# %%
theirs = get_peft_model(copy.deepcopy(base), PeftLoraConfig(**CFG))
theirs.base_model.model.load_state_dict(dora.state_dict())
with torch.no_grad():
    print(f"lora_core vs PEFT, whole model: {(dora(x) - theirs(x)).abs().max():.1e}")
    lc.merge_lora(dora)
    theirs.merge_adapter()
    merged_ours, merged_peft = layer.base_layer.weight, theirs.base_model.model[0].base_layer.weight
    print(f"merged W: ours vs by hand {(merged_ours - W_dora).abs().max():.1e}, ours vs PEFT "
          f"{(merged_ours - merged_peft).abs().max():.1e}")
    lc.unmerge_lora(dora)
    print("unmerged W is the original, bit for bit:", torch.equal(layer.base_layer.weight, W))

plain = copy.deepcopy(base)
lc.inject_lora(plain, lc.LoraConfig(r=4, lora_alpha=8, target_modules=["0", "2"]))
extra = lc.trainable_parameters(dora)[0] - lc.trainable_parameters(plain)[0]
print(f"trainable: LoRA {lc.trainable_parameters(plain)[0]:,}, DoRA {lc.trainable_parameters(dora)[0]:,} "
      f"(+{extra} = 24 + 16 magnitudes) | PEFT counts {theirs.get_nb_trainable_parameters()[0]:,}")

# %% [markdown]
# ### Magnitude against direction
#
# The DoRA paper (Figure 2) measures, per weight matrix, how far training moved the magnitude (ΔM: the mean
# change of ‖W‖_c over the rows) and the direction (ΔD: the mean of 1 − cos between each row and its start).
# Across the layers and checkpoints of a real model, full fine-tuning shows a **negative** slope between them
# (large direction changes come with small magnitude changes), LoRA a **positive** one, and DoRA a negative one
# like full fine-tuning. Within one layer both numbers simply grow as training goes on, so the sign needs many
# layers of a real model; here we define the two numbers by hand and compute them for one layer trained three
# ways on a small regression task.

# %%
def magnitude_direction(W0: torch.Tensor, W1: torch.Tensor) -> tuple[float, float]:
    """(ΔM, ΔD) of W1 against W0, both (out, in): mean |Δ‖row‖| and mean (1 − cos) over rows."""
    dm = (W1.norm(dim=1) - W0.norm(dim=1)).abs().mean()
    dd = (1 - torch.nn.functional.cosine_similarity(W1, W0, dim=1)).mean()
    return float(dm), float(dd)


def effective_weight(model: nn.Module) -> torch.Tensor:
    """The first layer's weight as the model uses it now (merged on a copy, so the model is untouched)."""
    clone = copy.deepcopy(model)
    if isinstance(clone[0], lc.LoraLayer):
        lc.merge_lora(clone)
        return clone[0].base_layer.weight.detach()
    return clone[0].weight.detach()


teacher = torch.randn(24, 32, generator=torch.Generator().manual_seed(5)) * 0.3
X = torch.randn(256, 32, generator=torch.Generator().manual_seed(6))
Y = X @ (base[0].weight.detach() + teacher).T
steps = 40 if FAST else 200
moved = {}
for kind in ("full", "lora", "dora"):
    model = copy.deepcopy(base)[:1]
    if kind != "full":
        lc.inject_lora(model, lc.LoraConfig(r=4, lora_alpha=8, target_modules=["0"], use_dora=kind == "dora"),
                       generator=torch.Generator().manual_seed(0))
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    W0 = effective_weight(model)
    for _ in range(steps):
        loss = ((model(X) - Y) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    moved[kind] = magnitude_direction(W0, effective_weight(model))
    print(f"{kind:5s} final loss {loss.item():.4f} | ΔM {moved[kind][0]:.4f} | ΔD {moved[kind][1]:.4f} "
          f"| ΔM/ΔD {moved[kind][0] / moved[kind][1]:.2f}")

# %% [markdown]
# ## 2. LoRA+: a larger learning rate for B
#
# LoRA+ (Hayou et al. 2024) argues that A and B should not share one learning rate: B's should be λ times
# A's (λ = 16 in the paper's experiments). PEFT builds four parameter groups: A (lr), B (λ·lr), B-shaped
# parameters without weight decay (λ·lr), and embeddings (their own small lr). By hand, then both libraries:

# %%
plain_gpt = copy.deepcopy(base)
lc.inject_lora(plain_gpt, lc.LoraConfig(r=4, lora_alpha=8, target_modules=["0", "2"], init_lora_weights=False),
               generator=torch.Generator().manual_seed(2))
LR, RATIO = 2e-4, 16.0
by_hand_lrs = {name: LR * (RATIO if ".lora_B." in name else 1.0)
               for name, p in plain_gpt.named_parameters() if p.requires_grad}
ours_opt = lc.create_loraplus_optimizer(plain_gpt, torch.optim.AdamW, lr=LR, loraplus_lr_ratio=RATIO)
lr_of = {id(p): group["lr"] for group in ours_opt.param_groups for p in group["params"]}
ours_lrs = {name: lr_of[id(p)] for name, p in plain_gpt.named_parameters() if p.requires_grad}
peft_gpt = get_peft_model(copy.deepcopy(base), PeftLoraConfig(r=4, lora_alpha=8, target_modules=["0", "2"]))
peft_opt = peft_loraplus(peft_gpt, torch.optim.AdamW, lr=LR, loraplus_lr_ratio=RATIO)
for name, lr in by_hand_lrs.items():
    print(f"{name:28s} lr {lr:.1e}")
print("groups (lr, size), ours:", [(g["lr"], len(g["params"])) for g in ours_opt.param_groups])
print("groups (lr, size), PEFT:", [(g["lr"], len(g["params"])) for g in peft_opt.param_groups])
assert ours_lrs == by_hand_lrs

# %% [markdown]
# ## 3. LoRA-FA: freeze A
#
# LoRA-FA (Zhang et al. 2023) trains B only; A keeps its random init. The gradient of A is
# s·(Bᵀ g)ᵀ x, so plain LoRA must keep each adapted layer's input x for the backward; with A frozen, x is not
# needed (B's gradient needs only the r-wide A x). PEFT's optimizer also projects B's gradient through A.
# Three steps: A never moves, B does:

# %%
fa = copy.deepcopy(plain_gpt)
A_before = {n: p.detach().clone() for n, p in fa.named_parameters() if ".lora_A." in n}
B_before = {n: p.detach().clone() for n, p in fa.named_parameters() if ".lora_B." in n}
opt = lc.create_lorafa_optimizer(fa, r=4, lora_alpha=8, lr=1e-2)
for _ in range(3):
    loss = fa(X).pow(2).mean()
    opt.zero_grad()
    loss.backward()
    opt.step()
A_moved = max(float((p - A_before[n]).abs().max()) for n, p in fa.named_parameters() if n in A_before)
B_moved = min(float((p - B_before[n]).abs().max().detach()) for n, p in fa.named_parameters() if n in B_before)
saved = lorafa_activation_savings(batch_size=8, seq_len=512, in_features=576)
print(f"A moved {A_moved:.1e}, every B moved at least {B_moved:.1e}")
print("one SmolLM2 q_proj input (batch 8 × 512 tokens × 576, fp32) that LoRA-FA need not keep:",
      f"{saved / 2**20:.1f} MiB")

# %% [markdown]
# ## 4. OLoRA and PiSSA: start from W itself
#
# Both start A and B from a factorisation of W and subtract what they took, so the layer starts exactly at W:
# PiSSA from W's top-r singular directions (B = U√S, A = √S Vᵀ, divided by the scaling), OLoRA from its QR
# (B = Q[:, :r] with orthonormal columns, A = R[:r]). The default init starts from B = 0 instead. At step 0:

# %%
rows = []
for init in (True, "gaussian", "pissa", "olora"):
    m = copy.deepcopy(base)
    lc.inject_lora(m, lc.LoraConfig(r=4, lora_alpha=8, target_modules=["0"], init_lora_weights=init),
                   generator=torch.Generator().manual_seed(0))
    lyr = m[0]
    W_used = lyr.base_layer.weight.detach() + lyr.delta_weight().detach()  # residual + ΔW
    with torch.no_grad():
        out_diff = float((m(x) - base(x)).abs().max())
    start_error = float((W_used - base[0].weight.detach()).abs().max())
    rows.append((str(init), float(lyr.delta_weight().detach().norm()), start_error, out_diff))
    print(f"{init!s:8s} ‖ΔW‖ = {rows[-1][1]:8.4f} | max |W_res + ΔW − W| = {rows[-1][2]:.1e} | "
          f"max |output − base| = {out_diff:.1e}")
m = copy.deepcopy(base)
lc.inject_lora(m, lc.LoraConfig(r=4, lora_alpha=8, target_modules=["0"], init_lora_weights="olora"))
B_olora = m[0].adapter().B.detach()
print("OLoRA's B has orthonormal columns: BᵀB = I, max error",
      f"{(B_olora.T @ B_olora - torch.eye(4)).abs().max():.1e}")

# %% [markdown]
# ## Check yourself
#
# 1. How many parameters does DoRA add to a Linear 32 → 24 adapter? (and to the whole two-layer model?)
# 2. At init (B = 0), what is DoRA's magnitude m for each output feature?
# 3. With LoRA+ at lr 2e-4 and λ = 16, what is B's learning rate?
# 4. Which inits start the layer exactly at W, and which of them leave ΔW = 0 at step 0?
# 5. Does LoRA-FA ever change A?
#
# The cell below computes each answer and asserts it.

# %%
answer_1 = (int(layer.lora_magnitude_vector["default"].weight.numel()), extra)
fresh = copy.deepcopy(base)
lc.inject_lora(fresh, lc.LoraConfig(r=4, lora_alpha=8, target_modules=["0"], use_dora=True))
answer_2 = torch.allclose(fresh[0].lora_magnitude_vector["default"].weight, base[0].weight.norm(dim=1))
answer_3 = max(g["lr"] for g in ours_opt.param_groups)
answer_4 = ([r[0] for r in rows if r[2] < 1e-5], [r[0] for r in rows if r[1] == 0])
answer_5 = A_moved
print("1.", answer_1, "| 2. m = ‖W‖ per row:", answer_2, f"| 3. {answer_3:.1e}", "| 4.", answer_4, "| 5.", answer_5)
assert answer_1 == (24, 40)
assert answer_2
assert abs(answer_3 - 3.2e-3) < 1e-12
assert answer_4 == (["True", "gaussian", "pissa", "olora"], ["True", "gaussian"])
assert answer_5 == 0.0 and B_moved > 0
assert (by_hand - ours).abs().max() < 1e-5 and (merged_ours - merged_peft).abs().max() < 1e-5
