"""QLoRA's 4-bit base from scratch: the NF4 codebook and double quantization (codebook.py), the NF4
Linear that LoRA wraps by dispatch (nf4.py), and training memory, estimated and measured (memory.py)."""

from .nf4 import NF4Linear, base_in_precision, quantize_model, weight_bytes

__all__ = ["NF4Linear", "base_in_precision", "quantize_model", "weight_bytes"]
