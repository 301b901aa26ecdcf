"""Fine-tuning with the library: datasets (data.py), the Trainer, what a run learned and forgot
(metrics.py: completion loss, BLEU, perplexity), a live run for the app, and the finetune CLI."""

from .data import Dataset, general_english, load_dataset, load_jsonl
from .live import LiveRun
from .metrics import bleu, completion_loss, generate, perplexity
from .trainer import TrainConfig, Trainer, TrainingDiverged

__all__ = [
    "Dataset",
    "LiveRun",
    "TrainConfig",
    "Trainer",
    "TrainingDiverged",
    "bleu",
    "completion_loss",
    "general_english",
    "generate",
    "load_dataset",
    "load_jsonl",
    "perplexity",
]
