"""Data shipped with LoRA Lab: the recommendation pairs (JSONL) and a general-English text.

Read them with `lora_core.training.data.load_dataset` and `lora_core.training.data.general_english`; rebuild the
JSONL files with `python -m lora_core.training.datasets.make_datasets`.
"""
