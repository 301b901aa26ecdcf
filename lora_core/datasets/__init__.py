"""Data shipped with LoRA Lab: the recommendation pairs (JSONL) and a general-English text.

Read them with `lora_core.data.load_dataset` and `lora_core.data.general_english`; rebuild the
JSONL files with `python -m lora_core.datasets.make_datasets`.
"""
