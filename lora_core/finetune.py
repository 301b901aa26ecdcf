"""`python -m lora_core.finetune`: the fine-tuning CLI, which lives in training/finetune.py."""

import sys

from .training.finetune import main

if __name__ == "__main__":
    sys.exit(main())
