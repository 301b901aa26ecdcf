"""The replays' run cache: a finished LoRA run comes back from disk identical, and only for the same code.

A tiny Llama (GPT-2's tokenizer, 16 blocks so the experiments' block 15 exists) stands in for SmolLM2.
"""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch
from conftest import GPT2_TOKENS, tiny_llama

import lora_core as lc
from lora_core.research import run_cache
from lora_core.research.e2e import make_task
from lora_core.research.run_cache import RunCache
from lora_core.research.runs import QUICK, Lab, RunSpec

TINY = replace(QUICK, steps=2, n_loss=4, n_bleu=2, max_new_tokens=4, seq_len=64)


@pytest.fixture(scope="module")
def parts():
    base = tiny_llama(**GPT2_TOKENS, num_hidden_layers=16, max_position_embeddings=128)
    for p in base.parameters():
        p.requires_grad_(False)
    tok = lc.models.gpt2_tokenizer()
    tok.pad_token = tok.eos_token
    return base, tok, make_task(0, n_train=64, n_test=8)


def lab(parts, folder) -> Lab:
    base, tok, task = parts
    return Lab(base, tok, task, TINY, cache=RunCache(folder, TINY, "cpu", "tiny"))


def test_a_finished_run_comes_back_from_disk_unchanged(parts, tmp_path):
    spec = RunSpec(targets=("q_proj", "v_proj"), r=4)
    first = lab(parts, tmp_path).run(spec)
    again = lab(parts, tmp_path)
    second = again.run(spec)
    assert again.cache_hits == 1
    assert second.summary == first.summary
    for name, (B, A) in first.factors.items():
        assert torch.equal(second.factors[name][0], B) and torch.equal(second.factors[name][1], A)
        torch.testing.assert_close(second.deltas[name], first.deltas[name])


def test_changed_code_or_another_spec_trains_afresh(parts, tmp_path, monkeypatch):
    spec = RunSpec(targets=("q_proj",), r=2)
    lab(parts, tmp_path).run(spec)
    other = lab(parts, tmp_path)
    other.run(replace(spec, seed=1))
    assert other.cache_hits == 0
    monkeypatch.setattr(run_cache, "code_version", lambda: "another version")
    changed = lab(parts, tmp_path)
    changed.run(spec)
    assert changed.cache_hits == 0


def test_full_fine_tunes_are_not_cached(parts, tmp_path):
    spec = RunSpec(kind="full", lr=1e-4)
    lab(parts, tmp_path).run(spec)
    assert not list(tmp_path.iterdir())  # nothing written, in any format
