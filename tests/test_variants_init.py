"""OLoRA (init_lora_weights="olora") against PEFT 0.21: the same factors and residual on nn.Linear, and the
model starts exactly where the base was. On GPT-2's Conv1D PEFT takes the QR of the stored (in, out) weight,
so its factors come out transposed; ours take it of W as (out, in). Both behaviours are pinned here."""

import copy

import pytest
import torch
from conftest import tiny_gpt2, tiny_llama
from peft import LoraConfig as PeftLoraConfig
from peft import get_peft_model

import lora_core as lc

TOKENS = torch.arange(12).reshape(2, 6) % 64


def _peft(model, **kw):
    return get_peft_model(model, PeftLoraConfig(init_lora_weights="olora", **kw))


def test_olora_equals_peft_on_linear_layers():
    ours, theirs = tiny_llama(), tiny_llama()
    kw = dict(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "down_proj"])
    lc.inject_lora(ours, lc.LoraConfig(init_lora_weights="olora", **kw))
    peft_model = _peft(theirs, **kw)
    peft_layers = {n.removeprefix("base_model.model."): m for n, m in peft_model.named_modules()
                   if hasattr(m, "lora_A") and hasattr(m, "base_layer")}
    for name, layer in lc.lora_layers(ours):
        ref = peft_layers[name]
        torch.testing.assert_close(layer.lora_A.weight, ref.lora_A["default"].weight, rtol=0, atol=1e-6)
        torch.testing.assert_close(layer.lora_B.weight, ref.lora_B["default"].weight, rtol=0, atol=1e-6)
        torch.testing.assert_close(layer.base_layer.weight, ref.base_layer.weight, rtol=0, atol=1e-6)
    torch.testing.assert_close(ours(TOKENS).logits, peft_model(TOKENS).logits, rtol=0, atol=1e-5)


def test_olora_starts_at_the_base_and_has_an_orthonormal_b():
    model = tiny_llama()
    base_logits = model(TOKENS).logits.detach()
    original = model.model.layers[0].self_attn.q_proj.weight
    kept = original.detach().clone()
    lc.inject_lora(model, lc.LoraConfig(r=4, lora_alpha=16, target_modules=["q_proj"], init_lora_weights="olora"))
    layer = model.model.layers[0].self_attn.q_proj
    torch.testing.assert_close(model(TOKENS).logits.detach(), base_logits, rtol=1e-5, atol=1e-5)
    B = layer.lora_B.weight.detach()
    torch.testing.assert_close(B.T @ B, torch.eye(4), rtol=0, atol=1e-5)  # Q's columns
    torch.testing.assert_close(layer.base_layer.weight + layer.delta_weight(), kept, rtol=0, atol=1e-5)
    assert torch.equal(original, kept)  # the residual is a new tensor: a shared base is not written


def test_olora_on_conv1d_is_right_here_and_transposed_in_peft():
    ours, theirs = tiny_gpt2(), tiny_gpt2()
    base_logits = ours(TOKENS).logits.detach()
    kw = dict(r=4, lora_alpha=8, target_modules=["c_attn", "c_proj"])
    lc.inject_lora(ours, lc.LoraConfig(init_lora_weights="olora", **kw))
    torch.testing.assert_close(ours(TOKENS).logits, base_logits, rtol=1e-5, atol=1e-5)
    c_attn = ours.transformer.h[0].attn.c_attn
    assert tuple(c_attn.lora_B.weight.shape) == (96, 4) and tuple(c_attn.lora_A.weight.shape) == (4, 32)

    peft_model = _peft(theirs, fan_in_fan_out=True, **kw)
    ref = peft_model.base_model.model.transformer.h[0].attn.c_attn
    # PEFT 0.21 olora_init: Q, R = qr(base_layer.weight), the (in, out) = (32, 96) Conv1D weight, so
    # lora_B gets Q[:, :r] of shape (in, r) and lora_A gets R[:r] of shape (r, out): both transposed.
    assert tuple(ref.lora_B["default"].weight.shape) == (32, 4)
    assert tuple(ref.lora_A["default"].weight.shape) == (4, 96)
    with pytest.raises(RuntimeError):
        peft_model(TOKENS)  # c_attn's next forward fails on the shapes


def test_olora_on_a_square_conv1d_runs_in_peft_but_no_longer_starts_at_the_base():
    ours, theirs = tiny_gpt2(), tiny_gpt2()
    base_logits = copy.deepcopy(ours)(TOKENS).logits.detach()
    kw = dict(r=4, lora_alpha=8, target_modules=["attn.c_proj"])
    lc.inject_lora(ours, lc.LoraConfig(init_lora_weights="olora", **kw))
    peft_model = _peft(theirs, fan_in_fan_out=True, **kw)
    torch.testing.assert_close(ours(TOKENS).logits, base_logits, rtol=1e-5, atol=1e-5)
    drift = (peft_model(TOKENS).logits - base_logits).abs().max().item()
    assert drift > 1e-3  # PEFT: W - s·QR + s·(QR)ᵀ, not W, at step 0


@pytest.mark.parametrize("target", ["wte"])
def test_olora_on_an_embedding_is_refused(target):
    with pytest.raises(ValueError, match=r"olora.*Linear and Conv1D"):
        lc.inject_lora(tiny_gpt2(), lc.LoraConfig(r=2, target_modules=[target], init_lora_weights="olora"))
