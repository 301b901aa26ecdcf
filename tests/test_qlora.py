"""QLoRA from scratch: NF4 storage, on-the-fly dequantization, LoRA training on a 4-bit base."""

import pytest
import torch
import torch.nn.functional as F
from conftest import tiny_gpt2, tiny_llama

import lora_core as lc
from lora_core import quant


def test_nf4_linear_matches_a_linear_on_its_dequantized_weight_in_value_and_gradient():
    torch.manual_seed(0)
    w, b = torch.randn(48, 64) * 0.02, torch.randn(48)
    layer = lc.NF4Linear(w, b)
    W = quant.dequantize(quant.quantize_blockwise(w, quant.nf4_codebook(), 64))
    torch.testing.assert_close(layer.dequantized(), W)
    x = torch.randn(5, 64, requires_grad=True)
    x2 = x.detach().clone().requires_grad_(True)
    layer(x).square().sum().backward()
    F.linear(x2, W, b).square().sum().backward()
    torch.testing.assert_close(x.grad, x2.grad)
    bits = 8 * (layer.packed.numel() + layer.absmax.numel() * 4) / w.numel()
    assert bits == pytest.approx(4.5)                               # 4-bit codes + one fp32 per 64


def test_quantize_model_keeps_the_base_and_stays_close(tokens):
    base = tiny_llama()
    snapshot = {n: p.detach().clone() for n, p in base.named_parameters()}
    q = lc.quantize_model(base)
    assert sum(isinstance(m, lc.NF4Linear) for m in q.modules()) == 2 * 7   # q,k,v,o,gate,up,down × 2
    assert all(torch.equal(p, snapshot[n]) for n, p in base.named_parameters())
    assert lc.weight_bytes(q) < lc.weight_bytes(base)
    with torch.no_grad():
        a, b = base(tokens).logits, q(tokens).logits
    assert 0 < float((a - b).abs().max()) < 0.5 * float(a.abs().max())


def test_lora_trains_on_an_nf4_base_and_refuses_to_merge(tokens):
    q = lc.quantize_model(tiny_gpt2())
    names = lc.inject_lora(q, lc.LoraConfig(r=4, lora_alpha=8, target_modules="all-linear"))
    assert len(names) == 8                                          # Conv1D layers became NF4Linear
    params = [p for p in q.parameters() if p.requires_grad]
    assert params and all(".lora_" in n for n, p in q.named_parameters() if p.requires_grad)
    opt = torch.optim.Adam(params, lr=1e-2)
    losses = []
    for _ in range(10):
        loss = F.cross_entropy(q(tokens).logits[:, :-1].flatten(0, 1), tokens[:, 1:].flatten())
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]
    with pytest.raises(ValueError, match="merge is not allowed on a 4-bit"):
        lc.merge_lora(q)


def test_precisions_and_bad_precision():
    base = tiny_gpt2()
    assert lc.base_in_precision(base, "fp32") is base
    assert next(lc.base_in_precision(base, "bf16").parameters()).dtype == torch.bfloat16
    assert next(base.parameters()).dtype == torch.float32
    with pytest.raises(ValueError, match="precision='int3'"):
        lc.base_in_precision(base, "int3")
