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
# # Lesson 2 · Counting parameters
#
# How many numbers does a LoRA adapter train? One formula answers it, and then three details decide
# whether the number you print is right: the true shape of the layer, what goes in the denominator,
# and which biases train. We derive each by hand, then check it against `lc.count_lora_parameters`
# and against PEFT's own count.
#
# All models here are built on PyTorch's **meta device**: tensors with shapes but no data. Counting
# needs only shapes, so even a 7-billion-parameter model is counted in a moment with no memory.

# %%
import lora_core as lc
from lora_core import viz
from lora_core.teach import anatomy, peft_reference
from lora_core.teach.lesson import setup

# Every lesson starts here: print the versions and the device, stay offline (HF_HUB_OFFLINE=1 unless
# you set it), and read LORA_FAST=1 into FAST (CI: fewer steps, the same pictures and checks).
FAST = setup("counting needs no device: shapes only")

# %% [markdown]
# ## 1. One layer: r · (in + out)
#
# A layer maps `in` features to `out`. LoRA adds $A$ with shape (r, in) and $B$ with shape (out, r):
#
# $$\#\text{LoRA} = r \cdot \text{in} + \text{out} \cdot r = r\,(\text{in} + \text{out}).$$
#
# For a square 768 × 768 matrix at r = 8 that is 8 · 1536 = 12,288 trainable numbers next to
# 589,824 frozen ones: about 2 %. The chart draws the three matrices to scale (log axis).

# %%
def lora_count(n_in: int, n_out: int, r: int) -> int:
    return r * (n_in + n_out)


square = lora_count(768, 768, 8)
print(f"768×768 at r=8: {square:,} trainable vs {768 * 768:,} frozen = {square / (768 * 768):.2%}")
assert square == 12_288
viz.weight_vs_adapter(768, 768, r=8).show()

# %% [markdown]
# ## 2. distilgpt2's `c_attn` is not square
#
# A common claim: LoRA with r = 8 on distilgpt2's `c_attn` trains about **98,304** parameters
# (0.12 % of 82 M). PEFT prints **147,456**. Which is right?
#
# Look at the layer before counting. GPT-2 computes the query, key and value projections with *one*
# layer, `c_attn`, whose output is the three stacked: 768 → 3 · 768 = 2304. (Its weight is stored
# (in, out), which lesson 3 explains.)

# %%
meta = lc.build_on_meta("distilgpt2")
c_attn = meta.transformer.h[0].attn.c_attn
n_layers = meta.config.n_layer
print(type(c_attn).__name__, "weight shape", tuple(c_attn.weight.shape), "| layers:", n_layers)

per_layer = lora_count(768, 2304, 8)
by_hand = n_layers * per_layer
print(f"by hand: {n_layers} layers × 8·(768+2304) = {n_layers} × {per_layer:,} = {by_hand:,}")

cfg = lc.LoraConfig(r=8, lora_alpha=16, target_modules=["c_attn"])
ledger = lc.count_lora_parameters("distilgpt2", cfg)
peft_trainable, peft_total = peft_reference.peft_reference_count("distilgpt2", cfg)   # PEFT, on the same meta model
print(ledger)
print("PEFT:     ", lc.peft_line(peft_trainable, peft_total))
assert by_hand == ledger.trainable == peft_trainable == 147_456
viz.ledger_bars(ledger).show()

# %% [markdown]
# So where could 98,304 come from? It is exactly $4 \times 24{,}576$: the adapter on four `c_attn`
# layers, while distilgpt2 has six. (It is also $8 \times 12{,}288$, the count for eight *square*
# 768 × 768 matrices; distilgpt2's only square attention matrices are its six `attn.c_proj`.) Neither
# reading matches the setting the number is quoted for.
# `anatomy.explain_claimed_count` does this bookkeeping and re-counts the setting that does give
# the claim (only the first four layers).

# %%
claim = anatomy.explain_claimed_count("distilgpt2", cfg, claimed=98_304)
print({k: claim[k] for k in ("claimed", "trainable", "per_module", "modules", "implied_modules",
                             "reproduced_with_first_layers", "ratio")})
assert claim["implied_modules"] == 4 and claim["reproduced_with_first_layers"] == 98_304
assert claim["trainable"] == by_hand and claim["ratio"] == 1.5

# %% [markdown]
# ## 3. The denominator: 82,060,032
#
# PEFT's `trainable%` divides by *all* parameters of the adapted model. Two things decide that number:
#
# * **The adapter counts.** After injection the model holds the frozen base *and* the new factors.
# * **A tied weight counts once.** GPT-2's output layer `lm_head` reuses the token-embedding matrix
#   `wte` (50257 × 768). `model.parameters()` yields that tensor once; a `state_dict()` lists it under
#   both names, and summing it counts 38.6 M numbers twice.

# %%
unique = sum(p.numel() for p in meta.parameters())                    # each tensor once
listed = sum(t.numel() for t in meta.state_dict().values())           # wte and lm_head both listed
tied = meta.lm_head.weight is meta.transformer.wte.weight
print(f"lm_head tied to wte: {tied}")
print(f"unique parameters {unique:,};  summed over the state_dict {listed:,} (+{listed - unique:,} = 50257·768)")
print(f"with the adapter: {unique:,} + {by_hand:,} = {unique + by_hand:,}")
print(f"trainable% = {by_hand:,} / {unique + by_hand:,} = {100 * by_hand / (unique + by_hand):.4f} %")
assert tied and listed - unique == 50257 * 768
assert unique == ledger.base_total and unique + by_hand == ledger.total == peft_total == 82_060_032

# %% [markdown]
# ## 4. Bias modes
#
# `bias` decides which of the *existing* biases also train (the total never changes, they were already
# counted):
#
# * `"none"`: no bias trains (the default);
# * `"lora_only"`: the biases of the wrapped layers, here the 2304-wide `c_attn.bias` in each block;
# * `"all"`: every bias in the model, LayerNorm biases included.
#
# Count them by name, by hand, then compare with the ledgers and with PEFT.

# %%
import dataclasses

biases = {n: p.numel() for n, p in meta.named_parameters() if n.endswith(".bias")}
by_hand_extra = {"none": 0,
                 "lora_only": sum(v for n, v in biases.items() if n.endswith("attn.c_attn.bias")),
                 "all": sum(biases.values())}
rows = anatomy.bias_mode_ledgers("distilgpt2", cfg)
for row in rows:
    peft_count = peft_reference.peft_reference_count("distilgpt2", dataclasses.replace(cfg, bias=row["bias"]))
    print(f"bias={row['bias']!r:<12} extra {row['extra trainable']:>7,}  trainable {row['trainable']:>8,}  "
          f"PEFT {peft_count[0]:>8,}  all params {row['all params']:,}")
    assert row["extra trainable"] == by_hand_extra[row["bias"]]
    assert (row["trainable"], row["all params"]) == peft_count
assert by_hand_extra == {"none": 0, "lora_only": 6 * 2304, "all": 51_456}

# %% [markdown]
# ## 5. A 7B model, no weights needed
#
# Llama-2-7b has 32 layers with 4096 × 4096 query and value projections. With r = 64 on `q_proj` and
# `v_proj`: 2 matrices × 32 layers × 64 · (4096 + 4096) = 33,554,432. The meta device builds the whole
# model from its config (shipped in `lora_core/model_configs/`) without allocating the 13.5 GB its fp16 weights take.

# %%
import time

cfg_7b = lc.LoraConfig(r=64, lora_alpha=16, target_modules=["q_proj", "v_proj"])
t0 = time.perf_counter()
ledger_7b = lc.count_lora_parameters("Llama-2-7b", cfg_7b)
seconds = time.perf_counter() - t0
print(ledger_7b)
print(f"counted in {seconds:.2f} s")
assert ledger_7b.trainable == 2 * 32 * lora_count(4096, 4096, 64) == 33_554_432
assert (ledger_7b.trainable, ledger_7b.total) == peft_reference.peft_reference_count("Llama-2-7b", cfg_7b)

# %% [markdown]
# The count is linear in r, so one picture shows every rank for the usual target sets.

# %%
sets = anatomy.standard_target_sets("gpt2")
points = anatomy.rank_sweep("distilgpt2", {k: lc.LoraConfig(r=8, target_modules=v) for k, v in sets.items()},
                               ranks=[1, 2, 4, 8, 16, 32, 64])
viz.rank_sweep_chart(points, highlight="PEFT default ['c_attn']").show()

# %% [markdown]
# ## Check yourself
#
# 1. GPT-2 small has 12 layers of the same width as distilgpt2. How many parameters does r = 8 on
#    `c_attn` train?
# 2. On distilgpt2, `bias="lora_only"` with targets `c_attn`: how many extra parameters train?
# 3. Llama-2-7b, r = 8 on `q_proj` and `v_proj`: what is the count, and what fraction of the r = 64 count?
#
# The cell below computes the answers.

# %%
answer_1 = lc.count_lora_parameters("gpt2", cfg).trainable
print(f"1. {answer_1:,} = 12 × 8·(768+2304)")
assert answer_1 == 12 * lora_count(768, 2304, 8) == 294_912

answer_2 = lc.count_lora_parameters("distilgpt2", lc.LoraConfig(r=8, target_modules=["c_attn"], bias="lora_only"))
print(f"2. {answer_2.other_trainable:,} = 6 × 2304 (one c_attn bias per layer)")
assert answer_2.other_trainable == 13_824

answer_3 = lc.count_lora_parameters("Llama-2-7b", lc.LoraConfig(r=8, target_modules=["q_proj", "v_proj"])).trainable
print(f"3. {answer_3:,}, which is 8/64 = {answer_3 / ledger_7b.trainable:g} of the r=64 count (linear in r)")
assert answer_3 == 4_194_304 and answer_3 * 8 == ledger_7b.trainable
