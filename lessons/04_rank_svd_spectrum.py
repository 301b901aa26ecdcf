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
# # Lesson 4 · Rank, the SVD and the spectrum of ΔW
#
# LoRA restricts the update to rank $r$: $\Delta W = s\,BA$ passes through an $r$-wide bottleneck.
# Why is that a reasonable bet, and how do we look inside a trained $\Delta W$? The tool for both
# is the singular value decomposition (SVD):
#
# $$W = U \Sigma V^\top = \sum_i \sigma_i\, u_i v_i^\top, \qquad \sigma_1 \ge \sigma_2 \ge \dots \ge 0.$$
#
# Any matrix is a sum of rank-one pieces, sorted by size. This lesson keeps the top pieces of a
# picture and of a real SmolLM2 weight, reads $\Delta W$'s spectrum straight from the factors, and
# asks with the LoRA paper's §7 whether adapters of rank 8 and 64 learn the same directions (on a toy
# whose low-rank target we plant).

# %%
import torch
from IPython.display import Markdown, display

import lora_core as lc
from lora_core import viz
from lora_core.teach import low_rank, toy
from lora_core.teach.lesson import setup

# Every lesson starts here: print the versions and the device, stay offline (HF_HUB_OFFLINE=1 unless
# you set it), and read LORA_FAST=1 into FAST (CI: fewer steps, the same pictures and checks).
FAST = setup("this lesson runs on the CPU")

# %% [markdown]
# ## 1. Keep the top k pieces (Eckart–Young)
#
# Truncating the sum after $k$ terms gives $W_k = U_k \Sigma_k V_k^\top$. The Eckart–Young theorem says
# no rank-$k$ matrix is closer to $W$ in Frobenius norm, and the error is exactly what was dropped:
#
# $$\lVert W - W_k \rVert_F^2 = \sum_{i > k} \sigma_i^2 .$$
#
# We do it by hand on a small grey picture, check it against `lc.spectrum.low_rank_approximation`, and let
# 200 random rank-$k$ competitors try to beat it (each is the best matrix within a random
# $k$-dimensional column space, $QQ^\top W$).

# %%
img = lc.spectrum.demo_image()                                   # (96, 160), values in [0, 1]
k = 8
U, S, Vh = torch.linalg.svd(img, full_matrices=False)   # (96, 96), (96,), (96, 160)
img_k = (U[:, :k] * S[:k]) @ Vh[:k]                      # (96, k) @ (k, 160) -> (96, 160)

error = float((img - img_k).norm() ** 2)
dropped = float(S[k:].square().sum())
gen = torch.Generator().manual_seed(0)
random_errors = []
for _ in range(200):
    Q, _ = torch.linalg.qr(torch.randn(img.shape[0], k, generator=gen))   # a random k-dim column space
    random_errors.append(float((img - Q @ (Q.T @ img)).norm() ** 2))

print(f"‖W − W_k‖² = {error:.4f},  Σ_(i>k) σ_i² = {dropped:.4f}")
print(f"best of 200 random rank-{k} approximations: {min(random_errors):.4f} (the SVD's: {error:.4f})")
torch.testing.assert_close(img_k, lc.spectrum.low_rank_approximation(img, k), rtol=1e-4, atol=1e-5)
assert abs(error - dropped) < 1e-3 * dropped and min(random_errors) > error
viz.image_pair(img, img_k, k).show()

# %% [markdown]
# ### Energy and storage
#
# The **energy** kept by the top $k$ values is $\sum_{i \le k} \sigma_i^2 / \sum_i \sigma_i^2$, the share
# of $\lVert W \rVert_F^2$ that $W_k$ holds. Storing $W_k$ as $U_k \Sigma_k$ and $V_k$ takes
# $k(m + n)$ numbers instead of $mn$: exactly the cost of a rank-$k$ LoRA pair $B$ (m × k), $A$ (k × n).

# %%
energy_by_hand = float(S[:k].square().sum() / S.square().sum())
report = lc.spectrum.rank_k_report(img, k)
print(f"energy kept by the top {k}: {energy_by_hand:.2%}; stored {report['stored']:,} of {report['full']:,} numbers")
assert abs(energy_by_hand - lc.energy_captured(S, k)) < 1e-6 and abs(energy_by_hand - report["energy"]) < 1e-6
assert report["stored"] == k * (96 + 160)
viz.energy_curve(lc.spectrum.energy_profile(S), k, "The picture: energy kept against k").show()

# %% [markdown]
# Much of this picture's energy is its bright background, which is nearly rank one. A more honest
# single number for "how many directions matter" is the **effective rank** (Roy & Vetterli):
# with $p_i = \sigma_i / \sum_j \sigma_j$, it is $\exp(-\sum_i p_i \log p_i)$. It is 1 for a rank-one
# matrix and $n$ when $n$ values are equal.

# %%
def effective_rank_by_hand(sv: torch.Tensor) -> float:
    p = sv[sv > 0].double() / sv.double().sum()
    return float(torch.exp(-(p * p.log()).sum()))


print(f"effective rank of the picture: {effective_rank_by_hand(S):.1f} of {len(S)}")
assert abs(effective_rank_by_hand(S) - lc.effective_rank(S)) < 1e-9
assert abs(effective_rank_by_hand(torch.tensor([3.0, 0, 0])) - 1) < 1e-12
assert abs(effective_rank_by_hand(torch.ones(5)) - 5) < 1e-12

# %% [markdown]
# ## 2. A pretrained weight is *not* low rank
#
# Now a real matrix: SmolLM2-135M-Instruct (pretrained, loaded offline from a local cache). Its
# `mlp.up_proj` (576 → 1536) spreads its energy over hundreds of directions: the top 8 keep only a
# few percent. LoRA does not approximate $W$ with a low-rank matrix, it leaves $W$ whole. Its bet is
# that the *change* $\Delta W$ a new task needs is low rank: the LoRA paper's **intrinsic rank**
# hypothesis. It was inspired by a different measurement: Aghajanyan et al. 2020
# ([arXiv 2012.13255](https://arxiv.org/abs/2012.13255)) found small intrinsic *dimensions* (a random
# subspace of all the weights in which fine-tuning still reaches 90% of full fine-tuning's score), not
# low-rank updates. Section 4 below uses a toy whose target we plant with rank 4, so it can show how LoRA
# recovers a low-rank update, not that real updates have one.

# %%
model, _ = lc.load_model("smollm2-135m", device="cpu")
weights = {name: model.get_submodule(f"model.layers.0.{name}").weight.detach().float()
           for name in ("self_attn.q_proj", "mlp.up_proj")}
spectra = {f"{name} {tuple(w.shape)}": torch.linalg.svdvals(w) for name, w in weights.items()}
for label, sv in spectra.items():
    print(f"{label:<30} effective rank {lc.effective_rank(sv):6.1f} of {len(sv)}; "
          f"top-8 energy {lc.energy_captured(sv, 8):.1%}")
up = spectra["mlp.up_proj (1536, 576)"]
assert lc.energy_captured(up, 8) < 0.10 and lc.effective_rank(up) > 0.5 * len(up)
viz.spectra(spectra, "SmolLM2 layer 0: singular values of two pretrained weights").show()
viz.energy_curve(lc.spectrum.energy_profile(up), 8, "mlp.up_proj: energy kept against k").show()

# %% [markdown]
# ## 3. The spectrum of ΔW, from the factors
#
# $\Delta W = s\,BA$ has rank at most $r$, so at most $r$ singular values are non-zero. We can find
# them without ever forming the (out × in) matrix. Take thin QR decompositions
# $B = Q_B R_B$ and $A^\top = Q_A R_A$ (the $Q$s have orthonormal columns, the $R$s are $r \times r$):
#
# $$\Delta W = s\, Q_B\, (R_B R_A^\top)\, Q_A^\top .$$
#
# Multiplying by matrices with orthonormal columns does not change singular values, so
# $\sigma(\Delta W) = \sigma(s\, R_B R_A^\top)$: an $r \times r$ SVD. We put an adapter with random
# (non-zero) factors on the real `up_proj`, derive the values by hand, and compare with
# `lc.singular_values` and with the full SVD of $\Delta W$.

# %%
import time

r = 16
base = model.get_submodule("model.layers.0.mlp.up_proj")
torch.manual_seed(0)
layer = lc.LoraLinear(base, lc.LoraConfig(r=r, lora_alpha=32, init_lora_weights=False))   # wraps, never copies W
B, A = layer.adapter().B.detach(), layer.adapter().A.detach()                           # (1536, r), (r, 576)


def factor_spectrum_by_hand() -> torch.Tensor:
    _, R_B = torch.linalg.qr(B)                        # (1536, r) -> R_B (r, r)
    _, R_A = torch.linalg.qr(A.T)                      # (576, r)  -> R_A (r, r)
    return torch.linalg.svdvals(R_B @ R_A.T) * layer.adapter().scaling


def full_spectrum() -> torch.Tensor:
    return torch.linalg.svdvals(layer.delta_weight().detach())   # forms the (1536, 576) matrix


def best_time(fn, repeats: int = 5) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


by_hand, full = factor_spectrum_by_hand(), full_spectrum()
t_factors, t_full = best_time(factor_spectrum_by_hand), best_time(full_spectrum)
print(f"max |σ by hand − σ full| = {float((by_hand - full[:r]).abs().max()):.1e}; "
      f"largest σ_(i>r) of the full SVD: {float(full[r:].max()):.1e}")
print(f"from the factors {t_factors * 1e3:.2f} ms, full SVD {t_full * 1e3:.2f} ms: "
      f"{t_full / t_factors:.0f}× faster here (best of 5 runs; printed, never asserted)")
torch.testing.assert_close(by_hand, lc.singular_values(layer), rtol=1e-5, atol=1e-6)
torch.testing.assert_close(by_hand, full[:r], rtol=1e-4, atol=1e-5)
assert lc.spectrum.numerical_rank(full) == r                 # exactly r values are non-zero
viz.spectra({"W = up_proj": up, f"ΔW, r = {r} (random factors)": by_hand}, "W beside ΔW").show()

# %% [markdown]
# ## 4. A planted rank-4 target: do r = 8 and r = 64 learn the same directions?
#
# Section 7 of the LoRA paper trains adapters of rank 8 and 64 and compares the subspaces they use.
# With $U_i$ the top-$i$ right singular vectors of one adapter's $A$ and $U_j$ those of the other's,
#
# $$\varphi(i, j) = \frac{\lVert U_i^\top U_j \rVert_F^2}{\min(i, j)} \in [0, 1]:$$
#
# 1 when one subspace contains the other, 0 when they are orthogonal. Random $i$-dimensional subspaces
# of $\mathbb{R}^{128}$ give about $i/128$.
#
# We train both ranks with Adam on the toy problem of `toy.train_toy`: a frozen 128 × 128 layer must
# learn a hidden update $\Delta W^\*$ that we **plant** with rank 4 and singular values 1, ½, ¼, ⅛.
# (α = 2r for both.) Section 7 of the paper did this on GPT-3's real adapters; here the low rank is ours.

# %%
steps = 150 if FAST else 300
runs = {r_: toy.train_toy(toy.ToyConfig(r=r_, lora_alpha=2 * r_, lr=2e-3, steps=steps)) for r_ in (8, 64)}
A8, A64 = (runs[r_].layer.adapter().A.detach() for r_ in (8, 64))
target = runs[8].target_delta

_, _, Vh8 = torch.linalg.svd(A8, full_matrices=False)        # rows of Vh: right singular vectors
_, _, Vh64 = torch.linalg.svd(A64, full_matrices=False)
i = j = 4
phi_by_hand = float((Vh8[:i] @ Vh64[:j].T).square().sum()) / min(i, j)   # ‖U_iᵀ U_j‖_F² / min(i, j)
phi = lc.subspace_similarity(A8, A64)                                      # (8, 64), every (i, j)
print(f"φ(4, 4) on A: by hand {phi_by_hand:.3f}, lora_core {float(phi[3, 3]):.3f}; "
      f"φ(1, 1) = {float(phi[0, 0]):.3f}; random 4-dim subspaces: ~{4 / 128:.3f}")
assert abs(phi_by_hand - float(phi[3, 3])) < 1e-4
viz.similarity_heatmap(phi, "r=8", "r=64").show()

# %% [markdown]
# The top direction is shared almost perfectly. φ on $A$ fades after a few directions because $A$
# keeps much of its random start in the directions the task does not need. $\Delta W$ itself shows the
# directions actually *used*: its right singular vectors agree much more closely. And both spectra
# match the target's four values; the r = 64 adapter leaves its 60 extra directions near zero.

# %%
deltas = {r_: runs[r_].layer.delta_weight().detach() for r_ in (8, 64)}
phi_delta = lc.subspace_similarity(deltas[8], deltas[64])
sv = {f"r={r_} trained": lc.singular_values(runs[r_].layer) for r_ in (8, 64)}
target_sv = torch.linalg.svdvals(target)
print(f"φ on ΔW: φ(1, 1) = {float(phi_delta[0, 0]):.3f}, φ(4, 4) = {float(phi_delta[3, 3]):.3f}")
print("top 5 σ, target:", [round(float(v), 3) for v in target_sv[:5]])
for label, values in sv.items():
    print(f"top 5 σ, {label}:", [round(float(v), 3) for v in values[:5]])
assert float(phi[0, 0]) > 0.8 and float(phi_delta[0, 0]) > 0.99 and float(phi_delta[3, 3]) > 0.6
torch.testing.assert_close(sv["r=64 trained"][:3], target_sv[:3], rtol=0.05, atol=0.01)
viz.spectra({"target ΔW*": target_sv[:16], **{k_: v[:16] for k_, v in sv.items()}},
            "Spectra after training (top 16)").show()

# %% [markdown]
# What this does and does not show, in the words the Rank/SVD page uses too:

# %%
planted = lc.spectrum.numerical_rank(target_sv)
display(Markdown(low_rank.what_the_toy_shows(planted)))
assert planted == runs[8].config.true_rank == 4 and "planted" in low_rank.what_the_toy_shows(planted)

# %% [markdown]
# ## Check yourself
#
# 1. How many numbers does the rank-8 approximation of a 576 × 576 weight take, and how does that
#    compare with a LoRA pair at r = 8 on the same layer?
# 2. A LoRA layer with r = 4 and random factors wraps `mlp.up_proj`. How many singular values of its
#    ΔW are non-zero?
# 3. What is φ(i, j) for an adapter compared with itself?
#
# The cell below computes the answers.

# %%
q = weights["self_attn.q_proj"]
answer_1 = lc.spectrum.rank_k_report(q, 8)["stored"]
print(f"1. {answer_1:,} numbers = 8·(576+576), the same as r·(in+out) for r = 8")
assert answer_1 == 8 * (576 + 576) == 9_216

torch.manual_seed(1)
small = lc.LoraLinear(base, lc.LoraConfig(r=4, init_lora_weights=False))
answer_2 = lc.spectrum.numerical_rank(torch.linalg.svdvals(small.delta_weight().detach()))
print("2.", answer_2, "non-zero singular values: ΔW = B·A has rank at most r")
assert answer_2 == 4

self_phi = lc.subspace_similarity(A8, A8)
answer_3 = float(self_phi.diagonal().min())
print(f"3. φ(i, i) = {answer_3:.4f} for every i: a subspace contains itself")
assert abs(answer_3 - 1) < 1e-4
