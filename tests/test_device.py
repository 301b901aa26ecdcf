"""lora_core.device: which device a run uses (argument, then LORA_LAB_DEVICE, then what is there), its
autocast, and how it is described to a learner."""

import contextlib

import pytest
import torch

from lora_core.device import autocast, describe_device, pick_device


def test_pick_device_defaults_and_env(monkeypatch):
    monkeypatch.delenv("LORA_LAB_DEVICE", raising=False)
    assert pick_device("cpu") == torch.device("cpu")
    assert pick_device().type in {"cuda", "mps", "cpu"}
    monkeypatch.setenv("LORA_LAB_DEVICE", "cpu")
    assert pick_device() == torch.device("cpu")


def test_pick_device_errors(monkeypatch):
    with pytest.raises(ValueError, match=r"device.*'tpu'.*allowed"):
        pick_device("tpu")
    monkeypatch.setenv("LORA_LAB_DEVICE", "quantum")
    with pytest.raises(ValueError, match=r"device.*'quantum'"):
        pick_device()
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match=r"device.*'cuda'.*available: .*cpu"):
            pick_device("cuda")


def test_autocast_and_describe_cpu():
    assert isinstance(autocast(torch.device("cpu")), contextlib.nullcontext)
    assert describe_device("cpu").startswith("CPU (")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_device_autocast_and_describe():
    device = pick_device("auto")
    assert device.type == "cuda" and describe_device(device).startswith("CUDA: ")
    with autocast(device):
        out = torch.ones(4, 4, device=device) @ torch.ones(4, 4, device=device)
    assert out.dtype == torch.bfloat16
