"""QLoRA's 4-bit base from scratch: the NF4 codebook and double quantization (codebook.py), the NF4
Linear that LoRA wraps by dispatch (nf4.py), and training memory: estimated by formula (memory.py), measured
on one real training step (measure.py, its model from measured_model.py, explained beside the estimate by
explain.py), and gradient checkpointing with LoRA, run (checkpointing.py)."""

from .nf4 import NF4Linear, base_in_precision, quantize_model, weight_bytes

__all__ = ["NF4Linear", "base_in_precision", "quantize_model", "weight_bytes"]
