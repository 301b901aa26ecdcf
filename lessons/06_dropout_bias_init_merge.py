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
# # Lesson 6 · Dropout, init, merging and bias: the knobs around the adapter
#
# Lessons 1–5 built the LoRA layer $h = Wx + b + \tfrac{\alpha}{r} B A x$ and measured its size and
# scale. A LoRA config has more knobs than r and α, and each one is often misdescribed:
#
# | knob | what people say | what we will measure |
# |---|---|---|
# | `lora_dropout` | "zeroes 10% of A and B" | which tensor gets the zeros |
# | `init_lora_weights` | "A Gaussian, B zero" | paper vs code; five of PEFT's inits at step 0; the residual W |
# | merging | "free at inference" | max \|Δlogit\| merged vs unmerged, with a **non-zero** B |
# | `disable_lora` | – | the base model back, adapter kept; merged or not afterwards, in lora_core and in PEFT |
# | `bias` | – | how many extra parameters each mode trains |
#
# Each section does it by hand first, then shows that `lora_core` (and PEFT where it helps) agrees.

# %%
import copy
import dataclasses
import inspect
import time
import typing
import warnings

import pandas as pd
import peft
import torch
import torch.nn as nn
from IPython.display import display

import lora_core as lc
from lora_core import viz
from lora_core.teach import anatomy, peft_reference
from lora_core.teach.lesson import setup

warnings.filterwarnings("ignore", message=".*fan_in_fan_out.*")
warnings.filterwarnings("ignore", category=FutureWarning)  # deprecation notices from inside transformers

# Every lesson starts here: print the versions and the device, stay offline (HF_HUB_OFFLINE=1 unless
# you set it), and read LORA_FAST=1 into FAST (CI: fewer repeats, the same pictures and checks).
FAST = setup("this lesson runs on the CPU")

# %% [markdown]
# ## 1. Where does `lora_dropout` act?
#
# PEFT's forward is `base_layer(x) + lora_B(lora_A(lora_dropout(x))) * scaling`. Dropout is applied to
# the **input of the LoRA branch**. It does not touch the weights A and B, and it does not touch the frozen
# path `base_layer(x)`.
#
# We don't have to take that on trust. A *forward pre-hook* runs just before a module's forward and sees
# its input. We hook the frozen `base_layer` and `lora_A`, run one forward in train mode, and count exact
# zeros. `init_lora_weights=False` makes B non-zero, so the branch really contributes to the output.

# %%
P = 0.25
torch.manual_seed(0)
layer = lc.LoraLinear(nn.Linear(32, 32), lc.LoraConfig(r=4, lora_alpha=8, lora_dropout=P, init_lora_weights=False))
seen = {}
hooks = [layer.base_layer.register_forward_pre_hook(lambda m, a: seen.update(frozen_in=a[0].detach().clone())),
         layer.lora_A["default"].register_forward_pre_hook(lambda m, a: seen.update(branch_in=a[0].detach().clone()))]
A_before, B_before = layer.adapter().A.detach().clone(), layer.adapter().B.detach().clone()

x = torch.randn(512, 32)  # 512 tokens of width 32
layer.train()
with torch.no_grad():
    out_train = layer(x)


def zero_share(t: torch.Tensor) -> float:
    return (t == 0).float().mean().item()


kept = seen["branch_in"] != 0
report = {
    "x": zero_share(x),
    "input of the frozen W": zero_share(seen["frozen_in"]),
    "input of lora_A = dropout(x)": zero_share(seen["branch_in"]),
    "A": zero_share(layer.adapter().A),
    "B": zero_share(layer.adapter().B),
}
for name, share in report.items():
    print(f"zeros in {name:30s} {share:6.1%}")
scale_kept = (seen["branch_in"][kept] / x[kept]).mean().item()
print(f"surviving entries of x are multiplied by {scale_kept:.4f} = 1/(1-p) = {1 / (1 - P):.4f}")

# %% [markdown]
# About a quarter of the branch's input is zero (p = 0.25), and nothing else is. The survivors are scaled
# by 1/(1−p) ("inverted dropout"), so the branch's expected output is unchanged.
#
# To close the loop, rebuild the layer's output by hand from the dropped input the hook saw, then switch
# to eval mode, where dropout must do nothing at all:

# %%
with torch.no_grad():
    lora_A, lora_B, scaling = layer.lora_A["default"], layer.lora_B["default"], layer.scaling["default"]
    by_hand = layer.base_layer(x) + lora_B(lora_A(seen["branch_in"])) * scaling
    print("train mode: max |layer(x) − by hand| =", (out_train - by_hand).abs().max().item())
    layer.eval()
    layer(x)
    print("eval mode: lora_A sees exactly x:", torch.equal(seen["branch_in"], x))
for h in hooks:
    h.remove()

assert torch.equal(seen["frozen_in"], x) and report["A"] == 0 and report["B"] == 0
assert abs(report["input of lora_A = dropout(x)"] - P) < 0.05 and abs(scale_kept - 1 / (1 - P)) < 1e-5
assert torch.allclose(out_train, by_hand, atol=1e-6)
assert torch.equal(layer.adapter().A, A_before) and torch.equal(layer.adapter().B, B_before)

# %% [markdown]
# `anatomy.trace_dropout` is the same experiment packaged for the app. Its numbers agree, and
# `viz.dropout_masks` draws a corner of each tensor with its exact zeros in red:

# %%
trace = anatomy.trace_dropout(p=P)
print({k: round(trace[k], 4) for k in ("p", "branch_input_zero_fraction", "base_input_zero_fraction",
                                      "A_zero_fraction", "B_zero_fraction", "kept_scale")})
assert trace["A_zero_fraction"] == trace["B_zero_fraction"] == 0 and trace["base_input_is_x"]
assert abs(trace["branch_input_zero_fraction"] - P) < 0.05 and not (trace["A_changed"] or trace["B_changed"])
viz.dropout_masks(trace).show()

# %% [markdown]
# **PEFT does the same.** Put the same hooks on a PEFT layer. Its `lora_A` and `lora_dropout` are
# dictionaries keyed by adapter name, here `"default"`, as `lora_core`'s are.


# %%
class OneLayer(nn.Module):
    """The smallest model PEFT can wrap: one layer called `proj`."""

    def __init__(self, proj: nn.Module):
        super().__init__()
        self.proj = proj

    def forward(self, x):
        return self.proj(x)


torch.manual_seed(0)
peft_config = peft.LoraConfig(r=4, lora_alpha=8, lora_dropout=P, target_modules=["proj"], init_lora_weights=False)
peft_model = peft.get_peft_model(OneLayer(nn.Linear(32, 32)), peft_config)
peft_layer = peft_model.base_model.model.proj
print(type(peft_layer).__name__, "| its dropout module:", peft_layer.lora_dropout["default"])
seen.clear()
hooks = [peft_layer.base_layer.register_forward_pre_hook(lambda m, a: seen.update(frozen_in=a[0].detach())),
         peft_layer.lora_A["default"].register_forward_pre_hook(lambda m, a: seen.update(branch_in=a[0].detach()))]
peft_model.train()
with torch.no_grad():
    peft_model(x)
for h in hooks:
    h.remove()
print(f"PEFT: zeros in the frozen path's input {zero_share(seen['frozen_in']):.1%}, "
      f"in lora_A's input {zero_share(seen['branch_in']):.1%}, "
      f"in A {zero_share(peft_layer.lora_A['default'].weight):.1%}")
assert torch.equal(seen["frozen_in"], x) and abs(zero_share(seen["branch_in"]) - P) < 0.05

# %% [markdown]
# Why drop the *input* and not A or B? Dropping entries of x is ordinary dropout on the branch's
# activations: the branch trains with a different random sub-network at every step. Zeroing entries of A
# or B would be a different regulariser (DropConnect), and neither PEFT nor the LoRA paper does it.
# (Seed 003 describes this correctly; seed 000 says the zeros land in A and B. They don't.)
#
# ## 2. How to start: `init_lora_weights`
#
# **"A Gaussian, B zero"** is what the LoRA paper's text says (section 4.1: "a random Gaussian
# initialization for A and zero for B"). Its reference code does something else: loralib's
# `reset_parameters` draws A with `nn.init.kaiming_uniform_(lora_A, a=math.sqrt(5))`, nn.Linear's own
# default, a *uniform* distribution on $\pm 1/\sqrt{\text{in}}$. PEFT's default (`True`) follows that code,
# and so does `lora_core`. Both halves of the claim are checked live: B is zero, and A is bounded by
# $1/\sqrt{\text{in}}$ with the spread of a uniform (std = bound/√3), not a Gaussian.

# %%
IN = 256
torch.manual_seed(0)
ours_A = lc.LoraLinear(nn.Linear(IN, 64), lc.LoraConfig(r=16)).lora_A["default"].weight.detach()
peft_A = peft.get_peft_model(OneLayer(nn.Linear(IN, 64)), peft.LoraConfig(r=16, target_modules=["proj"])
                             ).base_model.model.proj.lora_A["default"].weight.detach()
bound = 1 / IN ** 0.5                                   # kaiming_uniform_(a=√5): gain √(2/6), bound gain·√(3/in)
for label, A0 in (("lora_core", ours_A), ("PEFT", peft_A)):
    print(f"{label:9s} A: max |a| = {A0.abs().max().item():.4f} (bound 1/√{IN} = {bound:.4f}), "
          f"std {A0.std().item():.4f} (uniform: bound/√3 = {bound / 3 ** 0.5:.4f})")
    assert A0.abs().max() <= bound and abs(A0.std().item() - bound / 3 ** 0.5) < 0.05 * bound
print("PEFT's init for True, read from its source:")
print("    " + next(line.strip() for line in inspect.getsource(peft.tuners.lora.layer.LoraLayer.reset_lora_parameters)
                    .splitlines() if "kaiming_uniform_" in line))

# %% [markdown]
# PEFT 0.21 offers more starts than that. Its `LoraConfig` lists every value `init_lora_weights` takes:

# %%
init_type = typing.get_type_hints(peft.LoraConfig)["init_lora_weights"]
peft_inits = [True, False, *typing.get_args(typing.get_args(init_type)[1])]
print(f"{len(peft_inits)} values in PEFT {peft.__version__}:", peft_inits)
shown = [True, "gaussian", False, "pissa", "olora"]
assert set(shown) < set(peft_inits)
print("shown below:", shown, "| not shown:", [v for v in peft_inits if v not in shown])

# %% [markdown]
# Five of PEFT's options, the ones that need nothing but the weight itself:
#
# | value | A | B | ΔW at step 0 |
# |---|---|---|---|
# | `True` (PEFT's default) | Kaiming-uniform | 0 | 0 |
# | `"gaussian"` | normal, std 1/r | 0 | 0 |
# | `False` | random | random | **not 0**: the model changes before training (only for tests) |
# | `"pissa"` | from the SVD of W | from the SVD of W | not 0, **but W is replaced by a residual** |
# | `"olora"` | R from the QR of W | Q from the QR of W | not 0, and W is replaced by a residual too |
#
# The others: `"pissa_niter_K"` (PiSSA with a fast randomized SVD), `"orthogonal"`
# (orthogonal A and B, W untouched), `"mica"` (B from W's *smallest* singular directions), and the
# data-driven `"eva"` and `"corda"` (from activations of your data) and `"loftq"` (quantizes the base and
# starts the adapter on the quantization error),
# which need a data set or quantization config beside the weight.
#
# **PiSSA** (Meng et al. 2024, [arXiv 2404.02948](https://arxiv.org/abs/2404.02948)) starts the adapter
# on W's most important directions instead of zero. Write $W = U \Sigma V^\top$ and keep the top r
# singular triplets:
#
# $$B = U_r \sqrt{\Sigma_r / s}, \quad A = \sqrt{\Sigma_r / s}\, V_r^\top, \quad
#   W_\text{res} = W - s\,BA, \qquad s = \alpha / r.$$
#
# The frozen weight becomes $W_\text{res}$, so $W_\text{res} + \Delta W = W$ and the model's output does
# not change at step 0. Training then starts on W's strongest directions (largest singular values)
# instead of on random ones.
#
# Let's do it by hand on a real weight: the query projection of SmolLM2's first layer.

# %%
model, tok = lc.load_model("smollm2-135m", device="cpu")
q_proj = model.model.layers[0].self_attn.q_proj
R, ALPHA = 8, 16
s = ALPHA / R

W = q_proj.weight.detach().float()                 # (out, in) = (576, 576)
U, S, Vh = torch.linalg.svd(W, full_matrices=False)
root = torch.sqrt(S[:R] / s)
B_pissa = U[:, :R] * root                          # (out, r)
A_pissa = root[:, None] * Vh[:R]                   # (r, in)
W_res = W - s * B_pissa @ A_pissa                  # (out, r) @ (r, in) -> (out, in)
print("max |W_res + ΔW − W| =", (W_res + s * B_pissa @ A_pissa - W).abs().max().item())
print("top singular values of W    :", [round(v, 3) for v in S[:R + 3].tolist()])
print("top singular values of W_res:", [round(v, 3) for v in torch.linalg.svdvals(W_res)[:3].tolist()],
      f"(= σ_{R + 1}, σ_{R + 2}, σ_{R + 3} of W)")

# %% [markdown]
# The residual keeps every singular value of W except the top r. They now live in $BA$.
#
# `lora_core` and PEFT build the same factors from the same SVD. Where $W_\text{res}$ goes differs. PEFT
# writes it into the base layer's own tensor, so it gets a copy of the layer here. `lora_core` swaps in a
# new tensor, so a base weight shared with the model is left as it was. We give it the model's own tensor
# to show that.

# %%
shared = nn.Linear(q_proj.in_features, q_proj.out_features, bias=False)
shared.weight = q_proj.weight                      # the model's tensor itself, not a copy
ours = lc.LoraLinear(shared, lc.LoraConfig(r=R, lora_alpha=ALPHA, init_lora_weights="pissa"))
theirs = peft.get_peft_model(OneLayer(copy.deepcopy(q_proj)), peft.LoraConfig(
    r=R, lora_alpha=ALPHA, target_modules=["proj"], init_lora_weights="pissa")).base_model.model.proj
for name, mine, lib, peft_t in (("A", A_pissa, ours.lora_A["default"].weight, theirs.lora_A["default"].weight),
                                ("B", B_pissa, ours.lora_B["default"].weight, theirs.lora_B["default"].weight),
                                ("W_res", W_res, ours.base_layer.weight, theirs.base_layer.weight)):
    print(f"{name:6s} by hand vs lora_core: {(mine - lib).abs().max().item():.1e} | "
          f"lora_core vs PEFT: {(lib - peft_t).abs().max().item():.1e}")
    assert torch.allclose(mine, lib, atol=1e-5) and torch.allclose(lib, peft_t, atol=1e-5)
print("the model's own q_proj weight is unchanged:", torch.equal(q_proj.weight, W))
assert torch.equal(q_proj.weight, W)  # lora_core put W_res in a new tensor

# %% [markdown]
# **OLoRA** (Büyükakyüz 2024, [arXiv 2406.01775](https://arxiv.org/abs/2406.01775)) does the same with a
# QR instead of an SVD: $W = QR$, $B = Q_{:, :r}$ (orthonormal columns), $A = R_{:r}$ and
# $W_\text{res} = W - s\,BA$. It is cheaper than an SVD, and the factors are not divided by $s$.
# (PEFT 0.21 takes the QR of the weight *as stored*, so on GPT-2's Conv1D its factors come out
# transposed and c_attn's next forward fails; `lora_core` takes it of W as (out, in).)
#
# Now all five inits side by side on that weight (`anatomy.init_gallery` wraps a fresh copy for each
# mode and measures ‖ΔW‖ and how far the layer's output moves at step 0):

# %%
gallery = anatomy.init_gallery(q_proj, r=R, lora_alpha=ALPHA)
table = pd.DataFrame(gallery["rows"]).set_index("mode")[
    ["A_norm", "B_norm", "delta_norm", "max_abs_output_change", "base_rewritten", "max_abs_reconstruction_error"]]
display(table)
viz.init_gallery_chart(gallery).show()
viz.pissa_spectrum(gallery).show()

rows = {row["mode"]: row for row in gallery["rows"]}
assert rows[True]["delta_norm"] == rows["gaussian"]["delta_norm"] == 0
assert rows[True]["max_abs_output_change"] == 0 and rows[False]["max_abs_output_change"] > 0.1
assert rows["pissa"]["base_rewritten"] and rows["pissa"]["max_abs_reconstruction_error"] < 1e-5
assert rows["pissa"]["max_abs_output_change"] < 1e-4  # the residual absorbs ΔW: no change at step 0
assert rows["olora"]["base_rewritten"] and rows["olora"]["max_abs_output_change"] < 1e-4  # the same for OLoRA
torch.testing.assert_close(torch.tensor(gallery["singular_values"]["W_res (PiSSA)"][:5]), S[R:R + 5],
                           atol=1e-4, rtol=1e-4)

# %% [markdown]
# Read the chart: `True` and `gaussian` start with ΔW = 0 exactly, so step 0 *is* the base model.
# `False` has a large ΔW and moves the output before any training. That is why it exists only for tests.
# `pissa` has the largest ΔW of all, yet its output change is ~0, because W itself was rewritten.
#
# A practical consequence: a PiSSA adapter only makes sense on top of its $W_\text{res}$. Load it on the
# original W and the top-r part is counted twice (PEFT has a conversion step for exactly this).
#
# ## 3. Merging: fold ΔW into W, with a non-zero B
#
# After training you can write $W' = W + s\,BA$ into the layer. It is one matmul again, so inference costs
# exactly what the base model costs. This is the "no extra latency" claim (CLAIMS row 7).
#
# The usual trap when *testing* a merge: right after injection B = 0, so ΔW = 0 and "merged equals
# unmerged" holds even for a broken merge. We give every B random values first, as if it had trained.

# %%
prompts = ["The capital of France is", "User likes cooking videos. I recommend"]
batch = tok(prompts, return_tensors="pt", padding=True)


def logits_of(m: nn.Module) -> torch.Tensor:
    with torch.no_grad():
        return m(**batch).logits  # (batch, tokens, vocab)


base_logits = logits_of(model)
base_count = sum(p.numel() for p in model.parameters())
names = lc.inject_lora(model, lc.LoraConfig(r=R, lora_alpha=ALPHA))  # None: PEFT's default q_proj, v_proj
torch.manual_seed(1)
with torch.no_grad():
    for _, lora in lc.lora_layers(model):
        lora.adapter().B.normal_(std=0.02)  # a B like a trained one: now ΔW ≠ 0
unmerged = logits_of(model)
print(f"{len(names)} layers adapted; the adapter moves the logits by up to "
      f"{(unmerged - base_logits).abs().max().item():.2f}")

name, first = lc.lora_layers(model)[0]
W0 = first.base_layer.weight
B, A = first.adapter().B.detach(), first.adapter().A.detach()
W_merged_by_hand = W0.detach() + first.adapter().scaling * B @ A   # (out, r) @ (r, in) -> (out, in)

lc.merge_lora(model)
merged = logits_of(model)
gap = (merged - unmerged).abs().max().item()
logit_scale = unmerged.abs().max().item()
print(f"{name}: max |merged W (lora_core) − (W + s·B·A by hand)| =",
      (first.base_layer.weight - W_merged_by_hand).abs().max().item())
print(f"max |Δlogit| merged vs unmerged: {gap:.1e}, on logits as large as {logit_scale:.0f}: "
      f"relative {gap / logit_scale:.1e} (fp32 resolves ~{torch.finfo(torch.float32).eps:.0e})")

lc.unmerge_lora(model)
print("unmerge restores the original W bit for bit:", torch.equal(first.base_layer.weight, W0))
assert (unmerged - base_logits).abs().max() > 0.1      # the adapter really does something...
assert gap / logit_scale < 1e-5                         # ...and merging keeps it, to fp32 rounding
assert torch.equal(first.base_layer.weight, W0)

# %% [markdown]
# Why not exactly 0? $Wx + s\,B(Ax)$ and $(W + s\,BA)\,x$ are equal in exact arithmetic, but fp32 rounds
# the two sums in a different order, and 30 layers pass the tiny differences along. A relative gap of
# ~1e-6 is a few units in fp32's last digit: the merge is exact up to rounding.
#
# The merged model is also **faster**: an unmerged layer runs its frozen matmul and then the branch's two
# thin matmuls. One measurement on this machine (timings vary, so we only print them):


# %%
def best_time(m: nn.Module, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        logits_of(m)
        times.append(time.perf_counter() - start)
    return min(times)


REPEATS = 3 if FAST else 10
t_unmerged = best_time(model, REPEATS)
lc.merge_lora(model)
t_merged = best_time(model, REPEATS)
lc.unmerge_lora(model)
print(f"forward, unmerged {1e3 * t_unmerged:.1f} ms, merged {1e3 * t_merged:.1f} ms "
      f"(ratio {t_unmerged / t_merged:.2f}; best of {REPEATS})")

# %% [markdown]
# The gap is small here: two thin branches per layer (q and v) beside a 135M-parameter model. It grows
# with the number of adapted layers and with r. Merging has a cost of its own, though: one merged model serves
# one adapter. Keeping adapters unmerged lets many of them share one frozen base.
#
# ## 4. `disable_lora`: the base model on demand
#
# To compare "with adapter" and "without" you don't need two models. Inside `lc.disable_lora(model)` every
# LoRA layer returns `base_layer(x)` alone, and merged layers are unmerged for the duration. PEFT's
# `with model.disable_adapter():` gives the same outputs inside the block, but the two libraries
# **differ on a merged model**: lora_core merges the layers again on the way out, PEFT unmerges a merged
# layer at its first forward inside the block and leaves it unmerged afterwards. Both are checked below.

# %%
with lc.disable_lora(model):
    disabled = logits_of(model)
print("disabled vs base before injection, max |Δ| =", (disabled - base_logits).abs().max().item())
print("after the block the adapter is back, max |Δ| vs unmerged =", (logits_of(model) - unmerged).abs().max().item())
lc.merge_lora(model)
with lc.disable_lora(model):
    disabled_merged = logits_of(model)
print("disabled while merged vs base, max |Δ| =", (disabled_merged - base_logits).abs().max().item())
assert torch.allclose(disabled, base_logits, atol=1e-6) and torch.allclose(disabled_merged, base_logits, atol=1e-6)
assert all(layer.merged for _, layer in lc.lora_layers(model))  # re-merged on exit

# PEFT, on the one-layer model from section 1: merge, disable for one forward, look at the flag.
torch.manual_seed(0)
peft_one = peft.get_peft_model(OneLayer(nn.Linear(32, 32)), peft.LoraConfig(r=4, target_modules=["proj"],
                                                                             init_lora_weights=False))
peft_one.merge_adapter()
before = peft_one.base_model.model.proj.merged
with peft_one.disable_adapter():
    peft_one(x)
after = peft_one.base_model.model.proj.merged
print(f"PEFT: merged before the block {before}, after it {after} | lora_core: merged after it "
      f"{all(layer.merged for _, layer in lc.lora_layers(model))}")
assert before and not after   # PEFT leaves the layer unmerged; the outputs are the same, the speed is not

# %% [markdown]
# `merge_and_unload` is the final step: merge, then throw the LoRA modules away. What is left is a plain
# `transformers` model with exactly the base model's parameter count.

# %%
plain = lc.merge_and_unload(model)
n_plain = sum(p.numel() for p in plain.parameters())
print(f"LoRA layers left: {len(lc.lora_layers(plain))}; parameters {n_plain:,} (base model: {base_count:,})")
print("logits vs the unmerged adapter, max |Δ| =", (logits_of(plain) - unmerged).abs().max().item())
assert not lc.lora_layers(plain) and n_plain == base_count
assert torch.allclose(logits_of(plain), unmerged, atol=1e-4)

# %% [markdown]
# ## 5. `bias`: which old parameters may train
#
# LoRA freezes every old parameter. The `bias` option makes an exception for biases:
#
# * `"none"` (default): no bias trains;
# * `"lora_only"`: the biases of the layers that got an adapter;
# * `"all"`: every bias in the model, LayerNorm biases included.
#
# Counted by hand on distilgpt2 with r = 8 on `c_attn` (GPT-2 shapes, on the meta device, no weights):

# %%
meta = lc.build_on_meta("distilgpt2")
biases = {n: p.numel() for n, p in meta.named_parameters() if n.endswith(".bias")}
by_hand = {"none": 0,
           "lora_only": sum(v for n, v in biases.items() if n.endswith("attn.c_attn.bias")),
           "all": sum(biases.values())}
print(f"{len(biases)} bias vectors in distilgpt2; extra trainable by hand: {by_hand}")

cfg = lc.LoraConfig(r=8, lora_alpha=16, target_modules=["c_attn"])
bias_rows = anatomy.bias_mode_ledgers("distilgpt2", cfg)
for row in bias_rows:
    peft_counts = peft_reference.peft_reference_count("distilgpt2", dataclasses.replace(cfg, bias=row["bias"]))
    row["PEFT (trainable, all)"] = peft_counts
    assert row["extra trainable"] == by_hand[row["bias"]]
    assert peft_counts == (row["trainable"], row["all params"])
display(pd.DataFrame(bias_rows).set_index("bias"))

smol_rows = anatomy.bias_mode_ledgers("SmolLM2-135M", lc.LoraConfig(r=8, lora_alpha=16))
print("SmolLM2 (Llama architecture), extra trainable per mode:", {r["bias"]: r["extra trainable"] for r in smol_rows})
assert all(r["extra trainable"] == 0 for r in smol_rows)

# %% [markdown]
# On GPT-2, `lora_only` adds 6 × 2,304 = 13,824 parameters. `all` also trains every LayerNorm and MLP bias.
# On Llama-family models (SmolLM2, Llama 2/3, Mistral) the Linear layers have no biases and RMSNorm has
# none either, so the option changes nothing there.
#
# One caution: a trained bias is part of the base layer's own computation. Disabling the adapter leaves it
# trained, so "adapter off" is no longer exactly the original model. (PEFT trains the base's bias tensor
# itself. `lora_core` trains a private copy, so a base shared with other models is never written.)
#
# ## Check yourself
#
# 1. With `lora_dropout=0.1` in train mode, what fraction of A's entries are zero after a forward?
# 2. PiSSA with r = 8 on `q_proj` of layer 0: what is the largest singular value left in $W_\text{res}$,
#    and which singular value of W is it?
# 3. How many LoRA matmuls does a model run per adapted layer after `merge_and_unload`?
# 4. How many parameters does `bias="lora_only"` add to r = 8 on distilgpt2's `c_attn`?
#
# Think first, then run the cell.

# %%
answer_1 = anatomy.trace_dropout(p=0.1)["A_zero_fraction"]
answer_2 = torch.linalg.svdvals(ours.base_layer.weight)[0].item()
answer_3 = len(lc.lora_layers(plain))
answer_4 = next(r["extra trainable"] for r in bias_rows if r["bias"] == "lora_only")
print(f"1. {answer_1:.0%} of A is zero: dropout zeroes the branch's input x, never A or B.")
print(f"2. σ_1(W_res) = {answer_2:.4f} = σ_{R + 1}(W) = {S[R].item():.4f}: the top {R} moved into B·A.")
print(f"3. {answer_3} LoRA layers remain: every adapted layer is one plain matmul again.")
print(f"4. {answer_4:,} = 6 layers × 2,304 c_attn biases.")
assert answer_1 == 0 and abs(answer_2 - S[R].item()) < 1e-3 and answer_3 == 0 and answer_4 == 6 * 2304
