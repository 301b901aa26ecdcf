"""`python -m lora_core.bench`: time LoRA's training step against the frozen floor (see run.py)."""

import sys

from .cli import main

sys.exit(main())
