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
# # Lesson 7 · Fine-tuning a real model
#
# Everything so far was measured on frozen weights. Now we train. We take a pretrained language model,
# add LoRA, and teach it the toy task from seed 000, "YouTube recommendations":
#
# > `User likes cooking videos.` → `I recommend 'Pasta Tutorial'`
#
# Then we measure the run honestly, the way you would for a real fine-tune:
#
# * **learn:** training loss, then loss and BLEU on a *held-out* split whose interests never appear in
#   training (so the score measures generalisation, not memory);
# * **forget:** perplexity on a plain-English text that has nothing to do with the task;
# * **ship:** save the adapter in PEFT's format and load it with `PeftModel.from_pretrained`, with the
#   same logits.
#
# Seed 000 reports "BLEU ≈ 0.65 after 5 epochs on 4 examples" (CLAIMS row 6). That claim is unverified,
# so we measure instead.

# %%
import json
import tempfile
import warnings
from pathlib import Path

import pandas as pd
import torch
from IPython.display import display
from peft import PeftModel

import lora_core as lc
from lora_core import training, viz
from lora_core.teach.lesson import setup
from lora_core.training.datasets.make_datasets import TEST_INTERESTS

warnings.filterwarnings("ignore", category=FutureWarning)  # deprecation notices from inside transformers

# Every lesson starts here: print the versions and the device, stay offline (HF_HUB_OFFLINE=1 unless
# you set it), and read LORA_FAST=1 into FAST (CI: fewer steps, the same pictures and checks).
FAST = setup()
STEPS = 16 if FAST else 40
EVAL_EVERY = 4 if FAST else 8

# %% [markdown]
# ## 1. The model and the data
#
# `lc.models.default_model_name()` picks distilgpt2 (seed 000's model) when a copy is available, and otherwise
# SmolLM2-135M-Instruct, which ships with LoRA Lab and loads offline. Everything below works for either.

# %%
MODEL = lc.models.default_model_name()
print(MODEL, "|", lc.models.source_info(MODEL).detail)
model, tok = lc.load_model(MODEL)

data = training.load_dataset("recommendations")
print(f"{len(data.train)} training pairs, {len(data.test)} held-out pairs on interests never trained on:")
print("  ", ", ".join(TEST_INTERESTS))
assert not any(interest in prompt for prompt, _ in data.train for interest in TEST_INTERESTS)
for prompt, completion in data.train[:3] + data.test[:2]:
    print(f"  {prompt!r:55} -> {completion!r}")

# %% [markdown]
# The model reads `prompt completion<eos>` and learns only the completion: the prompt's labels are
# `-100`, the index PyTorch's cross-entropy skips. The `<eos>` is learned too, which is how the model
# learns to stop. `training.data.encode_pair` does this; here is one example, token by token:

# %%
ids, labels = training.data.encode_pair(tok, *data.train[0], seq_len=64)
display(pd.DataFrame({"token": [tok.decode([i]) for i in ids], "label": labels}).T)
print(f"{sum(label != -100 for label in labels)} of {len(ids)} tokens are learned")

# %% [markdown]
# ## 2. Add LoRA
#
# r = 8, α = 16 (scale α/r = 2), and `target_modules=None`, which means PEFT's default for the
# architecture: `q_proj` and `v_proj` on Llama-family models like SmolLM2, `c_attn` on GPT-2. LoRA's A
# is random, so we seed it, to make the run repeatable. Lesson 10 trains this same configuration with
# PEFT and transformers' `Trainer`.

# %%
LORA = lc.LoraConfig(r=8, lora_alpha=16, target_modules=None, task_type="CAUSAL_LM")
TRAIN = training.TrainConfig(steps=STEPS, lr=2e-3, batch_size=8, seq_len=64, seed=0)
torch.manual_seed(0)
wrapped = lc.inject_lora(model, LORA)
print(f"{len(wrapped)} layers wrapped, e.g. {wrapped[:2]}")
print(lc.peft_line(*lc.trainable_parameters(model)))
trainer = training.Trainer(model, tok, data, TRAIN)
print(f"{STEPS} steps × batch {TRAIN.batch_size} = {STEPS * TRAIN.batch_size / len(data.train):.2f} epochs; "
      f"AdamW, lr {TRAIN.lr:g}, {TRAIN.warmup_steps} warmup step(s), then cosine decay")

# %% [markdown]
# ## 3. Before training
#
# **BLEU** compares each generated completion with its reference by shared word n-grams. We use
# `sacrebleu`'s corpus BLEU on its **0–100 scale**. Some texts write BLEU on a 0–1 scale, where their
# 0.65 would be 65 here. Generation is greedy (deterministic), so the score is repeatable.
# **Perplexity** on general English is exp(mean next-token loss): lower means the text looks more
# familiar to the model.

# %%
general = training.general_english()
before = trainer.evaluate("test", bleu=True)
before["perplexity"] = trainer.perplexity(general)
print(f"held-out loss {before['loss']:.3f} nats/token | held-out BLEU {before['bleu']:.2f} (0–100) | "
      f"general-English perplexity {before['perplexity']:.2f}")

# %% [markdown]
# ## 4. Train
#
# `Trainer.run(n, callback)` takes n optimizer steps and calls `callback(metrics)` after each.
# Our callback records the training loss and, every few steps, the held-out loss.

# %%
heldout = [(0, before["loss"])]


def on_step(metrics: dict) -> None:
    if metrics["step"] % EVAL_EVERY == 0 or metrics["step"] == STEPS:
        heldout.append((metrics["step"], trainer.evaluate("test")["loss"]))
        print(f"step {metrics['step']:3d}  train loss {metrics['loss']:.3f}  held-out loss {heldout[-1][1]:.3f}  "
              f"lr {metrics['lr']:.1e}  mean ‖ΔW‖ {metrics['delta_norm']:.3f}")


history = trainer.run(STEPS, callback=on_step)
losses = [m["loss"] for m in history]
seconds = sum(m["seconds"] for m in history)
print(f"{STEPS} steps in {seconds:.1f} s ({seconds / STEPS:.2f} s/step on this machine)")

fig = viz.curves({"training loss (one batch of 8)": losses}, "Learning the recommendation format",
                 "loss (nats per completion token)")
fig.add_scatter(x=[s for s, _ in heldout], y=[v for _, v in heldout], mode="lines+markers",
                name="held-out loss (unseen interests)")
fig.show()

# %% [markdown]
# The training loss is noisy because each point is one batch of 8. The held-out curve uses the whole
# held-out split, so it is smooth. Most of the drop comes in the first steps, while the model learns the
# *format* ("I recommend '…'" and then stop). The titles are harder: the held-out interests are new, so
# the model can only guess plausible ones.
#
# ## 5. After training: learn vs forget

# %%
after = trainer.evaluate("test", bleu=True)
after["perplexity"] = trainer.perplexity(general)
summary = pd.DataFrame({
    "before": [before["loss"], before["bleu"], before["perplexity"]],
    "after": [after["loss"], after["bleu"], after["perplexity"]],
}, index=["held-out loss (nats/token)", "held-out BLEU (0–100)", "general-English perplexity"])
display(summary.round(3))

# %%
picks = range(0, len(data.test), len(data.test) // 4)
display(pd.DataFrame([{"prompt": before["prompts"][i], "reference": before["references"][i],
                       "before": before["predictions"][i], "after": after["predictions"][i]} for i in picks]))

# %% [markdown]
# Read the table:
#
# * **Learn.** Held-out loss and BLEU move a lot. Before training the model rambles. After training it
#   answers in the task's format, even for interests it never saw. BLEU stays far from 100 because the
#   titles are invented: a sensible title that isn't the reference scores almost nothing beyond
#   "I recommend".
# * **Forget.** General-English perplexity rises too. The adapter saw nothing but one narrow format, at a
#   high learning rate, and the model's ordinary English got a little worse. Lower learning rates, fewer
#   steps and mixing general text into the training data are the usual remedies. Whatever you choose,
#   measure this number for your own fine-tune; the training loss will never show it to you.
#
# ## 6. Seed 000's setup: 4 examples, 5 epochs
#
# Seed 000 trained on 4 examples for 5 epochs and reports BLEU ≈ 0.65. Let's rebuild that: 4 pairs from 4
# different interests, batch 4 (so one step is one epoch), a fresh adapter, 20 epochs. We score after 5
# epochs and after 20, on the **4 training prompts** and on the **held-out** prompts.

# %%
four = training.Dataset("seed-000", train=[data.train[i] for i in (0, 55, 110, 165)], test=data.test)
for prompt, completion in four.train:
    print(f"  {prompt!r:55} -> {completion!r}")
small, _ = lc.load_model(MODEL)
torch.manual_seed(0)
lc.inject_lora(small, LORA)
EPOCHS = 20
small_trainer = training.Trainer(small, tok, four,
                                 training.TrainConfig(steps=EPOCHS, lr=2e-3, batch_size=4, seq_len=64, seed=0))
scores = {}


def score_epoch(metrics: dict) -> None:
    if metrics["step"] in (5, EPOCHS):
        scores[metrics["step"]] = {"train loss": metrics["loss"],
                                   "BLEU, the 4 training prompts": small_trainer.evaluate("train", bleu=True)["bleu"],
                                   "BLEU, held-out prompts": small_trainer.evaluate("test", bleu=True)["bleu"]}


small_trainer.run(EPOCHS, callback=score_epoch)
display(pd.DataFrame(scores).T.rename_axis("epochs").round(2))
print("after 20 epochs, on the training prompts:", small_trainer.generate([p for p, _ in four.train]))

# %% [markdown]
# After 20 epochs the model reproduces its 4 training completions word for word (BLEU 100 on them), while
# its held-out BLEU stays in single digits, about where the 220-example run above ended. A BLEU computed on the
# training examples measures **memorisation**, and with 4 examples little else can be learned. So seed
# 000's "0.65" can't be checked as stated: it names no held-out set, and it doesn't say its scale (on a 0–1
# scale it would be 65 here). The number worth reporting is the held-out one.
#
# ## 7. Ship it: a PEFT adapter file
#
# `lc.save_adapter` writes the two files PEFT expects. We load them with PEFT onto a fresh copy of the
# base model, not ours, and compare logits and greedy generations.

# %%
workdir = tempfile.TemporaryDirectory(prefix="lesson07-")  # removed when the kernel shuts down
out_dir = Path(workdir.name) / "recommendations-adapter"
lc.save_adapter(model, out_dir)
print({p.name: f"{p.stat().st_size:,} bytes" for p in sorted(out_dir.iterdir())})
config = json.loads((out_dir / "adapter_config.json").read_text())
print({k: config[k] for k in ("peft_type", "task_type", "r", "lora_alpha", "target_modules")})

fresh, _ = lc.load_model(MODEL)
peft_model = PeftModel.from_pretrained(fresh, out_dir).eval()
prompts = [p for p, _ in data.test[:6]]
batch = tok(prompts, return_tensors="pt", padding=True).to(next(model.parameters()).device)
with torch.no_grad():
    ours_logits, peft_logits = model(**batch).logits, peft_model(**batch).logits
gap = (ours_logits - peft_logits).abs().max().item()
print(f"{type(peft_model).__name__}: max |logit ours − PEFT| = {gap:.1e}")
peft_text = training.generate(peft_model, tok, prompts)
print("greedy generations identical:", peft_text == after["predictions"][:6])
assert gap < 1e-4 and peft_text == after["predictions"][:6]

# %% [markdown]
# The adapter file holds only A and B for the wrapped layers: a few MB next to a base model of a few
# hundred MB. Anyone with the same base model can load it with PEFT, and they get the same model.
#
# ## Check yourself
#
# 1. How many parameters did we train, and what share of the model is that?
# 2. Did the loss fall: on the training batches, and on held-out interests?
# 3. Seed 000 quotes BLEU ≈ 0.65 after 5 epochs on 4 examples. In that setup, what did we measure on the
#    4 training prompts and on held-out prompts, after 5 and after 20 epochs?
# 4. Which moved more in relative terms: the held-out loss (learn) or general-English perplexity (forget)?

# %%
trainable, total = lc.trainable_parameters(model)
answer_2 = (losses[0], sum(losses[-3:]) / 3, before["loss"], after["loss"])
print(f"1. {trainable:,} of {total:,} parameters ({100 * trainable / total:.2f}%): only A and B train.")
print(f"2. training loss {answer_2[0]:.2f} → {answer_2[1]:.2f} (mean of the last 3 steps); "
      f"held-out loss {answer_2[2]:.2f} → {answer_2[3]:.2f}.")
answer_3 = {e: (round(v["BLEU, the 4 training prompts"], 1), round(v["BLEU, held-out prompts"], 1))
            for e, v in scores.items()}
print(f"3. (training prompts, held-out) BLEU on 0–100, by epochs: {answer_3}. "
      "Memorised, not generalised; a 0–1 scale would write 100 as 1.0.")
learn = 1 - after["loss"] / before["loss"]
forget = after["perplexity"] / before["perplexity"] - 1
print(f"4. held-out loss fell {learn:.0%}; general-English perplexity changed by {forget:+.0%}.")
assert trainable == sum(LORA.r * (layer.in_features + layer.out_features) for _, layer in lc.lora_layers(model))
assert answer_2[1] < answer_2[0] and answer_2[3] < answer_2[2]
assert after["bleu"] > before["bleu"]
assert answer_3[EPOCHS][0] > 90 and answer_3[EPOCHS][1] < 20  # 4 examples: memorised, not generalised
