"""Unit tests on tiny models: forward, dropout placement, init modes, merge, disable, Conv2d."""

import copy
import warnings

import pytest
import torch
import torch.nn as nn
from conftest import tiny_gpt2, tiny_llama

import lora_core as lc


def test_fresh_adapter_changes_nothing(tiny_model, tokens):
    base = copy.deepcopy(tiny_model)
    lc.inject_lora(tiny_model, lc.LoraConfig(r=4, target_modules="all-linear"))
    with torch.no_grad():
        torch.testing.assert_close(tiny_model(tokens).logits, base(tokens).logits)
    for _, layer in lc.lora_layers(tiny_model):
        assert float(layer.adapter().B.detach().abs().sum()) == 0.0          # B = 0 ...
        assert float(layer.adapter().A.detach().abs().sum()) > 0.0           # ... A random
        assert float(layer.delta_weight().detach().abs().sum()) == 0.0


def test_forward_is_base_plus_scaled_branch():
    torch.manual_seed(0)
    base = nn.Linear(16, 12)
    layer = lc.LoraLinear(copy.deepcopy(base), lc.LoraConfig(r=3, lora_alpha=6, init_lora_weights=False))
    x = torch.randn(5, 16)
    A, B = layer.adapter().A, layer.adapter().B
    expected = base(x) + (x @ A.T @ B.T) * 2.0  # (5,16)@(16,3)@(3,12), scaling 6/3
    torch.testing.assert_close(layer(x), expected)
    torch.testing.assert_close(layer.delta_weight(), B @ A * 2.0)
    assert layer.delta_weight().shape == (12, 16)


def test_conv1d_delta_is_transposed_only_in_the_weight():
    model = tiny_gpt2()
    lc.inject_lora(model, lc.LoraConfig(r=2, target_modules=["c_attn"], init_lora_weights=False))
    _, layer = lc.lora_layers(model)[0]
    assert layer.fan_in_fan_out and (layer.in_features, layer.out_features) == (32, 96)
    assert layer.delta_weight().shape == (96, 32)                 # (out, in), like nn.Linear
    w0 = layer.base_layer.weight.clone()                          # Conv1D stores (in, out) = (32, 96)
    layer.merge()
    torch.testing.assert_close(layer.base_layer.weight - w0, layer.delta_weight().T)


def test_scaling_rules():
    assert lc.LoraConfig(r=8, lora_alpha=16).scaling == 2.0
    assert lc.LoraConfig(r=64, lora_alpha=16).scaling == 0.25     # seed 002's setup shrinks ΔW 4x
    assert lc.LoraConfig(r=64, lora_alpha=16, use_rslora=True).scaling == 2.0  # 16 / sqrt(64)


def test_dropout_hits_only_the_lora_input_and_only_in_train_mode():
    torch.manual_seed(0)
    layer = lc.LoraLinear(nn.Linear(64, 64), lc.LoraConfig(r=4, lora_dropout=0.5, init_lora_weights=False))
    seen = {}
    layer.lora_A["default"].register_forward_hook(lambda m, i, o: seen.__setitem__("lora_in", i[0].detach().clone()))
    layer.base_layer.register_forward_hook(lambda m, i, o: seen.__setitem__("base_in", i[0].detach().clone()))
    x = torch.randn(8, 64) + 3.0  # no exact zeros in x itself
    A0, B0 = layer.adapter().A.detach().clone(), layer.adapter().B.detach().clone()
    layer.train()
    layer(x)
    zero_share = float((seen["lora_in"] == 0).float().mean())
    assert 0.35 < zero_share < 0.65                               # ~p of the branch input is zeroed
    torch.testing.assert_close(seen["base_in"], x)                # the frozen path sees all of x
    assert torch.equal(layer.adapter().A, A0) and torch.equal(layer.adapter().B, B0)  # not A or B
    layer.eval()
    layer(x)
    torch.testing.assert_close(seen["lora_in"], x)                # eval: no dropout at all


def test_zero_dropout_has_no_dropout_module():
    layer = lc.LoraLinear(nn.Linear(8, 8), lc.LoraConfig(r=2))
    assert isinstance(layer.adapter().dropout, nn.Identity) and layer.adapter().dropout is layer.lora_dropout["default"]


def test_init_variants():
    torch.manual_seed(0)
    base = nn.Linear(64, 32)
    gauss = lc.LoraLinear(copy.deepcopy(base), lc.LoraConfig(r=4, init_lora_weights="gaussian"))
    assert float(gauss.adapter().B.abs().sum()) == 0
    assert abs(float(gauss.adapter().A.std()) - 1 / 4) < 0.05  # PEFT: normal, std 1/r
    kaiming = lc.LoraLinear(copy.deepcopy(base), lc.LoraConfig(r=4))
    bound = 1 / 64 ** 0.5                                         # kaiming_uniform(a=√5): U(±1/√fan_in)
    assert float(kaiming.adapter().A.abs().max()) <= bound
    both = lc.LoraLinear(copy.deepcopy(base), lc.LoraConfig(r=4, init_lora_weights=False))
    assert float(both.adapter().B.abs().sum()) > 0


def test_pissa_moves_top_r_svd_into_the_adapter_and_keeps_the_output(tokens):
    model = tiny_llama()
    base_logits = model(tokens).logits.detach()
    original = model.model.layers[0].self_attn.q_proj.weight
    original_copy = original.detach().clone()
    lc.inject_lora(model, lc.LoraConfig(r=4, lora_alpha=4, target_modules=["q_proj"], init_lora_weights="pissa"))
    layer = model.model.layers[0].self_attn.q_proj
    torch.testing.assert_close(model(tokens).logits.detach(), base_logits, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(layer.base_layer.weight + layer.delta_weight(), original_copy, rtol=1e-5, atol=1e-5)
    s_w = torch.linalg.svdvals(original_copy)
    torch.testing.assert_close(lc.singular_values(layer), s_w[:4], rtol=1e-4, atol=1e-5)
    assert torch.equal(original, original_copy)                   # the old tensor was not written


def test_merge_unmerge_is_exact_and_idempotent_with_warning(tokens):
    model = tiny_gpt2()
    lc.inject_lora(model, lc.LoraConfig(r=4, target_modules="all-linear", init_lora_weights=False))
    before = {n: layer.base_layer.weight for n, layer in lc.lora_layers(model)}
    lc.merge_lora(model)
    with pytest.warns(UserWarning, match="already merged"):
        lc.merge_lora(model)
    lc.unmerge_lora(model)
    with pytest.warns(UserWarning, match="not merged"):
        lc.unmerge_lora(model)
    for n, layer in lc.lora_layers(model):
        assert layer.base_layer.weight is before[n]               # bit-exact: the very same tensor


def test_eval_never_merges():
    model = tiny_gpt2()
    lc.inject_lora(model, lc.LoraConfig(r=4, target_modules=["c_attn"]))
    model.train()
    model.eval()
    assert not any(layer.merged for _, layer in lc.lora_layers(model))


def test_merge_never_writes_the_shared_base_weight():
    model = tiny_gpt2()
    shared = model.transformer.h[0].attn.c_attn.weight
    snapshot = shared.detach().clone()
    lc.inject_lora(model, lc.LoraConfig(r=4, target_modules=["c_attn"], init_lora_weights=False))
    lc.merge_lora(model)
    assert torch.equal(shared, snapshot)


def test_bf16_merge_is_computed_in_fp32():
    torch.manual_seed(0)
    base = nn.Linear(64, 64).to(torch.bfloat16)
    layer = lc.LoraLinear(base, lc.LoraConfig(r=4, lora_alpha=8, init_lora_weights=False))
    assert layer.adapter().A.dtype == torch.float32             # adapters train in fp32
    exact = (base.weight.float() + layer.delta_weight()).to(torch.bfloat16)
    layer.merge()
    assert torch.equal(layer.base_layer.weight, exact)


def test_disable_lora_gives_base_behaviour_and_restores(tokens):
    model = tiny_llama()
    with torch.no_grad():
        base = model(tokens).logits
    lc.inject_lora(model, lc.LoraConfig(r=4, target_modules="all-linear", init_lora_weights=False))
    with torch.no_grad():
        adapted = model(tokens).logits
        with lc.disable_lora(model):
            torch.testing.assert_close(model(tokens).logits, base)
        torch.testing.assert_close(model(tokens).logits, adapted)
        lc.merge_lora(model)
        with lc.disable_lora(model):
            torch.testing.assert_close(model(tokens).logits, base, rtol=1e-5, atol=1e-5)
        assert all(layer.merged for _, layer in lc.lora_layers(model))
        torch.testing.assert_close(model(tokens).logits, adapted, rtol=1e-5, atol=1e-5)


def test_merge_and_unload_leaves_a_plain_model(tiny_model, tokens):
    lc.inject_lora(tiny_model, lc.LoraConfig(r=4, target_modules="all-linear", init_lora_weights=False))
    with torch.no_grad():
        adapted = tiny_model(tokens).logits
    plain = lc.merge_and_unload(tiny_model)
    assert not lc.lora_layers(plain) and not hasattr(plain, "lora_configs")
    with torch.no_grad():
        torch.testing.assert_close(plain(tokens).logits, adapted, rtol=1e-5, atol=1e-5)


def test_remove_lora_gives_back_the_base(tiny_model, tokens):
    with torch.no_grad():
        base = tiny_model(tokens).logits
    lc.inject_lora(tiny_model, lc.LoraConfig(r=4, target_modules="all-linear", init_lora_weights=False))
    lc.remove_lora(tiny_model)
    with torch.no_grad():
        torch.testing.assert_close(tiny_model(tokens).logits, base)


def test_conv2d_lora():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 4, 1))
    x = torch.randn(2, 3, 10, 10)
    lc.inject_lora(net, lc.LoraConfig(r=2, target_modules=["0", "2"], init_lora_weights=False))
    with torch.no_grad():
        out = net(x)
        for _, layer in lc.lora_layers(net):
            assert layer.delta_weight().shape == layer.base_layer.weight.shape
        lc.merge_lora(net)
        torch.testing.assert_close(net(x), out, rtol=1e-5, atol=1e-5)


def test_no_warnings_on_a_clean_inject():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        lc.inject_lora(tiny_gpt2(), lc.LoraConfig(r=4, target_modules=["c_attn"]))


def test_sessions_share_the_frozen_base_but_never_write_it(tokens):
    base = tiny_gpt2()
    with torch.no_grad():
        base_logits = base(tokens).logits
    snapshot = {n: p.detach().clone() for n, p in base.named_parameters()}
    one, two = lc.shared_base_copy(base), lc.shared_base_copy(base)
    assert lc.shares_storage(one, base) == len(list(base.parameters()))  # no weight memory copied
    lc.inject_lora(one, lc.LoraConfig(r=4, target_modules="all-linear", bias="all", init_lora_weights=False))
    lc.inject_lora(two, lc.LoraConfig(r=2, target_modules=["c_attn"], init_lora_weights="pissa"))
    opt = torch.optim.SGD([p for p in one.parameters() if p.requires_grad], lr=0.1)
    one(tokens).logits.square().mean().backward()
    opt.step()                                                     # trains LoRA factors and biases
    lc.merge_lora(one)
    with torch.no_grad():
        two_logits = two(tokens).logits
    lc.merge_lora(two)
    assert all(torch.equal(p, snapshot[n]) for n, p in base.named_parameters())
    assert all(p.requires_grad for p in base.parameters())         # its flags are untouched, too
    with torch.no_grad():
        torch.testing.assert_close(base(tokens).logits, base_logits)
        torch.testing.assert_close(two(tokens).logits, two_logits, rtol=1e-4, atol=1e-4)


# --- a local generator: seeded factors, the global RNG untouched -----------------------------------
def conv_net() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Conv2d(8, 4, 3))


GENERATOR_CASES = {
    "gpt2-conv1d-embedding": (tiny_gpt2, ["c_attn", "wte"]),
    "llama-linear": (tiny_llama, "all-linear"),
    "conv2d": (conv_net, ["0", "2"]),
}


def _factors(make, targets, init, seed) -> dict[str, torch.Tensor]:
    model = make()
    lc.inject_lora(model, lc.LoraConfig(r=2, target_modules=targets, init_lora_weights=init),
                   generator=torch.Generator().manual_seed(seed))
    return {n: p.detach().clone() for n, p in model.named_parameters() if ".lora_" in n}


@pytest.mark.parametrize("init", [True, False, "gaussian"], ids=["kaiming", "random-b", "gaussian"])
@pytest.mark.parametrize("make,targets", GENERATOR_CASES.values(), ids=GENERATOR_CASES.keys())
def test_a_generator_seeds_the_factors_and_leaves_the_global_rng_alone(make, targets, init):
    models = [make() for _ in range(3)]  # built before the state is read: conv_net draws from the global RNG
    state = torch.get_rng_state()
    runs = []
    for model, seed in zip(models, (3, 3, 4), strict=True):
        lc.inject_lora(model, lc.LoraConfig(r=2, target_modules=targets, init_lora_weights=init),
                       generator=torch.Generator().manual_seed(seed))
        runs.append({n: p.detach() for n, p in model.named_parameters() if ".lora_" in n})
    assert torch.equal(torch.get_rng_state(), state)               # not one draw from the global stream
    assert runs[0].keys() == runs[1].keys() and all(torch.equal(t, runs[1][n]) for n, t in runs[0].items())
    assert any(not torch.equal(t, runs[2][n]) for n, t in runs[0].items())
    assert all(torch.isfinite(t).all() for t in runs[0].values())  # every factor was filled, none left empty


def test_a_generator_gives_the_init_each_mode_promises():
    model = tiny_llama()
    lc.inject_lora(model, lc.LoraConfig(r=4, target_modules=["q_proj"], init_lora_weights=False),
                   generator=torch.Generator().manual_seed(0))
    _, layer = lc.lora_layers(model)[0]
    A, B = layer.adapter().A, layer.adapter().B                 # nn.Linear's Kaiming: |w| <= 1/sqrt(fan_in)
    assert 0 < float(A.abs().max()) <= 32 ** -0.5 and 0 < float(B.abs().max()) <= 4 ** -0.5
    emb = tiny_gpt2()
    lc.inject_lora(emb, lc.LoraConfig(r=4, target_modules=["wte"]), generator=torch.Generator().manual_seed(0))
    _, layer = lc.lora_layers(emb)[0]
    assert float(layer.adapter().A.abs().sum()) == 0 and float(layer.adapter().B.std()) > 0.5  # A 0, B N(0, 1)
    pissa = [_factors(tiny_gpt2, ["c_attn"], "pissa", seed) for seed in (0, 1)]  # an SVD: nothing random
    assert all(torch.equal(t, pissa[1][n]) for n, t in pissa[0].items())


def test_a_generator_fills_float64_factors_through_a_cpu_draw():
    model = tiny_llama().to(torch.float64)
    lc.inject_lora(model, lc.LoraConfig(r=2, target_modules=["q_proj"]), generator=torch.Generator().manual_seed(0))
    _, layer = lc.lora_layers(model)[0]
    assert layer.adapter().A.dtype == torch.float64 and float(layer.adapter().A.abs().sum()) > 0
