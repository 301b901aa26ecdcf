"""What a shared LoRA Lab server needs: its settings and limits, the training queue, and checks on
uploaded adapters."""

from .admission import TrainingSlots
from .settings import Settings, load_settings
from .uploads import load_adapter_zip, read_adapter_upload

__all__ = ["Settings", "TrainingSlots", "load_adapter_zip", "load_settings", "read_adapter_upload"]
