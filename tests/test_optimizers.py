"""LoRA+ and LoRA-FA (lora_core/optimizers.py) against PEFT 0.21's own optimizers, on the same tiny models.

Both models start from one base with our random, non-zero factors copied into PEFT's (load_ours_into_peft also
perturbs the trainable biases), so a step that differs anywhere, in a group, a learning rate or the LoRA-FA
projection, shows up in the compared tensors.
"""

import math

import pytest
import torch
import torch.nn as nn
from conftest import tiny_gpt2, tiny_llama
from peft.optimizers import create_lorafa_optimizer as peft_create_lorafa_optimizer
from peft.optimizers import create_loraplus_optimizer as peft_create_loraplus_optimizer
from test_peft_oracle import build_pair  # our model and PEFT's, one base, our non-zero factors in both

import lora_core as lc
from lora_core.optimizers import (
    LoraFAOptimizer,
    create_lorafa_optimizer,
    create_loraplus_optimizer,
    lorafa_activation_savings,
    lorafa_gradient,
    loraplus_parameter_groups,
)

CASES = {  # id: (model, config)
    # Conv1D layers, every bias trains (LayerNorm's too): groupB_no_decay is full, the embedding group empty
    "gpt2-c_attn_c_proj-bias_all": (tiny_gpt2, dict(r=4, lora_alpha=8, target_modules=["c_attn", "c_proj"],
                                                    bias="all")),
    # a LoRA'd embedding, a saved head (a matrix: groupA) and saved RMSNorms (1-D and decayed: groupB)
    "llama-embedding-saved_norms": (tiny_llama, dict(r=4, lora_alpha=16, use_rslora=True,
                                                     target_modules=["q_proj", "v_proj", "embed_tokens"],
                                                     modules_to_save=["lm_head", "norm"])),
}
LORAPLUS = dict(lr=1e-3, loraplus_lr_ratio=16.0, loraplus_weight_decay=0.1, betas=(0.8, 0.99), eps=1e-7)


def our_name(peft_name: str) -> str:
    """PEFT's parameter name as ours spells it: the same, without the wrapper prefix."""
    return peft_name.removeprefix("base_model.model.")


def group_table(optimizer, model, rename=lambda n: n) -> list[tuple[list[str], float, float]]:
    """(parameter names, lr, weight_decay) for each group, in order."""
    names = {id(p): rename(n) for n, p in model.named_parameters()}
    return [([names[id(p)] for p in g["params"]], g["lr"], g["weight_decay"]) for g in optimizer.param_groups]


def trainable(model, rename=lambda n: n) -> dict[str, torch.Tensor]:
    return {rename(n): p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}


def batches(n: int) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(7)
    return [torch.randint(0, 64, (2, 12), generator=gen) for _ in range(n)]


def train(model, optimizer, data) -> None:
    for tokens in data:
        optimizer.zero_grad()
        model(tokens, labels=tokens).loss.backward()
        optimizer.step()


# --- LoRA+ -----------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("make,kw", CASES.values(), ids=CASES.keys())
def test_loraplus_groups_lrs_and_decay_match_peft(make, kw):
    ours, theirs = build_pair(make, kw)
    ours_opt = create_loraplus_optimizer(ours, torch.optim.AdamW, **LORAPLUS)
    peft_opt = peft_create_loraplus_optimizer(theirs, torch.optim.AdamW, **LORAPLUS)
    table = group_table(ours_opt, ours)
    assert table == group_table(peft_opt, theirs, our_name)
    assert sum(len(names) for names, _, _ in table) == len(trainable(ours))  # every trainable tensor, once
    for ours_group, peft_group in zip(ours_opt.param_groups, peft_opt.param_groups, strict=True):
        settings = (ours_group["betas"], ours_group["eps"])
        assert settings == (peft_group["betas"], peft_group["eps"]) == ((0.8, 0.99), 1e-7)
    (a, a_lr, a_wd), (emb, emb_lr, emb_wd), (b, b_lr, b_wd), (b0, b0_lr, b0_wd) = table
    assert (a_lr, emb_lr, b_lr, b0_lr) == (1e-3, 1e-6, 16e-3, 16e-3)  # loraplus_lr_embedding's default: 1e-6
    assert (a_wd, emb_wd, b_wd, b0_wd) == (0.1, 0.1, 0.1, 0.0)
    assert all(n.endswith("lora_A.default.weight") or n.endswith("lm_head.modules_to_save.default.weight") for n in a)
    if make is tiny_gpt2:  # every bias (LayerNorm's too) goes with B, at B's rate, undecayed
        assert emb == []
        assert all(n.endswith("lora_B.default.weight") for n in b)
        assert b0 and all(n.endswith(".bias") for n in b0)
        assert any(".ln_1." in n for n in b0)
    else:  # RMSNorm is not in transformers' ALL_LAYERNORM_LAYERS, so its (1-D) weight decays with B
        assert emb == ["model.embed_tokens.lora_embedding_A.default", "model.embed_tokens.lora_embedding_B.default"]
        assert any("input_layernorm.modules_to_save" in n for n in b)
        assert b0 == []


@pytest.mark.parametrize("make,kw", CASES.values(), ids=CASES.keys())
def test_loraplus_step_matches_peft(make, kw):
    ours, theirs = build_pair(make, kw)
    settings = LORAPLUS | dict(loraplus_lr_embedding=5e-3)  # big enough for the embedding's step to show
    ours_opt = create_loraplus_optimizer(ours, torch.optim.AdamW, **settings)
    peft_opt = peft_create_loraplus_optimizer(theirs, torch.optim.AdamW, **settings)
    before = trainable(ours)
    train(ours, ours_opt, batches(1))
    train(theirs, peft_opt, batches(1))
    after, peft_after = trainable(ours), trainable(theirs, our_name)
    assert after.keys() == peft_after.keys()
    for name, value in after.items():
        torch.testing.assert_close(value, peft_after[name], rtol=0, atol=1e-6, msg=name)
        assert (value - before[name]).abs().max() > 1e-4, name  # every group really moved
    # Adam's first step is about lr per entry (plus a little decay): B's is the ratio, 16 times A's
    step = {f: max(float((after[n] - before[n]).abs().max()) for n in after if n.endswith(f"proj.{f}.default.weight")
                   or n.endswith(f"c_attn.{f}.default.weight")) for f in ("lora_A", "lora_B")}
    assert 0.9e-3 < step["lora_A"] < 1.2e-3 and 14e-3 < step["lora_B"] < 18e-3


def test_loraplus_groups_are_decided_by_module_type():
    """A module whose name says lora_B but which is not a LoRA factor stays out of B's group."""
    model = nn.Sequential(nn.Linear(8, 8), nn.Linear(8, 8))
    lc.inject_lora(model, lc.LoraConfig(r=2, lora_alpha=4, target_modules=["0"]))
    model.add_module("lora_B_lookalike", nn.Linear(8, 8, bias=False))  # trainable, 2-D, not a factor
    groups = {g: [n for n, _ in params] for g, params in loraplus_parameter_groups(model).items()}
    assert groups == {"groupA": ["0.lora_A.default.weight", "lora_B_lookalike.weight"], "embedding": [],
                      "groupB": ["0.lora_B.default.weight"], "groupB_no_decay": []}


@pytest.mark.parametrize("field,value", [("lr", 0.0), ("lr", -1e-3), ("lr", math.nan), ("loraplus_lr_ratio", 0.0),
                                         ("loraplus_lr_ratio", -2.0), ("loraplus_lr_embedding", 0.0),
                                         ("loraplus_weight_decay", -0.1), ("weight_decay", 0.01)])
def test_loraplus_rejects_bad_values_naming_the_field(field, value):
    model = tiny_gpt2()
    lc.inject_lora(model, lc.LoraConfig(r=2, lora_alpha=4, target_modules=["c_attn"]))
    settings = dict(lr=1e-3, loraplus_lr_ratio=16.0) | {field: value}
    with pytest.raises(ValueError, match=rf"^{field}="):
        create_loraplus_optimizer(model, torch.optim.AdamW, **settings)


def test_loraplus_needs_lora_layers_and_an_optimizer_class():
    with pytest.raises(ValueError, match="no LoRA layers"):
        create_loraplus_optimizer(tiny_gpt2(), torch.optim.AdamW, lr=1e-3, loraplus_lr_ratio=16.0)
    model = tiny_gpt2()
    lc.inject_lora(model, lc.LoraConfig(r=2, lora_alpha=4, target_modules=["c_attn"]))
    with pytest.raises(ValueError, match=r"^optimizer_cls="):
        create_loraplus_optimizer(model, "AdamW", lr=1e-3, loraplus_lr_ratio=16.0)


# --- LoRA-FA ---------------------------------------------------------------------------------------------------------
LORAFA_CASES = {  # id: (model, config, weight_decay)
    "gpt2-c_attn_c_proj_wte-bias_all-decay": (tiny_gpt2, dict(r=4, lora_alpha=8, bias="all",
                                                              target_modules=["c_attn", "c_proj", "wte"]), 0.05),
    "llama-qkv_embedding-rslora": (tiny_llama, dict(r=4, lora_alpha=16, use_rslora=True, target_modules=[
        "q_proj", "k_proj", "v_proj", "embed_tokens"]), 0.0),
}


def lorafa_pair(make, kw, weight_decay, **ours_options):
    """Both models, and each library's LoRA-FA optimizer over its own model.

    The pair draws its factors and bias perturbations from the global RNG (PEFT's draws), so it is built on a
    private, seeded copy of that stream: the same numbers whatever ran before, and the caller's stream untouched.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        ours, theirs = build_pair(make, kw)
    r, alpha = kw["r"], kw["lora_alpha"]
    ours_opt = create_lorafa_optimizer(ours, r, alpha, lr=1e-2, weight_decay=weight_decay, **ours_options)
    peft_opt = peft_create_lorafa_optimizer(theirs, r, alpha, lr=1e-2, weight_decay=weight_decay)
    return ours, theirs, ours_opt, peft_opt


@pytest.mark.parametrize("make,kw,weight_decay", LORAFA_CASES.values(), ids=LORAFA_CASES.keys())
def test_lorafa_three_steps_match_peft(make, kw, weight_decay):
    ours, theirs, ours_opt, peft_opt = lorafa_pair(make, kw, weight_decay)
    before = {n: p.detach().clone() for n, p in ours.named_parameters()}
    train(ours, ours_opt, batches(3))
    train(theirs, peft_opt, batches(3))
    peft_params = {our_name(n): p for n, p in theirs.named_parameters()}
    factors = 0
    for name, p in ours.named_parameters():
        torch.testing.assert_close(p, peft_params[name], rtol=0, atol=1e-6, msg=name)
        if ".lora_A." in name or ".lora_embedding_A." in name:
            assert torch.equal(p, before[name]), name  # A never moves
        if ".lora_B." in name or ".lora_embedding_B." in name:
            # B really trained (an untouched B moves 0; the embedding's projected step is the smallest, ~9e-4)
            assert (p - before[name]).abs().max() > 1e-4, name
            factors += 1
    assert factors == len(lc.lora_layers(ours))


def test_lorafa_bf16_projection_is_what_peft_computes():
    """PEFT rounds the projected gradient through bf16 (autocast); the exact product gives other numbers."""
    make, kw, weight_decay = LORAFA_CASES["gpt2-c_attn_c_proj_wte-bias_all-decay"]
    ours, theirs, ours_opt, peft_opt = lorafa_pair(make, kw, weight_decay, projection_dtype=None)
    train(ours, ours_opt, batches(3))
    train(theirs, peft_opt, batches(3))
    peft_params = {our_name(n): p for n, p in theirs.named_parameters()}
    gap = max(float((p - peft_params[n]).detach().abs().max()) for n, p in ours.named_parameters() if "lora_B" in n)
    assert gap > 1e-5


def test_lorafa_freezes_every_A_and_trains_the_rest():
    make, kw, _ = LORAFA_CASES["gpt2-c_attn_c_proj_wte-bias_all-decay"]
    ours, _ = build_pair(make, kw)
    optimizer = create_lorafa_optimizer(ours, 4, 8, lr=1e-3)
    # by module type, the embedding's A too (PEFT's name test, "lora_A" in name, misses lora_embedding_A)
    assert all(not layer.adapter().A.requires_grad for _, layer in lc.lora_layers(ours))
    trained = {id(p) for g in optimizer.param_groups for p in g["params"]}
    assert trained == {id(p) for p in ours.parameters() if p.requires_grad}
    assert {id(b) for b in optimizer.frozen_A} == {id(layer.adapter().B) for _, layer in lc.lora_layers(ours)}
    assert optimizer.defaults | dict(lr=0) == dict(lr=0, betas=(0.9, 0.999), eps=1e-6, weight_decay=0.0,
                                                   correct_bias=True)


def test_lorafa_gradient_is_the_least_squares_fit_to_the_full_gradient():
    """g̃_B minimises ‖s·g̃_B A − g_W‖: lstsq on the full-weight gradient gives the same matrix."""
    gen = torch.Generator().manual_seed(3)
    out_f, in_f, r, s = 12, 20, 4, 2.5
    A = torch.randn(r, in_f, generator=gen, dtype=torch.float64)
    g_W = torch.randn(out_f, in_f, generator=gen, dtype=torch.float64)
    g_B = s * g_W @ A.T  # what autograd gives B: (out, in) @ (in, r) -> (out, r)
    # X (s A) ≈ g_W  <=>  (s A)ᵀ Xᵀ ≈ g_Wᵀ
    expected = torch.linalg.lstsq((s * A).T, g_W.T).solution.T
    torch.testing.assert_close(lorafa_gradient(g_B, A, s, projection_dtype=None), expected, rtol=1e-6, atol=1e-9)
    # a conv layer's factors, read as matrices: B (out, r, 1, 1), A (r, in, kh, kw)
    A4 = A.view(r, 5, 2, 2)
    g_B4 = g_B.view(out_f, r, 1, 1)
    torch.testing.assert_close(lorafa_gradient(g_B4, A4, s, projection_dtype=None), expected.view(out_f, r, 1, 1))


def test_lorafa_closure_runs_with_autograd_on():
    model = tiny_gpt2()
    lc.inject_lora(model, lc.LoraConfig(r=2, lora_alpha=4, target_modules=["c_attn"], init_lora_weights=False))
    optimizer = create_lorafa_optimizer(model, 2, 4, lr=1e-2)
    tokens = batches(1)[0]

    def closure():
        optimizer.zero_grad()
        loss = model(tokens, labels=tokens).loss
        loss.backward()
        return loss

    B = lc.lora_layers(model)[0][1].adapter().B
    before = B.detach().clone()
    assert torch.isfinite(optimizer.step(closure))
    assert (B - before).abs().max() > 1e-3


def test_lorafa_skips_a_B_without_gradient():
    """A LoRA layer the forward never reached keeps its B (PEFT's step fails on `None @ tensor` there)."""
    model = nn.Sequential(nn.Linear(8, 8), nn.Linear(8, 8))
    lc.inject_lora(model, lc.LoraConfig(r=2, lora_alpha=4, target_modules=["0", "1"], init_lora_weights=False))
    optimizer = create_lorafa_optimizer(model, 2, 4, lr=1e-2)
    used, unused = (model[i].adapter().B for i in (0, 1))
    before = unused.detach().clone(), used.detach().clone()
    model[0](torch.randn(3, 8)).sum().backward()  # only layer 0 runs
    optimizer.step()
    assert torch.equal(unused, before[0]) and not torch.equal(used, before[1])


@pytest.mark.parametrize("field,args", [("lr", dict(lr=0.0)), ("lr", dict(lr=-1.0)), ("r", dict(r=8)),
                                        ("lora_alpha", dict(lora_alpha=16)), ("use_rslora", dict(use_rslora=True)),
                                        ("weight_decay", dict(weight_decay=-0.1))])
def test_lorafa_rejects_bad_values_naming_the_field(field, args):
    model = tiny_gpt2()
    lc.inject_lora(model, lc.LoraConfig(r=2, lora_alpha=4, target_modules=["c_attn"]))
    with pytest.raises(ValueError, match=rf"^{field}="):
        create_lorafa_optimizer(model, **dict(r=2, lora_alpha=4, lr=1e-3) | args)
    assert all(layer.adapter().A.requires_grad for _, layer in lc.lora_layers(model))  # nothing changed


def test_lorafa_refuses_a_model_without_lora_and_a_bad_pairing():
    with pytest.raises(ValueError, match="no LoRA layers"):
        create_lorafa_optimizer(tiny_gpt2(), 2, 4, lr=1e-3)
    A, B, other = (nn.Parameter(torch.randn(*s)) for s in ((2, 8), (6, 2), (6, 2)))
    with pytest.raises(ValueError, match="not in params"):
        LoraFAOptimizer([other], frozen_A={B: (A, 2.0)})
    with pytest.raises(ValueError, match="also in params"):
        LoraFAOptimizer([A, B], frozen_A={B: (A, 2.0)})


# --- what LoRA-FA saves ----------------------------------------------------------------------------------------------
def saved_bytes(layer: nn.Module, x: torch.Tensor) -> int:
    """Bytes autograd keeps for backward during one forward of `layer` (each storage counted once)."""
    storages: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        storages[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        layer(x)
    return sum(storages.values())


@pytest.mark.parametrize("path", ["plain", "addmm", "one-node"])
@pytest.mark.parametrize("base_dtype,dropout", [(torch.float32, 0.0), (torch.float32, 0.1), (torch.bfloat16, 0.0)])
def test_lorafa_activation_savings_is_what_autograd_stops_keeping(path, base_dtype, dropout):
    batch, seq, in_f = 2, 40, 48
    model = nn.Sequential(nn.Linear(in_f, 24, dtype=base_dtype))
    lc.inject_lora(model, lc.LoraConfig(r=4, lora_alpha=8, target_modules=["0"], lora_dropout=dropout))
    layer = model[0].train()
    layer.forward_path = path
    x = torch.randn(batch, seq, in_f, dtype=base_dtype, requires_grad=True)
    with_A = saved_bytes(layer, x)
    layer.adapter().A.requires_grad_(False)
    frozen_A = saved_bytes(layer, x)
    # The plain and addmm paths keep x upcast to the factors' dtype (fp32 over a bf16 base); the one-node path
    # keeps x in the base's dtype and recasts it in the backward. That copy is what goes.
    kept = base_dtype if path == "one-node" else layer.adapter().A.dtype
    assert with_A - frozen_A == lorafa_activation_savings(batch, seq, in_f, kept) == batch * seq * in_f * kept.itemsize


@pytest.mark.parametrize("field,args", [("batch_size", dict(batch_size=0)), ("seq_len", dict(seq_len=2.5)),
                                        ("in_features", dict(in_features=-1)), ("dtype", dict(dtype=torch.int64))])
def test_lorafa_activation_savings_rejects_bad_values(field, args):
    with pytest.raises(ValueError, match=rf"^{field}="):
        lorafa_activation_savings(**dict(batch_size=1, seq_len=1, in_features=1) | args)
