"""What the seed documents say, quoted so that the evidence can be set against it, and the one cited source.

Nothing else in claims/ is a typed-in number: every other value is measured by lora_core when asked.
"""

# Seed 000's own numbers (its recipe and the results it claims for it).
SEED_000 = {"r": 8, "lora_alpha": 16, "targets": ["c_attn"], "claimed": 98_304, "claimed_percent": 0.12,
            "bleu": 0.65, "train_pairs": 4, "epochs": 5}
# loralib is not installed here, so its layer classes cannot be introspected: these are read from
# microsoft/LoRA loralib/layers.py (main branch) and shown with that provenance.
LORALIB_LAYERS = {"Embedding": "nn.Embedding", "Linear": "nn.Linear", "MergedLinear": "nn.Linear (fused qkv)",
                  "Conv1d": "nn.Conv1d", "Conv2d": "nn.Conv2d", "Conv3d": "nn.Conv3d"}
