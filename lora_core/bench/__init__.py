"""The speed benchmark: a LoRA training step against its floor, the frozen base's own step.
Run it with `python -m lora_core.bench` (cli.py); run.py measures, report.py reads results, step.py holds the steps."""

from .cli import live_benchmark, main
from .run import BenchConfig, random_model, run_benchmark

__all__ = ["BenchConfig", "live_benchmark", "main", "random_model", "run_benchmark"]
