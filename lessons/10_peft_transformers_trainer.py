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
# # Lesson 10 · The same fine-tune with PEFT and transformers' `Trainer`
#
# In practice most LoRA fine-tunes run on the Hugging Face stack. Seed 002's script is typical: PEFT
# supplies the adapter, and `SFTTrainer` runs the training. The seed says `SFTTrainer` comes "from
# Hugging Face's PEFT library". It doesn't (CLAIMS row 17). `SFTTrainer` belongs to **TRL**, and it is a
# subclass of **transformers' `Trainer`**. TRL adds dataset handling on top (formatting, tokenizing,
# packing, completion-only masking); the training loop, optimizer and scheduler are `Trainer`'s.
#
# So here we use the layer everything stands on: `peft.get_peft_model` plus `transformers.Trainer`. We
# train lesson 7's exact configuration on the same data and compare the loss curves with `lora_core`'s
# `Trainer`, step by step. They come out **close but not identical**. The interesting part is finding
# out why, and then proving it by removing the differences.

# %%
import copy
import tempfile
import warnings

import pandas as pd
import peft
import torch
import transformers
from IPython.display import display
from peft import get_peft_model, get_peft_model_state_dict, set_peft_model_state_dict
from torch.utils.data import DataLoader
from transformers import DataCollatorForLanguageModeling, PrinterCallback, Trainer, TrainingArguments

import lora_core as lc
from lora_core import training, viz
from lora_core.teach.lesson import setup
from lora_core.teach.peft_reference import to_peft_config
from lora_core.training.data import IGNORE_INDEX, collate, encode_pair
from lora_core.training.trainer import lr_at

warnings.filterwarnings("ignore", category=FutureWarning)  # deprecation notices from inside transformers

# Every lesson starts here: print the versions and the device, stay offline (HF_HUB_OFFLINE=1 unless
# you set it), and read LORA_FAST=1 into FAST (CI: fewer steps, the same pictures and checks).
FAST = setup("both trainers run on the CPU here, to compare like with like")
STEPS = 8 if FAST else 40

# %% [markdown]
# ## 1. One configuration, two libraries
#
# Lesson 7's settings: r = 8, α = 16, PEFT's default targets, AdamW at lr 2e-3, batch 8, 64 tokens,
# 10% warmup, seed 0. `to_peft_config` translates our `LoraConfig` into PEFT's, field by field.

# %%
MODEL = lc.models.default_model_name()
base, tok = lc.load_model(MODEL, device="cpu")
data = training.load_dataset("recommendations")
LORA = lc.LoraConfig(r=8, lora_alpha=16, target_modules=None, task_type="CAUSAL_LM")
TRAIN = training.TrainConfig(steps=STEPS, lr=2e-3, batch_size=8, seq_len=64, seed=0)
peft_config = to_peft_config(LORA)
print(MODEL, "|", peft_config.peft_type, "r =", peft_config.r, "alpha =", peft_config.lora_alpha,
      "| targets: None → PEFT's default for", base.config.model_type)
print(f"{STEPS} steps, warmup {TRAIN.warmup_steps}, lr {TRAIN.lr:g}, batch {TRAIN.batch_size}, seed {TRAIN.seed}")

# %% [markdown]
# ## 2. The data: same tokens, same masks
#
# `Trainer` takes any dataset that has `len` and indexing, so a list of dicts will do. We tokenize with
# `training.data.encode_pair`, so the label mask is identical to lesson 7's: `-100` on the prompt, and the
# completion plus its EOS learned. Each example also carries its index, so we can see the order the
# Trainer serves them in.
#
# Why not transformers' stock `DataCollatorForLanguageModeling(tok, mlm=False)`? Look at what it makes
# of the same example:

# %%
train_set = [{"input_ids": ids, "labels": labels, "idx": i}
             for i, (ids, labels) in enumerate(encode_pair(tok, p, c, TRAIN.seq_len) for p, c in data.train)]
stock = DataCollatorForLanguageModeling(tok, mlm=False)([{"input_ids": train_set[0]["input_ids"]}])
ours_labels = train_set[0]["labels"]
display(pd.DataFrame({"token": [tok.decode([i]) for i in train_set[0]["input_ids"]],
                      "our label": ours_labels, "stock collator's label": stock["labels"][0].tolist()}).T)
print(f"pad token {tok.pad_token!r} = EOS token {tok.eos_token!r}: {tok.pad_token_id == tok.eos_token_id}")

# %% [markdown]
# The stock collator learns the **prompt** too, and it masks every token equal to the pad id. Here the pad
# token *is* the EOS token, so the EOS that ends each completion is masked as well: the model would never
# learn to stop. (TRL's SFTTrainer has options for completion-only loss for exactly this reason.) Our
# collator is a few lines: pad on the right, mask padding by *position*.


# %%
def collator(features: list[dict]) -> dict[str, torch.Tensor]:
    """Right-pad to the longest example: input_ids with the pad id, labels with -100, attention_mask 0."""
    served.append([f["idx"] for f in features])  # record each batch (for the comparison below)
    width = max(len(f["input_ids"]) for f in features)
    batch = {"input_ids": [], "labels": [], "attention_mask": []}
    for f in features:
        n = width - len(f["input_ids"])  # padding to add on the right
        batch["input_ids"].append(f["input_ids"] + [tok.pad_token_id] * n)
        batch["labels"].append(f["labels"] + [IGNORE_INDEX] * n)
        batch["attention_mask"].append([1] * len(f["input_ids"]) + [0] * n)
    return {k: torch.tensor(v) for k, v in batch.items()}  # each (batch, width)


served: list[list[int]] = []
mine = collator(train_set[:8])
reference = collate([(f["input_ids"], f["labels"]) for f in train_set[:8]], tok.pad_token_id)
assert all(torch.equal(mine[k], reference[k]) for k in reference)
print("our collator == training.data.collate on a batch of 8:", {k: tuple(v.shape) for k, v in mine.items()})

# %% [markdown]
# ## 3. Run A: `lora_core`'s Trainer
#
# We seed torch before injecting, because A's random init draws from torch's global generator.

# %%
ours = copy.deepcopy(base)
torch.manual_seed(TRAIN.seed)
lc.inject_lora(ours, LORA)
start_adapter = {k: v.clone() for k, v in lc.adapter_state_dict(ours).items()}  # clone: the file view shares memory
trainer_a = training.Trainer(ours, tok, data, TRAIN)
history = trainer_a.run(STEPS)
loss_ours = [m["loss"] for m in history]
print("lora_core losses:", [round(x, 3) for x in loss_ours])

# %% [markdown]
# ## 4. Run B: PEFT + `transformers.Trainer`, written the usual way
#
# The same seed before `get_peft_model`, and `TrainingArguments` filled in with the same numbers.
# Everything we don't set keeps transformers' default, as it would in a typical script.


# %%
workdir = tempfile.TemporaryDirectory(prefix="lesson10-")  # Trainer wants an output_dir; we save nothing


def hf_arguments() -> TrainingArguments:
    return TrainingArguments(
        output_dir=workdir.name, max_steps=STEPS, per_device_train_batch_size=TRAIN.batch_size,
        learning_rate=TRAIN.lr, warmup_steps=TRAIN.warmup_steps, lr_scheduler_type="cosine", max_grad_norm=1.0,
        seed=TRAIN.seed, logging_steps=1, save_strategy="no", report_to="none", use_cpu=True, disable_tqdm=True,
        remove_unused_columns=False)  # keep our "idx" field: the collator reads it


def logged_losses(trainer: Trainer) -> list[float]:
    return [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]


torch.manual_seed(TRAIN.seed)
peft_b = get_peft_model(copy.deepcopy(base), peft_config)
same_start = all(torch.equal(get_peft_model_state_dict(peft_b)[k], v) for k, v in start_adapter.items())
peft_b.print_trainable_parameters()
print("PEFT's initial A and B are identical to ours:", same_start)
assert same_start  # PEFT draws A from torch's generator in the same order as lora_core

served.clear()
trainer_b = Trainer(model=peft_b, args=hf_arguments(), train_dataset=train_set, data_collator=collator)
trainer_b.remove_callback(PrinterCallback)  # no log lines; we read trainer.state.log_history instead
trainer_b.train()
loss_b = logged_losses(trainer_b)
order_b = [i for batch in served[:STEPS] for i in batch]  # accelerate reads one batch ahead: keep those trained on
print("HF Trainer losses:", [round(x, 3) for x in loss_b])

viz.curves({"lora_core Trainer": loss_ours, "PEFT + transformers.Trainer": loss_b},
           "The same fine-tune, two trainers", "training loss (nats per completion token)").show()
gap_b = [abs(a - b) for a, b in zip(loss_ours, loss_b, strict=True)]
print(f"|Δloss| per step: mean {sum(gap_b) / STEPS:.3f}, largest {max(gap_b):.3f}; "
      f"final loss {loss_ours[-1]:.3f} (ours) vs {loss_b[-1]:.3f} (HF)")

# %% [markdown]
# Both curves fall the same way, but they are not the same curve. Same model, same start (checked above),
# same data and the same loss, so what is different? Three suspects.
#
# **Suspect 1, the learning-rate schedule.** Both warm up, then follow a cosine. But the details differ.
# transformers' warmup starts at **0**, so the very first update uses lr = 0 and changes nothing. Its
# cosine also ends at 0. Ours is one step further along the ramp: step 1 already uses lr / warmup_steps
# (the full lr when warmup is a single step), and the cosine ends at 10% of the peak.

# %%
dummy = torch.optim.SGD([torch.zeros(1)], lr=TRAIN.lr)
hf_schedule = transformers.get_cosine_schedule_with_warmup(dummy, TRAIN.warmup_steps, STEPS)
lr_hf = []
for _ in range(STEPS):
    lr_hf.append(dummy.param_groups[0]["lr"])
    dummy.step()
    hf_schedule.step()
lr_ours = [lr_at(TRAIN, step) for step in range(STEPS)]
show = sorted({0, 1, 2, STEPS // 2, STEPS - 1})
display(pd.DataFrame({"lora_core lr": [lr_ours[i] for i in show], "transformers lr": [lr_hf[i] for i in show]},
                     index=[f"step {i + 1}" for i in show]))
print(f"HF's step-2 loss {loss_b[1]:.3f} is the untrained model on batch 2; ours, {loss_ours[1]:.3f}, "
      "comes after one update")
assert lr_hf[0] == 0 and lr_ours[0] > 0

# %% [markdown]
# **Suspect 2, the data order.** With the same seed, the order is the same *within the first epoch*:
# transformers (via accelerate) shuffles each epoch with `torch.randperm` seeded by `seed + epoch`, and our
# Trainer draws `torch.randperm` from a generator seeded by `seed`. After the first epoch they part ways.
# transformers reshuffles with a new seed and serves a short last batch (220 = 27 × 8 + 4). Ours carries
# on one stream of permutations and keeps every batch full.


# %%
def lora_core_order(n_examples: int, batch_size: int, steps: int, seed: int) -> list[int]:
    """The example indices training.Trainer serves: whole permutations from one seeded generator, back to back."""
    generator, order = torch.Generator().manual_seed(seed), []
    while len(order) < batch_size * steps:
        order += torch.randperm(n_examples, generator=generator).tolist()
    return order[: batch_size * steps]


order_ours = lora_core_order(len(train_set), TRAIN.batch_size, STEPS, TRAIN.seed)
first_diff = next((i for i, (a, b) in enumerate(zip(order_ours, order_b, strict=False)) if a != b), None)
full_batches = len(train_set) // TRAIN.batch_size  # full batches in the first epoch
print(f"one epoch = {len(train_set) / TRAIN.batch_size:.1f} steps; in {STEPS} steps HF trained on "
      f"{len(order_b)} examples, ours on {len(order_ours)}")
print("first example served differently:", "none" if first_diff is None else
      f"#{first_diff} (in step {first_diff // TRAIN.batch_size + 1})")
same = min(STEPS, full_batches) * TRAIN.batch_size
assert order_b[:same] == order_ours[:same]

# %% [markdown]
# **Suspect 3, the optimizer.** transformers' default is `adamw_torch_fused`: the same AdamW (betas
# 0.9/0.999, eps 1e-8, weight decay 0 here), computed by a fused kernel that rounds differently in the
# last bits. Our Trainer uses `torch.optim.AdamW`'s default implementation.

# %%
keys = ["betas", "eps", "weight_decay", "fused"]
groups = {"transformers.Trainer": trainer_b.optimizer.param_groups[0],
          "lora_core Trainer": trainer_a.optimizer.param_groups[0]}
display(pd.DataFrame({name: [str(group.get(k)) for k in keys] for name, group in groups.items()}, index=keys))
print("transformers' default optim:", trainer_b.args.optim.value, "| ours:", type(trainer_a.optimizer).__name__)

# %% [markdown]
# ## 5. Run C: remove the differences, and the curves coincide
#
# If those three suspects are the whole story, removing them must make the curves match up to float
# rounding. Run C is transformers' `Trainer` again, with three changes:
#
# * the start: a fresh PEFT model loaded with our initial adapter (it was already equal; this makes it certain);
# * the order: the examples in `lora_core`'s order, read front to back by a plain `DataLoader`;
# * the schedule and optimizer: `torch.optim.AdamW` with `training.trainer.lr_at` through a `LambdaLR`.


# %%
class InOrderTrainer(Trainer):
    """transformers' Trainer that reads its dataset front to back, without shuffling."""

    def get_train_dataloader(self) -> DataLoader:
        return DataLoader(self.train_dataset, batch_size=self.args.per_device_train_batch_size,
                          shuffle=False, collate_fn=self.data_collator)


peft_c = get_peft_model(copy.deepcopy(base), peft_config)
set_peft_model_state_dict(peft_c, start_adapter)
optimizer = torch.optim.AdamW([p for p in peft_c.parameters() if p.requires_grad], lr=TRAIN.lr, weight_decay=0.0)
schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: lr_at(TRAIN, step) / TRAIN.lr)
served.clear()
trainer_c = InOrderTrainer(model=peft_c, args=hf_arguments(), train_dataset=[train_set[i] for i in order_ours],
                           data_collator=collator, optimizers=(optimizer, schedule))
trainer_c.remove_callback(PrinterCallback)
trainer_c.train()
loss_c = logged_losses(trainer_c)
gap_c = max(abs(a - c) for a, c in zip(loss_ours, loss_c, strict=True))

viz.curves({"lora_core Trainer": loss_ours, "HF Trainer, defaults (B)": loss_b, "HF Trainer, aligned (C)": loss_c},
           "Remove the schedule and order differences, and the curves coincide", "training loss",
           dashed=["HF Trainer, aligned (C)"]).show()
print(f"largest |Δloss| per step: ours vs B {max(gap_b):.3f} | ours vs C {gap_c:.1e}")
assert [i for batch in served[:STEPS] for i in batch] == order_ours and gap_c < 1e-3

# %% [markdown]
# With the same start, order, schedule and optimizer, the two stacks agree to about 1e-6: rounding noise.
# Nothing else differs. The model, the adapter (PEFT's LoRA layer and ours compute the same thing), the
# loss (mean over completion tokens) and gradient clipping at 1.0 all match.
#
# Lessons for reading other people's training curves:
#
# * "Same hyperparameters" is not the same run. Scheduler shape, warmup convention and data order all
#   move the curve. Near the start they move it by more than small changes in lr or r would.
# * A first step at lr = 0 is harmless, but it means step *k* of one trainer is step *k − 1* of another.
# * To compare two implementations, remove the differences one at a time until the curves coincide. If
#   they never do, you have found a bug.
#
# ## Check yourself
#
# 1. Which library does `SFTTrainer` come from, and what is its base class?
# 2. What learning rate does transformers' `Trainer` use on its first step with `warmup_steps > 0`?
# 3. Up to which step is the data order the same for both trainers with the same seed?
# 4. How far apart are the aligned curves?

# %%
answer_1 = (hasattr(peft, "SFTTrainer"), Trainer.__module__)
answer_2 = lr_hf[0]
answer_3 = full_batches
answer_4 = gap_c
print(f"1. TRL. PEFT has an SFTTrainer: {answer_1[0]}. SFTTrainer subclasses transformers' Trainer "
      f"(module {answer_1[1]}); PEFT supplies the adapter model.")
print(f"2. lr = {answer_2:g}: warmup starts at 0, so the first update changes nothing.")
print(f"3. Through step {answer_3}, the last full batch of the first epoch ({len(train_set)} examples, "
      f"batch {TRAIN.batch_size}). This run had {STEPS} steps.")
print(f"4. Largest per-step gap {answer_4:.1e} nats: float rounding, once start, order, schedule and "
      "optimizer agree.")
assert answer_1 == (False, "transformers.trainer") and answer_2 == 0 and answer_3 == 27 and answer_4 < 1e-3
