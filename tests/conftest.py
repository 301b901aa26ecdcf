"""Shared fixtures: tiny GPT-2 (Conv1D) and tiny Llama (nn.Linear) models with fixed seeds."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # tests never touch the network

import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM


def tiny_gpt2() -> GPT2LMHeadModel:
    torch.manual_seed(0)
    cfg = GPT2Config(n_layer=2, n_embd=32, n_head=2, vocab_size=64, n_positions=32,
                     bos_token_id=0, eos_token_id=0)
    return GPT2LMHeadModel(cfg).eval()


def tiny_llama() -> LlamaForCausalLM:
    torch.manual_seed(0)
    cfg = LlamaConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                      num_key_value_heads=2, vocab_size=64, max_position_embeddings=32,
                      bos_token_id=0, eos_token_id=0, pad_token_id=0)
    return LlamaForCausalLM(cfg).eval()


MODELS = {"gpt2": tiny_gpt2, "llama": tiny_llama}


@pytest.fixture(params=sorted(MODELS))
def tiny_model(request):
    return MODELS[request.param]()


@pytest.fixture
def tokens() -> torch.Tensor:
    return torch.randint(0, 64, (2, 12), generator=torch.Generator().manual_seed(1))


@pytest.fixture
def models_root(tmp_path, monkeypatch):
    """An allowed models folder, set the way a teacher does: models_dir in a settings file."""
    (tmp_path / "lab.toml").write_text('[models]\nmodels_dir = "models"\n')  # relative to the file
    monkeypatch.setenv("LORA_LAB_SETTINGS", str(tmp_path / "lab.toml"))
    (tmp_path / "models").mkdir()
    return tmp_path / "models"
