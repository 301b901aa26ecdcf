"""lora_core.models: shipped configs on the meta device, the seeded random distilgpt2, SmolLM2 and distilgpt2
from the local cache, all offline on the CPU."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import GPT2_TOKENS, tiny_gpt2

from lora_core.models import sources
from lora_core.models.sources import (
    ModelUnavailableError,
    available_configs,
    build_on_meta,
    load_config,
    load_model,
    source_info,
)

EXPECTED_COUNTS = {
    "distilgpt2": 81_912_576,
    "gpt2": 124_439_808,
    "gpt2-medium": 354_823_168,
    "SmolLM2-135M": 134_515_008,
    "Llama-2-7b": 6_738_415_616,
    "Mistral-7B": 7_241_732_096,
    "Llama-3-8B": 8_030_261_248,
    "Llama-3.2-1B": 1_235_814_400,
}
SENTENCE = "The capital of France is Paris. It is a beautiful city with many museums."


@pytest.fixture(autouse=True)
def _offline(monkeypatch):
    # No test may reach for the hub; the machine may have no internet at all.
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="session")
def smollm2():
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HF_HUB_OFFLINE", "1")
        start = time.perf_counter()
        model, tok = load_model("smollm2-135m", device="cpu")
        print(f"\nsmollm2-135m load: {time.perf_counter() - start:.1f} s")
    return model, tok


# ------------------------------------------------------------ configs ---


def test_available_configs_lists_all_shipped():
    assert sorted(available_configs()) == sorted(EXPECTED_COUNTS)


@pytest.mark.parametrize("name", sorted(EXPECTED_COUNTS))
def test_meta_parameter_counts(name):
    start = time.perf_counter()
    model = build_on_meta(name)
    elapsed = time.perf_counter() - start
    # model.parameters() deduplicates tied tensors, so tied lm_heads count once.
    assert sum(p.numel() for p in model.parameters()) == EXPECTED_COUNTS[name]
    assert all(p.is_meta for p in model.parameters())
    assert elapsed < 10  # typically ~20 ms; generous for slow CI


def test_tied_embeddings_follow_config():
    small = build_on_meta("SmolLM2-135M")
    assert small.lm_head.weight is small.model.embed_tokens.weight
    big = build_on_meta("Llama-2-7b")
    assert big.lm_head.weight is not big.model.embed_tokens.weight


def test_smollm2_config_matches_gguf_metadata():
    cfg = load_config("smollm2-135m")  # case-insensitive
    assert (cfg.hidden_size, cfg.intermediate_size, cfg.num_hidden_layers) == (
        576,
        1536,
        30,
    )
    assert (cfg.num_attention_heads, cfg.num_key_value_heads, cfg.vocab_size) == (
        9,
        3,
        49152,
    )
    assert cfg.tie_word_embeddings and cfg.max_position_embeddings == 8192
    assert cfg.rope_parameters["rope_theta"] == 100000


def test_load_config_from_directory(tmp_path):
    load_config("gpt2").save_pretrained(tmp_path)
    assert load_config(tmp_path).n_layer == 12


def test_load_config_unknown_name():
    with pytest.raises(ValueError) as err:
        load_config("gpt5-ultra")
    msg = str(err.value)
    assert "model" in msg and "gpt5-ultra" in msg and "Llama-3-8B" in msg


# ------------------------------------------------------- random model ---


def test_distilgpt2_random_shapes_and_tokenizer():
    model, tok = load_model("distilgpt2-random", device="cpu")
    c_attn = model.transformer.h[0].attn.c_attn
    assert type(c_attn).__name__ == "Conv1D"  # GPT-2 stores weights as (in, out)
    assert tuple(c_attn.weight.shape) == (768, 2304)
    assert len(model.transformer.h) == 6 and not model.training
    assert tok("Hello world")["input_ids"] == [15496, 995]
    assert tok.pad_token == tok.eos_token == "<|endoftext|>"
    assert not source_info("distilgpt2-random").pretrained


def test_distilgpt2_random_is_deterministic_and_keeps_global_rng():
    torch.manual_seed(123)
    expected_next = torch.rand(1)
    torch.manual_seed(123)
    a, _ = load_model("distilgpt2-random", device="cpu")
    assert torch.rand(1) == expected_next  # caller's RNG stream untouched
    b, _ = load_model("distilgpt2-random", device="cpu")
    for (name, pa), pb in zip(a.named_parameters(), b.parameters(), strict=True):
        assert torch.equal(pa, pb), name


def _fingerprint(model) -> str:
    """A hash of every weight's bytes (a float sum would depend on the thread count)."""
    return hashlib.sha256(b"".join(p.detach().numpy().tobytes() for p in model.parameters())).hexdigest()


def test_distilgpt2_random_never_sets_the_global_rng_and_has_gpt2_s_init(monkeypatch):
    def refuse(*_, **__):
        raise AssertionError("building the random model must not set torch's global generator")

    state = torch.get_rng_state()
    with monkeypatch.context() as m:  # not even for a moment: fork_rng would, and another thread may be drawing
        for name in ("manual_seed", "set_rng_state", "seed"):
            m.setattr(torch, name, refuse)
        m.setattr(torch.random, "fork_rng", refuse)
        model, _ = load_model("distilgpt2-random", device="cpu")
    assert torch.equal(torch.get_rng_state(), state)
    assert model.lm_head.weight is model.transformer.wte.weight   # tied, as from_config ties it
    block = model.transformer.h[0]
    assert float(block.attn.c_attn.weight.std()) == pytest.approx(0.02, rel=0.02)
    assert float(block.mlp.c_proj.weight.std()) == pytest.approx(0.02 / 12 ** 0.5, rel=0.02)  # 1/sqrt(2 n_layer)
    assert torch.equal(block.ln_1.weight, torch.ones(768)) and not block.attn.c_attn.bias.any()


@pytest.mark.slow
def test_distilgpt2_random_is_the_same_in_another_process():
    code = ("import sys; sys.path.insert(0, 'tests'); from test_models import _fingerprint; "
            "from lora_core.models.sources import load_model; "
            "print(_fingerprint(load_model('distilgpt2-random', device='cpu')[0]))")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    root = Path(__file__).resolve().parents[1]
    out = subprocess.run([sys.executable, "-c", code], cwd=root, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == _fingerprint(load_model("distilgpt2-random", device="cpu")[0])


def test_gpt2_tokenizer_is_cached():
    assert sources.gpt2_tokenizer() is sources.gpt2_tokenizer()
    assert sources.gpt2_tokenizer().decode([15496, 995]) == "Hello world"


def test_load_local_directory_and_dtype(models_root):
    tiny = tiny_gpt2(n_layer=1, **GPT2_TOKENS)
    tiny.save_pretrained(models_root / "tiny")  # no tokenizer files: GPT-2 BPE fallback
    model, tok = load_model(str(models_root / "tiny"), device="cpu", dtype="bfloat16")
    assert model.dtype == torch.bfloat16 and not model.training
    assert tok("Hello world")["input_ids"] == [15496, 995]
    assert source_info(str(models_root / "tiny")).available


def test_load_model_errors(models_root):
    with pytest.raises(ValueError, match=r"model.*llama-9000.*smollm2-135m"):
        load_model("llama-9000")
    (models_root / "empty").mkdir()
    with pytest.raises(ValueError, match=r"config\.json"):
        load_model(str(models_root / "empty"))  # a directory, but not a model
    with pytest.raises(ValueError, match=r"dtype.*int3"):
        load_model("distilgpt2-random", dtype="int3")


# ------------------------------------------------------------ SmolLM2 ---


@pytest.mark.slow  # first run converts the GGUF (~17 s); later runs ~1 s
def test_smollm2_is_pretrained(smollm2):
    model, tok = smollm2
    assert type(model).__name__ == "LlamaForCausalLM" and not model.training
    assert sum(p.numel() for p in model.parameters()) == EXPECTED_COUNTS["SmolLM2-135M"]
    ids = tok(SENTENCE, return_tensors="pt")["input_ids"]
    with torch.no_grad():
        loss = model(ids, labels=ids).loss.item()
    print(f"\nsmollm2-135m loss on sentence: {loss:.3f} nats (random ~10.8)")
    assert loss < 4.0


@pytest.mark.slow
def test_smollm2_cache_and_source_info(smollm2):
    cached = sources.cache_dir() / "smollm2-135m"
    assert (cached / "model.safetensors").is_file()
    assert (cached / "tokenizer.json").is_file()
    info = source_info("smollm2-135m")
    assert info.available and info.pretrained and str(cached) in info.detail
    _, tok = smollm2
    assert tok.pad_token is not None


# ------------------------------------------------- distilgpt2 offline ---


def test_distilgpt2_offline_fails_fast(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    for var in ("HF_HUB_CACHE", "LORA_LAB_DISTILGPT2"):
        monkeypatch.delenv(var, raising=False)
    start = time.perf_counter()
    with pytest.raises(ModelUnavailableError) as err:
        load_model("distilgpt2")
    print(f"\ndistilgpt2 offline failure after {time.perf_counter() - start:.2f} s")
    msg = str(err.value)
    assert "HF_HOME" in msg and "smollm2-135m" in msg and "distilgpt2-random" in msg
    assert not source_info("distilgpt2").available
    assert sources.default_model_name() == "smollm2-135m"


def test_distilgpt2_from_hf_cache_layout(monkeypatch, tmp_path):
    # Mimic huggingface_hub's cache layout: refs/main -> snapshots/<commit>/.
    repo = tmp_path / "hub" / "models--distilbert--distilgpt2"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text("abc123")
    tiny = tiny_gpt2(n_layer=1, **GPT2_TOKENS)
    tiny.save_pretrained(repo / "snapshots" / "abc123")
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    for var in ("HF_HUB_CACHE", "LORA_LAB_DISTILGPT2"):
        monkeypatch.delenv(var, raising=False)
    assert source_info("distilgpt2").available
    assert sources.default_model_name() == "distilgpt2"
    model, tok = load_model("distilgpt2", device="cpu")
    assert model.config.n_layer == 1 and tok("Hello world")["input_ids"] == [15496, 995]


def test_distilgpt2_from_env_directory(monkeypatch, tmp_path):
    tiny_gpt2(n_layer=1, **GPT2_TOKENS).save_pretrained(tmp_path)
    monkeypatch.setenv("LORA_LAB_DISTILGPT2", str(tmp_path))
    assert source_info("distilgpt2").available
    model, tok = load_model("distilgpt2", device="cpu")
    assert model.config.n_embd == 32 and tok.pad_token == "<|endoftext|>"
