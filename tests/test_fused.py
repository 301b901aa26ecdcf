"""lora_core/fused.py's fast paths (the one-node autograd function, the addmm fallback) and torch.compile
give LoraLinear's plain formula: the same values and gradients (fp64), with dropout, hooks and a bf16 base,
and a whole model on the fused path trains like PEFT's. No timing is ever asserted (docs/performance.md)."""

import copy

import pytest
import torch
import torch.nn as nn
from conftest import tiny_gpt2
from transformers.pytorch_utils import Conv1D

import lora_core as lc
from lora_core import fused
from lora_core.layers import LoraLayer

PATHS = ["one-node", "addmm"]  # LoraLinear's default forward, and its fallback (base_layer(x) + add_lora)


@pytest.fixture(autouse=True)
def one_node_on_small_inputs(monkeypatch):
    """The one-node path starts at 64 tokens (where it pays); these tests use a few, so lower the bar."""
    monkeypatch.setattr(fused, "ONE_NODE_MIN_TOKENS", 1)


def _pair(base: nn.Module, path: str = "one-node", dtype=torch.float64, train_weight: bool = False, **kw):
    """The same LoRA layer twice: one on the fast `path`, one forced onto the plain formula."""
    fast = lc.LoraLinear(base.to(dtype), lc.LoraConfig(r=3, lora_alpha=5, init_lora_weights=False, **kw),
                         generator=torch.Generator().manual_seed(0))
    fast.base_layer.bias.requires_grad_(True)  # a trainable bias (bias="all") must get its gradient too
    fast.base_layer.weight.requires_grad_(train_weight)
    plain = copy.deepcopy(fast)
    plain.forward_path, fast.forward_path = "plain", path
    return fast, plain


def _outputs_and_grads(layer: LoraLayer, x: torch.Tensor, seed: int = 1):
    x = x.detach().clone().requires_grad_(True)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)  # nn.Dropout draws from the global RNG: the same mask for both layers
        y = layer(x)
    (y * torch.linspace(-1, 1, y.numel(), dtype=y.dtype).view_as(y)).sum().backward()
    w = layer.base_layer.weight
    return y.detach(), x.grad, layer.adapter().A.grad, layer.adapter().B.grad, layer.base_layer.bias.grad, w.grad


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("make", [lambda: nn.Linear(7, 5), lambda: Conv1D(5, 7)], ids=["linear", "conv1d"])
@pytest.mark.parametrize("shape", [(7,), (4, 7), (2, 3, 7)], ids=["1d", "2d-trainable-W", "3d"])
@pytest.mark.parametrize("p", [0.0, 0.3], ids=["no-dropout", "dropout-0.3"])
def test_fast_paths_equal_the_plain_formula_with_gradients_fp64(path, make, shape, p):
    fast, plain = _pair(make(), path, lora_dropout=p, train_weight=shape == (4, 7))
    assert fast.adapter().scaling == 5 / 3  # not a power of two: a misplaced scale would show
    x = torch.randn(*shape, dtype=torch.float64)
    got, want = _outputs_and_grads(fast, x), _outputs_and_grads(plain, x)
    for g, w in zip(got, want, strict=True):
        if w is None:
            assert g is None
        else:
            torch.testing.assert_close(g, w, rtol=1e-12, atol=1e-12)


def test_the_one_node_path_is_taken_and_saves_nothing_out_wide():
    fast, _ = _pair(Conv1D(40, 7))
    x = torch.randn(16, 7, dtype=torch.float64, requires_grad=True)
    y = fast(x)
    assert type(y.grad_fn).__name__ == "FusedLoraLinearBackward"
    saved = [t for t in y.grad_fn.saved_tensors if t is not None]
    assert all(t.shape[-1] != 40 or t is fast.base_layer.weight for t in saved)  # x, h, W, A, B: no (N, out)
    fast.train()
    fast.lora_dropout["default"] = nn.Dropout(0.5)  # dropout: the node also gets the dropped input
    assert type(fast(x).grad_fn).__name__ == "FusedLoraLinearBackward"
    fast.base_layer.register_forward_hook(lambda m, i, o: None)  # a hook on the base: it must be called
    assert type(fast(x).grad_fn).__name__ != "FusedLoraLinearBackward"


def test_the_one_node_path_waits_for_enough_tokens(monkeypatch):
    monkeypatch.setattr(fused, "ONE_NODE_MIN_TOKENS", 64)
    fast, _ = _pair(Conv1D(5, 7))
    x = torch.randn(2, 31, 7, dtype=torch.float64, requires_grad=True)  # 62 tokens: below the crossover
    assert type(fast(x).grad_fn).__name__ != "FusedLoraLinearBackward"
    x = torch.randn(2, 32, 7, dtype=torch.float64, requires_grad=True)
    assert type(fast(x).grad_fn).__name__ == "FusedLoraLinearBackward"


@pytest.mark.parametrize("path", PATHS)
def test_fast_paths_pass_gradcheck(path):
    fast, _ = _pair(Conv1D(5, 7), path)
    A, B, bias = fast.adapter().A, fast.adapter().B, fast.base_layer.bias
    x = torch.randn(2, 3, 7, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x, A, B, bias: fast(x), (x, A, B, bias))


@pytest.mark.parametrize("path", PATHS)
def test_fast_paths_with_a_bf16_base_add_in_fp32_like_the_plain_formula(path):
    fast, plain = _pair(nn.Linear(16, 12), path, dtype=torch.bfloat16)
    assert fast.adapter().A.dtype == torch.float32  # factors train in fp32, as in PEFT
    x = torch.randn(4, 16, dtype=torch.bfloat16)
    got, want = _outputs_and_grads(fast, x), _outputs_and_grads(plain, x)
    assert got[0].dtype == torch.bfloat16 and got[1].dtype == torch.bfloat16
    for g, w in zip(got[:5], want[:5], strict=True):
        torch.testing.assert_close(g, w)


def test_forward_path_is_checked():
    layer, _ = _pair(nn.Linear(7, 5))
    with pytest.raises(ValueError, match="forward_path='fast' is not allowed"):
        layer.forward_path = "fast"
    assert layer.forward_path == "one-node"


def test_a_hook_on_lora_b_still_sees_its_call():
    fast, plain = _pair(nn.Linear(7, 5))
    calls = []
    fast.lora_B["default"].register_forward_hook(lambda m, i, o: calls.append(o.shape))
    x = torch.randn(4, 7, dtype=torch.float64)
    torch.testing.assert_close(fast(x), plain(x))
    assert calls == [(4, 5)]
    other, _ = _pair(nn.Linear(7, 5))  # fast by default, no hook of its own
    seen = []                           # a global module hook must see its lora_B called too
    handle = nn.modules.module.register_module_forward_hook(lambda m, i, o: seen.append(m))
    try:
        other(x)
    finally:
        handle.remove()
    assert any(m is other.lora_B["default"] for m in seen)


def test_fused_model_matches_peft_in_training_mode(tokens):
    from peft import LoraConfig as PeftLoraConfig
    from peft import get_peft_model
    from peft.utils import set_peft_model_state_dict

    kw = dict(r=4, lora_alpha=8, target_modules="all-linear", init_lora_weights=False)
    ours = tiny_gpt2()
    lc.inject_lora(ours, lc.LoraConfig(**kw))
    theirs = get_peft_model(tiny_gpt2(), PeftLoraConfig(fan_in_fan_out=True, **kw))
    set_peft_model_state_dict(theirs, lc.adapter_state_dict(ours))
    ours.train()
    theirs.train()
    for model in (ours, theirs):
        for m in model.modules():
            if isinstance(m, nn.Dropout):
                m.p = 0.0
    loss_ours, loss_theirs = ours(tokens, labels=tokens).loss, theirs(tokens, labels=tokens).loss
    loss_ours.backward()
    loss_theirs.backward()
    torch.testing.assert_close(loss_ours, loss_theirs)
    theirs_grads = {n.removeprefix("base_model.model."): p.grad
                    for n, p in theirs.named_parameters() if p.requires_grad}
    for name, p in ours.named_parameters():
        if p.requires_grad:
            torch.testing.assert_close(p.grad, theirs_grads[name], rtol=1e-5, atol=1e-6)


@pytest.mark.slow
def test_a_compiled_lora_model_matches_eager_losses_and_gradients():
    """torch.compile traces LoraLinear's plain formula (its compiler fuses it): same loss and gradients."""
    models = []
    for _ in range(2):
        model = tiny_gpt2()  # eval mode, no dropout: the two runs would draw different masks
        lc.inject_lora(model, lc.LoraConfig(r=4, lora_alpha=8, target_modules="all-linear", init_lora_weights=False),
                       generator=torch.Generator().manual_seed(1))  # the same non-zero A and B in both
        models.append(model)
    eager, compiled = models
    ids = torch.randint(0, eager.config.vocab_size, (2, 16), generator=torch.Generator().manual_seed(0))
    loss_eager = eager(input_ids=ids, labels=ids).loss
    loss_compiled = torch.compile(compiled)(input_ids=ids, labels=ids).loss
    loss_eager.backward()
    loss_compiled.backward()
    torch.testing.assert_close(loss_compiled, loss_eager, rtol=1e-5, atol=1e-6)
    for (name, p), q in zip(eager.named_parameters(), compiled.parameters(), strict=True):
        if p.requires_grad:
            torch.testing.assert_close(q.grad, p.grad, rtol=1e-4, atol=1e-6, msg=name)
