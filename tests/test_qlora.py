"""QLoRA from scratch: NF4 storage, on-the-fly dequantization, LoRA training on a 4-bit base."""

import pytest
import torch
import torch.nn.functional as F
from conftest import tiny_gpt2, tiny_llama

import lora_core as lc
from lora_core.quant import codebook


def test_nf4_linear_matches_a_linear_on_its_dequantized_weight_in_value_and_gradient():
    torch.manual_seed(0)
    w, b = torch.randn(48, 64) * 0.02, torch.randn(48)
    layer = lc.NF4Linear(w, b)
    W = codebook.dequantize(codebook.quantize_blockwise(w, codebook.nf4_codebook(), 64))
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
    assert lc.quant.weight_bytes(q) < lc.quant.weight_bytes(base)
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
    assert lc.quant.base_in_precision(base, "fp32") is base
    assert next(lc.quant.base_in_precision(base, "bf16").parameters()).dtype == torch.bfloat16
    assert next(base.parameters()).dtype == torch.float32
    with pytest.raises(ValueError, match="precision='int3'"):
        lc.quant.base_in_precision(base, "int3")


def test_lora_on_an_nf4_base_never_rebuilds_its_weight(monkeypatch, tokens):
    q = lc.quantize_model(tiny_gpt2())
    rebuilt = []
    dequantized = lc.NF4Linear.dequantized
    monkeypatch.setattr(lc.NF4Linear, "dequantized",
                        lambda self, dtype=torch.float32: rebuilt.append(self) or dequantized(self, dtype))

    def no_weight(self):
        raise AssertionError("NF4Linear.weight was read: the whole (out, in) matrix would be dequantized")

    monkeypatch.setattr(lc.NF4Linear, "weight", property(no_weight))
    names = lc.inject_lora(q, lc.LoraConfig(r=4, lora_alpha=8, target_modules="all-linear"),
                           generator=torch.Generator().manual_seed(0))
    book = lc.ledger_of(q)                                          # the ledger reads shapes, not W
    assert rebuilt == [] and len(names) == 8
    assert {row.weight_params for row in book.rows} == {32 * 96, 32 * 32, 32 * 128}
    for _, layer in lc.lora_layers(q):                              # device and dtype came for free
        assert layer.adapter().A.dtype == torch.float32 and layer.adapter().A.device.type == "cpu"
        assert not layer.fan_in_fan_out                             # NF4 stores W as (out, in)
    with torch.no_grad():
        q(tokens)
    assert len(rebuilt) == len(names)                               # the forward rebuilds each W once


def test_merge_refusal_on_nf4_leaves_every_layer_unmerged():
    q = lc.quantize_model(tiny_gpt2())
    lc.inject_lora(q, lc.LoraConfig(r=2, target_modules="all-linear", init_lora_weights=False))
    with pytest.raises(ValueError, match="Merge into a full-precision copy"):
        lc.merge_lora(q)
    assert not any(layer.merged for _, layer in lc.lora_layers(q))
    with pytest.raises(ValueError, match="merge is not allowed on a 4-bit"):
        lc.merge_and_unload(q)
    assert len(lc.lora_layers(q)) == 8                              # still adapted, nothing unloaded
