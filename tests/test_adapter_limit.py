"""Every adapter the app can make loads back (issue 11, item 9): the adapter limit in force is derived from the
largest adapter the Fine-tuning form allows, and a .zip that is not an upload is never called one."""

import io
import zipfile
from pathlib import Path

import pytest
import torch

import lora_core as lc
from lora_core.models.sources import LOADABLE
from lora_core.serve.settings import Settings, load_settings
from lora_core.serve.upload_limits import adapter_bytes_bound, adapter_limit, largest_adapter_bytes, upload_limit
from lora_core.serve.uploads import read_adapter_upload
from lora_core.teach import peft_reference
from lora_core.training.run_setup import R_CHOICES

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = load_settings(ROOT / "lora_lab.toml")


def test_the_apps_r64_all_linear_smollm2_adapter_fits_the_limit_in_force():
    """The room test's case: r=64 all-linear on SmolLM2-135M downloaded as 71,040,126 bytes and unpacks to
    4 bytes per trainable parameter (PEFT's own count) plus a header; the shipped limit was 50,000,000."""
    trainable, _ = peft_reference.peft_reference_count("SmolLM2-135M", lc.LoraConfig(r=64, target_modules="all-linear"))
    unpacked = 4 * trainable                                     # 78,151,680: the safetensors file, without its header
    limit = upload_limit(SHIPPED, "max_adapter_bytes")
    assert limit.max_bytes >= max(71_040_126, unpacked + 100_000)
    assert limit.max_bytes == adapter_limit(SHIPPED) == largest_adapter_bytes() >= adapter_bytes_bound(
        "smollm2-135m", max(R_CHOICES))


def test_the_limit_is_the_larger_of_the_setting_and_the_largest_adapter():
    largest = largest_adapter_bytes()
    assert largest % 1_000_000 == 0                              # whole MB: the widget says "Limit N MB", exactly
    assert largest - 1_000_000 < max(adapter_bytes_bound(name, max(R_CHOICES)) for name in LOADABLE) <= largest
    assert adapter_limit(Settings(max_adapter_bytes=4096)) == largest
    assert adapter_limit(Settings(max_adapter_bytes=largest + 7)) == largest + 7   # a teacher may allow more
    assert upload_limit(Settings(max_adapter_bytes=4096), "max_upload_bytes").max_bytes == 2_000_000


@pytest.mark.filterwarnings("ignore:fan_in_fan_out is set to True")  # distilgpt2's lm_head is a Linear, not a Conv1D
def test_the_bound_holds_for_a_real_zip_of_every_module_at_the_largest_r():
    """distilgpt2-random at r=64 on every module the form lists (output layer and embeddings too), B non-zero as
    after training: the .zip and each file in it are within the bound, and the bound is tight (computed)."""
    model, _ = lc.load_model("distilgpt2-random", device="cpu")
    r = max(R_CHOICES)
    lc.inject_lora(model, lc.LoraConfig(r=r, target_modules=lc.candidate_modules(model), init_lora_weights="gaussian"),
                   generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        for _, layer in lc.lora_layers(model):
            for p in layer.parameters():
                if p.requires_grad:
                    p.normal_(0, 0.02, generator=torch.Generator().manual_seed(1))
    data = lc.adapter_zip(model)
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        unpacked = max(info.file_size for info in zf.infolist())
    bound = adapter_bytes_bound("distilgpt2-random", r)
    assert max(len(data), unpacked) <= bound <= 1.01 * unpacked
    base, _ = lc.load_model("distilgpt2-random", device="cpu")
    cfg, tensors = read_adapter_upload(data, base, adapter_limit(SHIPPED))
    assert cfg.r == r and len(tensors) == 2 * len(lc.lora_layers(model))


@pytest.mark.parametrize("source", ["adapter upload", "the adapter trained in this session"])
def test_a_zip_is_named_by_where_it_came_from(source, adapter_zip):
    base, _ = lc.load_model("distilgpt2-random", device="cpu")
    with pytest.raises(ValueError, match=rf"^{source} is {len(adapter_zip):,} bytes, over this server's limit"):
        read_adapter_upload(adapter_zip, base, 1000, source=source)
    with pytest.raises(ValueError) as err:
        read_adapter_upload(adapter_zip, base, 1000, source=source)
    assert ("upload" in str(err.value).split(", over")[0]) == (source == "adapter upload")
