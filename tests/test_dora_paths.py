"""DoRA's forward paths in one LoRA layer against PEFT 0.21: "plain" (PEFT's formula as written), "addmm" (the
cheap form through autograd) and "one-node" (FusedDoraLinear), outputs and gradients; dropout and hooks send the
layer down the literal form. The timing of the one-node path against PEFT is printed, never asserted.

Helpers (perturbed magnitudes, PEFT's twin, gradient tolerance) are the model-level oracle's,
tests/test_peft_oracle_dora.py.
"""

import statistics
import time

import pytest
import torch
import torch.nn as nn
from test_peft_oracle_dora import PREFIX, assert_grad_close, peft_twin, perturb_magnitudes
from transformers.pytorch_utils import Conv1D

import lora_core as lc
from lora_core import fused


def linear_pair(base: nn.Module, bias_trains: bool, dropout: float = 0.0, r: int = 4):
    """A one-layer net with a DoRA adapter (non-zero B, perturbed m), ours and PEFT's, the same numbers in both."""
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = base

        def forward(self, x):
            return self.lin(x)

    kw = dict(r=r, lora_alpha=2 * r + 3, target_modules=["lin"], init_lora_weights=False, lora_dropout=dropout,
              bias="all" if bias_trains else "none")
    ours = Net()
    lc.inject_lora(ours, lc.LoraConfig(use_dora=True, **kw), generator=torch.Generator().manual_seed(0))
    perturb_magnitudes(ours)
    theirs = peft_twin(Net(), kw)
    theirs.base_model.model.load_state_dict(ours.state_dict(), strict=True)
    return ours, theirs


def dense(kind: str, n_in: int = 48, n_out: int = 40) -> nn.Module:
    g = torch.Generator().manual_seed(6)
    with torch.random.fork_rng(devices=[]):
        layer = Conv1D(n_out, n_in) if kind == "conv1d" else nn.Linear(n_in, n_out, bias=kind != "linear-nobias")
    with torch.no_grad():
        for p in layer.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.2)
    return layer


@pytest.mark.parametrize("train", [False, True])
@pytest.mark.parametrize("path", ["one-node", "addmm", "plain"])
@pytest.mark.parametrize("kind", ["linear", "linear-nobias", "conv1d"])
def test_each_forward_path_matches_peft_outputs_and_gradients(kind, path, train):
    """128 tokens, enough for the one-node path (FusedDoraLinear) on CPU; "addmm" is the cheap form through autograd,
    "plain" PEFT's formula as written. Outputs and the gradients of x, A, B, m and the bias agree with PEFT's."""
    ours, theirs = linear_pair(dense(kind), bias_trains=kind != "linear-nobias")
    layer = ours.lin
    layer.forward_path = path
    x = torch.randn(4, 32, 48, generator=torch.Generator().manual_seed(9))
    grads, outs = [], []
    for model in (ours.train(train), theirs.train(train)):
        xi = x.clone().requires_grad_(True)
        out = model(xi)
        out.backward(torch.randn(out.shape, generator=torch.Generator().manual_seed(10)))
        named = {n.removeprefix(PREFIX): p.grad for n, p in model.named_parameters() if p.requires_grad}
        grads.append(named | {"x": xi.grad})
        outs.append(out.detach())
        if model is ours:
            fused_node = type(out.grad_fn).__name__ == "FusedDoraLinearBackward"
            assert fused_node == (path == "one-node"), out.grad_fn
    assert fused.forward(layer, x) is None  # the plain-LoRA fast paths never take a DoRA adapter
    torch.testing.assert_close(outs[0], outs[1], rtol=1e-5, atol=1e-6)
    assert set(grads[0]) == set(grads[1]) and any("magnitude" in n for n in grads[0])
    for name, g in grads[1].items():
        assert_grad_close(grads[0][name], g, name)


def test_with_dropout_in_train_mode_the_literal_form_runs_and_matches_peft():
    """Dropout active: x̃ feeds a second product W x̃ (PEFT's), so no cheap form; the same seeded masks as PEFT's."""
    ours, theirs = linear_pair(dense("linear"), bias_trains=True, dropout=0.3)
    x = torch.randn(4, 32, 48, generator=torch.Generator().manual_seed(9))
    outs = []
    for model in (ours.train(), theirs.train()):
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(3)
            outs.append(model(x))
    assert type(outs[0].grad_fn).__name__ != "FusedDoraLinearBackward"
    torch.testing.assert_close(outs[0], outs[1], rtol=1e-5, atol=1e-6)
    with torch.no_grad():  # eval: dropout is off and the fused node runs, still PEFT's numbers
        torch.testing.assert_close(ours.eval()(x), theirs.eval()(x), rtol=1e-5, atol=1e-6)


def test_one_node_dora_timing_against_peft(capsys):
    """Forward + backward of a DoRA Linear 576 -> 576 (bias), batch 8 x 128, r = 8, train mode without dropout:
    ours (FusedDoraLinear) and PEFT's, interleaved in one process. Printed, never asserted (a shared CPU)."""
    base = nn.Linear(576, 576)
    ours, theirs = linear_pair(base, bias_trains=False, r=8)
    x = torch.randn(8, 128, 576, generator=torch.Generator().manual_seed(1))
    grad = torch.randn(8, 128, 576, generator=torch.Generator().manual_seed(2))
    times = {"ours": [], "peft": []}
    for i in range(12):
        for key, model in (("ours", ours.train()), ("peft", theirs.train())):
            xi = x.clone().requires_grad_(True)
            start = time.perf_counter()
            model(xi).backward(grad)
            if i >= 2:  # two warm-up rounds
                times[key].append(time.perf_counter() - start)
    ours_s, peft_s = (statistics.median(times[k]) for k in ("ours", "peft"))
    with capsys.disabled():
        print(f"\nDoRA Linear 576->576, 8x128 tokens, r=8, fwd+bwd, {torch.get_num_threads()} thread(s): ours "
              f"{ours_s * 1e3:.1f} ms, PEFT {peft_s * 1e3:.1f} ms, ratio ours/PEFT {ours_s / peft_s:.2f}")


def test_a_hook_on_lora_b_sees_it_called_and_the_numbers_stay_peft_s():
    """The cheap forms multiply by B's weight directly; a hook on lora_B sends the layer down the literal form."""
    ours, theirs = linear_pair(dense("linear"), bias_trains=False)
    calls = []
    ours.lin.lora_B["default"].register_forward_hook(lambda *_: calls.append(1))
    x = torch.randn(4, 32, 48, generator=torch.Generator().manual_seed(9))
    with torch.no_grad():
        torch.testing.assert_close(ours.eval()(x), theirs.eval()(x), rtol=1e-5, atol=1e-6)
    assert calls == [1]
