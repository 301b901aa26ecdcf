"""What the seed documents say, quoted so that the evidence can be set against it, and the cited sources.

Nothing else in claims/ is a typed-in number: every other value is measured by lora_core when asked.
"""

# Seed 000's own numbers (its recipe and the results it claims for it).
SEED_000 = {"r": 8, "lora_alpha": 16, "targets": ["c_attn"], "claimed": 98_304, "claimed_percent": 0.12,
            "bleu": 0.65, "train_pairs": 4, "epochs": 5}
# loralib is not installed here, so its layer classes cannot be introspected: these are read from
# microsoft/LoRA loralib/layers.py (main branch) and shown with that provenance.
LORALIB_LAYERS = {"Embedding": "nn.Embedding", "Linear": "nn.Linear", "MergedLinear": "nn.Linear (fused qkv)",
                  "Conv1d": "nn.Conv1d", "Conv2d": "nn.Conv2d", "Conv3d": "nn.Conv3d"}

# The authors' released training scripts (microsoft/LoRA at c4593f0): the r and α they pass. Read from
# examples/NLU/{roberta_base,roberta_large,deberta_v2_xxlarge}_*.sh (--lora_r, --lora_alpha; the same in every
# GLUE task's script) and examples/NLG/README.md's E2E command for src/gpt2_ft.py (--lora_dim, --lora_alpha).
AUTHOR_SCRIPTS_SOURCE = "microsoft/LoRA examples/NLU, examples/NLG"
AUTHOR_SCRIPTS = (
    {"model": "RoBERTa base", "task": "GLUE", "r": 8, "lora_alpha": 16, "where": "examples/NLU/roberta_base_*.sh"},
    {"model": "RoBERTa large", "task": "GLUE", "r": 8, "lora_alpha": 16, "where": "examples/NLU/roberta_large_*.sh"},
    {"model": "DeBERTa V2 XXL", "task": "GLUE", "r": 16, "lora_alpha": 32,
     "where": "examples/NLU/deberta_v2_xxlarge_*.sh"},
    {"model": "GPT-2 Medium", "task": "E2E", "r": 4, "lora_alpha": 32, "where": "examples/NLG/README.md"},
)
# loralib's own init (microsoft/LoRA loralib/layers.py, Linear.reset_parameters); its comment there says it
# differs from the paper's description.
LORALIB_LINEAR_INIT = ("nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))", "nn.init.zeros_(self.lora_B)")
LORALIB_INIT_SOURCE = "microsoft/LoRA loralib/layers.py, Linear.reset_parameters"
# The LoRA paper's Table 3 (GPT-2 Medium on E2E), as the microsoft/LoRA README reprints it: trainable parameters.
PAPER_GPT2_MEDIUM = {"Adapter (L)": "0.37M", "Prefix": "0.35M", "LoRA": "0.35M", "Fine-Tune": "354.92M"}
PAPER_GPT2_MEDIUM_SOURCE = ("quoted from the LoRA paper (arXiv 2106.09685) Table 3, reprinted in "
                            "microsoft/LoRA README.md")
PAPER_GPT2_MEDIUM_LORA = {"r": 4, "targets": "W_q, W_v", "checkpoint": "gpt2_md_lora_e2e.pt, 1.5 MB"}
# Where TRL applies the PEFT config (TRL is not installed here, so this is cited from its source):
# huggingface/trl at f2cd577 (1.10.0.dev0), trl/trainer/sft_trainer.py, SFTTrainer.__init__ calls
# `model = get_peft_model(model, peft_config, **get_peft_model_kwargs)` when peft_config is given;
# SFTTrainer defines no train(): train() is transformers.Trainer's.
TRL_PEFT_CALL = {"file": "trl/trainer/sft_trainer.py", "function": "SFTTrainer.__init__",
                 "call": "model = get_peft_model(model, peft_config, **get_peft_model_kwargs)",
                 "revision": "huggingface/trl f2cd577 (1.10.0.dev0)", "train": "inherited from transformers.Trainer"}
# Seed 003's recommended LoraConfig, as data: its arguments in order, and the ones it follows with a `//` comment
# (the comments' words are the seed's own and are not repeated here).
SEED_003_ARGS = {"r": 8, "lora_alpha": 16, "target_modules": ["q_proj", "v_proj"], "lora_dropout": 0.05,
                 "bias": "none", "task_type": "CAUSAL_LM"}
SEED_003_COMMENTED = ("r", "lora_alpha", "lora_dropout", "task_type")
