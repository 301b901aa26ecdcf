"""The fine-tuning CLI end to end on SmolLM2-135M, and its adapter read back by PEFT itself."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import GPT2_TOKENS, tiny_gpt2

import lora_core as lc

ROOT = Path(__file__).resolve().parents[1]
KEYS = {"loss_start", "loss_end", "bleu_before", "bleu_after", "steps", "seconds", "steps_per_s", "tokens_per_s",
        "heldout_loss_before", "heldout_loss_after", "ppl_general_before", "ppl_general_after", "samples",
        "history", "bleu_scale"}


def run_cli(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "lora_core.finetune", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)


@pytest.mark.slow
def test_cli_trains_smollm2_and_peft_reads_the_adapter(tmp_path):
    out = tmp_path / "rec"
    proc = run_cli("--model", "smollm2-135m", "--data", "recommendations", "--r", "8", "--alpha", "16",
                   "--targets", "q_proj,v_proj", "--steps", "6", "--eval-limit", "4", "--max-new-tokens", "12",
                   "--samples", "2", "--out", str(out))
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert {p.name for p in out.iterdir()} >= {"adapter_config.json", "adapter_model.safetensors", "metrics.json"}
    metrics = json.loads((out / "metrics.json").read_text())
    assert KEYS <= set(metrics)
    assert metrics["steps"] == 6 and len(metrics["history"]) == 6 and len(metrics["samples"]) == 2
    assert metrics["loss_end"] < metrics["loss_start"]
    assert metrics["heldout_loss_after"] < metrics["heldout_loss_before"]
    assert all(0.0 <= metrics[k] <= 100.0 for k in ("bleu_before", "bleu_after"))
    assert set(metrics["samples"][0]) == {"prompt", "reference", "before", "after"}

    from peft import PeftModel  # the oracle: PEFT's own loader on the files we wrote

    ids = torch.tensor([lc.load_model("smollm2-135m")[1]("User likes jazz videos. I recommend")["input_ids"]])
    ours, _ = lc.load_model("smollm2-135m", device="cpu")
    lc.load_adapter(ours, out)
    theirs = PeftModel.from_pretrained(lc.load_model("smollm2-135m", device="cpu")[0], str(out)).eval()
    with torch.no_grad():
        a, b = ours(ids).logits, theirs(input_ids=ids).logits
    assert torch.allclose(a, b, atol=1e-4)
    assert sum(p.abs().sum() for n, p in ours.named_parameters() if "lora_B" in n) > 0  # trained, not B = 0


@pytest.mark.slow
def test_cli_runs_on_distilgpt2_random_and_rejects_bad_arguments(tmp_path):
    proc = run_cli("--model", "distilgpt2-random", "--steps", "2", "--eval-limit", "2", "--max-new-tokens", "4",
                   "--out", str(tmp_path / "rand"))
    assert proc.returncode == 0, proc.stderr[-2000:]
    metrics = json.loads((tmp_path / "rand" / "metrics.json").read_text())
    assert metrics["steps"] == 2 and metrics["lora"]["target_modules"] is None
    assert metrics["wrapped_modules"] == ["c_attn"]  # PEFT's default for GPT-2
    config = json.loads((tmp_path / "rand" / "adapter_config.json").read_text())
    assert config["target_modules"] == ["c_attn"] and config["fan_in_fan_out"] is True

    bad = run_cli("--r", "0", "--out", str(tmp_path / "bad"))
    assert bad.returncode == 2 and "r=0 is not allowed" in bad.stderr
    bad = run_cli("--lr", "-1", "--out", str(tmp_path / "bad"))
    assert bad.returncode == 2 and "lr=-1.0 is not allowed" in bad.stderr


def test_the_seed_fixes_the_adapter_whatever_the_global_rng_holds(tmp_path, monkeypatch):
    # main() in this process on a tiny GPT-2 (dropout 0.1 on): --seed 5 twice, from different global
    # RNG states, and --seed 6 once.
    from safetensors.torch import load_file

    from lora_core.training import finetune

    def tiny(name, device=None):  # every run starts from the same tiny base (seed 0)
        model = tiny_gpt2(n_layer=1, n_embd=16, n_positions=64, pad_token_id=50256, **GPT2_TOKENS)
        return model, lc.models.gpt2_tokenizer()

    monkeypatch.setattr(finetune, "load_model", tiny)
    data = tmp_path / "pairs.jsonl"
    data.write_text("".join(json.dumps({"prompt": f"User likes topic {i}.", "completion": f"I recommend 'Video {i}'"})
                            + "\n" for i in range(12)))
    reseeded = []
    monkeypatch.setattr(torch, "manual_seed", lambda *a, **k: reseeded.append(a))  # the CLI must not reseed
    adapters = {}
    for run, seed, global_seed in (("a", 5, 0), ("b", 5, 99), ("c", 6, 0)):
        torch.set_rng_state(torch.Generator().manual_seed(global_seed).get_state())  # whatever the caller had
        args = ["--model", "tiny", "--data", str(data), "--r", "2", "--steps", "2", "--batch-size", "4",
                "--seq-len", "24", "--eval-limit", "1", "--max-new-tokens", "2", "--samples", "1",
                "--seed", str(seed), "--device", "cpu", "--out", str(tmp_path / run)]
        assert finetune.main(args) == 0
        adapters[run] = load_file(tmp_path / run / "adapter_model.safetensors")
    assert reseeded == []
    assert adapters["a"].keys() == adapters["b"].keys()
    assert all(torch.equal(t, adapters["b"][k]) for k, t in adapters["a"].items())  # the global state plays no part
    assert any(not torch.equal(t, adapters["c"][k]) for k, t in adapters["a"].items())
