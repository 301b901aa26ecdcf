"""Activation memory, site by site: hand-computed bytes on the shipped configs (Korthikanti et al. 2022,
arXiv 2205.05198, eq. 1 for GPT-2; our Llama-style list), and the estimate against the tensors autograd
really saves on tiny models."""

import json

import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

from lora_core.config import LoraConfig
from lora_core.inject import inject_lora
from lora_core.models.sources import CONFIG_DIR
from lora_core.quant import memory


def config(name: str) -> dict:
    return json.loads((CONFIG_DIR / f"{name}.json").read_text())


def estimate(**kw) -> memory.MemoryEstimate:
    return memory.estimate_memory(memory.MemoryConfig(**{"batch_size": 1, "seq_len": 512, **kw}))


GPT = config("distilgpt2")
h, a, n, v = GPT["n_embd"], GPT["n_head"], GPT["n_layer"], GPT["vocab_size"]
LLAMA = config("Llama-2-7b")
H, F, A, L, V = (LLAMA[k] for k in ("hidden_size", "intermediate_size", "num_attention_heads", "num_hidden_layers",
                                    "vocab_size"))
s, b = 512, 1


def test_gpt2_full_fine_tuning_is_korthikanti_eq1():
    # sbh(34 + 5as/h) per layer in 16 bits, then ln_f's and lm_head's inputs and the logits (bf16 + fp32 log-softmax)
    est = estimate(model="distilgpt2", method="full", weight_dtype="bf16")
    assert est.activations == s * b * (n * (34 * h + 5 * a * s) + 2 * h + 2 * h + v * 6)
    assert "Korthikanti" in est.formulas["activations"] and f"s={s}, b={b}, h={h}" in est.formulas["activations"]


def test_gpt2_lora_on_c_attn_drops_exactly_the_frozen_projection_inputs():
    # fp32 and no dropout: A reads x itself, so c_attn's input is kept once, as in full fine-tuning. What LoRA
    # does not keep: the inputs of attn.c_proj (h), mlp.c_fc (h) and mlp.c_proj (f = 4h), in every layer;
    # lm_head's input; and layer 0's first LayerNorm input (no gradient reaches it). It adds A's output.
    full = estimate(model="distilgpt2", method="full", weight_dtype="fp32")
    lora = estimate(model="distilgpt2", method="lora", weight_dtype="fp32", r=8, target_modules=["c_attn"])
    frozen_inputs = n * (h + h + 4 * h) * 4
    assert full.activations - lora.activations == s * b * (frozen_inputs + h * 4 + h * 4 - n * 8 * 4)
    assert "not kept: out-proj input, fc1 input, fc2 input" in lora.formulas["activations"]


def test_llama_q_v_lora_keeps_neither_o_proj_nor_mlp_inputs():
    # PEFT's default targets for Llama are q_proj and v_proj. Frozen: o_proj (input h), gate/up (one shared
    # input h), down_proj (input f), and both RMSNorm weights (their normalized x, h each). In fp32 the
    # q/k/v input is kept once: both A's read it. Layer 0's first RMSNorm, the final RMSNorm's normalized x
    # and lm_head's input are not kept either; each of the 2·L branches adds A's output, r wide.
    full = estimate(model="Llama-2-7b", method="full", weight_dtype="fp32")
    lora = estimate(model="Llama-2-7b", method="lora", weight_dtype="fp32", r=8)
    per_layer = (H + H + F) * 4 + 2 * H * 4
    assert full.activations - lora.activations == s * b * (L * per_layer + H * 4 + 2 * H * 4 - L * 2 * 8 * 4)
    assert lora.activations < full.activations


def test_lora_keeps_fewer_activations_than_full_fine_tuning_in_16_bits():
    # bf16: each branch keeps its own fp32 copy of x (2·4·H), while full fine-tuning keeps the bf16 q/k/v input,
    # both normalized x's, o_proj's, gate/up's and down_proj's inputs (5·2·H + 2·F).
    full = estimate(model="Llama-2-7b", method="full", weight_dtype="bf16")
    lora = estimate(model="Llama-2-7b", method="lora", weight_dtype="bf16", r=8)
    per_layer = 5 * H * 2 + F * 2 - 2 * (H * 4 + 8 * 4)
    assert full.activations - lora.activations == s * b * (L * per_layer + H * 4 + 2 * H * 2)


def test_flash_attention_drops_the_scores_and_keeps_kv_at_its_own_width():
    c = config("Llama-3-8B")
    q, kv, a3, l3 = c["hidden_size"], c["num_key_value_heads"] * c["hidden_size"] // c["num_attention_heads"], \
        c["num_attention_heads"], c["num_hidden_layers"]
    assert kv == 1024                                           # grouped-query attention: 8 key-value heads
    eager = estimate(model="Llama-3-8B", method="full", weight_dtype="bf16")
    flash = estimate(model="Llama-3-8B", method="full", weight_dtype="bf16", flash_attention=True)
    # eager keeps the fp32 softmax and its bf16 cast, and K, V repeated to all heads
    assert eager.activations - flash.activations == s * b * l3 * (a3 * s * (4 + 2) + 2 * (q - kv) * 2)
    # with LoRA on q, v the kernel still keeps its output, o_proj's input, though o_proj is frozen
    lora_eager = estimate(model="Llama-3-8B", method="lora", weight_dtype="bf16")
    lora_flash = estimate(model="Llama-3-8B", method="lora", weight_dtype="bf16", flash_attention=True)
    assert lora_eager.activations - lora_flash.activations == s * b * l3 * (a3 * s * 6 + 2 * (q - kv) * 2 - q * 2)


def test_layers_before_the_first_adapter_keep_nothing():
    est = estimate(model="Llama-2-7b", method="lora", weight_dtype="bf16", r=8,
                   target_modules=r".*\.(30|31)\.self_attn\.q_proj")
    # from q/k/v input on: Q, K, V (bf16), fp32 softmax + bf16 cast, post-attention RMSNorm input (fp32), SiLU
    # input, SiLU output and up output; the branch keeps its fp32 copy of x and A's output
    from_q = 3 * H * 2 + A * s * 6 + H * 4 + 3 * F * 2 + (H * 4 + 8 * 4)
    layer_30, layer_31 = from_q, H * 4 + from_q                 # layer 31 also keeps its input RMSNorm's input
    assert est.activations == s * b * (layer_30 + layer_31 + H * 4 + V * 6)
    assert "layers 0–29 (×30): nothing" in est.formulas["activations"]


def test_unknown_block_family_names_the_model(tmp_path):
    from transformers import OPTConfig
    OPTConfig(hidden_size=16, num_hidden_layers=1, num_attention_heads=2, ffn_dim=32, vocab_size=32,
              word_embed_proj_dim=16).save_pretrained(tmp_path)
    with pytest.raises(ValueError, match=r"^model='opt'"):
        memory.estimate_memory(memory.MemoryConfig(model=str(tmp_path), method="full"))


# --- the estimate against autograd ------------------------------------------------------------------------------------
def saved_activation_bytes(model: torch.nn.Module, ids: torch.Tensor) -> int:
    """Bytes of the floating-point tensors autograd saves in one step, each storage once, parameters left out."""
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    seen: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        ptr = t.untyped_storage().data_ptr()
        if t.dtype.is_floating_point and ptr not in params:
            seen.setdefault(ptr, t.untyped_storage().nbytes())
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = model(input_ids=ids, labels=ids)
    out.loss.backward()
    return sum(seen.values())


TINY = {  # exact GeLU and no dropout for GPT-2: transformers' gelu_new and CPU dropout masks differ from the paper
    "gpt2": (GPT2Config(n_layer=3, n_embd=64, n_head=4, vocab_size=96, n_positions=64, activation_function="gelu",
                        attn_pdrop=0.0, resid_pdrop=0.0, embd_pdrop=0.0), GPT2LMHeadModel, ["c_attn"]),
    "llama": (LlamaConfig(hidden_size=64, intermediate_size=160, num_hidden_layers=3, num_attention_heads=4,
                          num_key_value_heads=2, vocab_size=96, max_position_embeddings=64), LlamaForCausalLM,
              ["q_proj", "v_proj"]),
}


@pytest.mark.parametrize("dtype", ["fp32", "bf16"])
@pytest.mark.parametrize("method", ["full", "lora"])
@pytest.mark.parametrize("family", list(TINY))
def test_estimate_matches_the_tensors_autograd_saves(tmp_path, family, method, dtype):
    cfg, head, targets = TINY[family]
    cfg.save_pretrained(tmp_path)
    torch.manual_seed(0)
    model = head(cfg)
    model.config._attn_implementation = "eager"
    model = model.to(getattr(torch, {"fp32": "float32", "bf16": "bfloat16"}[dtype])).train()
    if method == "lora":
        inject_lora(model, LoraConfig(r=4, target_modules=targets))
        for module in model.modules():
            if hasattr(module, "forward_path"):
                module.forward_path = "plain"  # the formula as PEFT runs it (the fused CPU path keeps x in bf16)
    seq, batch = 24, 2
    measured = saved_activation_bytes(model, torch.randint(0, 96, (batch, seq)))
    est = memory.estimate_memory(memory.MemoryConfig(model=str(tmp_path), method=method, r=4, target_modules=targets,
                                                     weight_dtype=dtype, batch_size=batch, seq_len=seq))
    returned_logits = seq * batch * 96 * memory.DTYPE_BYTES[dtype]  # held by the output, never saved by autograd
    # what is left out: LayerNorm's mean/rstd and RMSNorm's rsqrt, s·b·4 B each
    assert measured == pytest.approx(est.activations - returned_logits, rel=0.015)
