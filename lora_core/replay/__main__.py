"""`python -m lora_core.replay list | run NAME [--quick] [--device cpu|cuda] [--out DIR]`."""

import sys

from ..research.cli import main

if __name__ == "__main__":
    sys.exit(main())
