"""DoRA (use_dora=True, arXiv 2402.09353) in lora_core's LoRA layers against PEFT 0.21, on the same weights.

Models: tiny GPT-2 (Conv1D), tiny Llama (Linear, with biases where a case needs them) and a small module with an
Embedding, a strided Conv2d and a Linear. Every comparison uses non-zero B (init_lora_weights=False), alpha != r,
non-zero base biases, and magnitudes moved away from ‖W + ΔW‖ (at init s = 1, where DoRA's extra term is plain
LoRA's and a wrong s would not show). Ours are loaded into PEFT's model by state_dict, whose keys are the same.
One layer's three forward paths (plain, addmm, one-node) against PEFT, and their timing: tests/test_dora_paths.py.
"""

import copy
import functools

import pytest
import torch
import torch.nn as nn
from conftest import tiny_gpt2, tiny_gpt2_config, tiny_llama
from peft import LoraConfig as PeftLoraConfig
from peft import PeftModel, get_peft_model

import lora_core as lc
from lora_core import dora, dora_layer

PREFIX = "base_model.model."
TOKENS = torch.randint(0, 64, (2, 12), generator=torch.Generator().manual_seed(1))


class Small(nn.Module):
    """An Embedding, a strided Conv2d (with bias) and a Linear: the layer types PEFT's DoRA covers besides Conv1D."""

    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(40, 16)
        self.conv = nn.Conv2d(3, 6, 3, stride=2, padding=1)
        self.lin = nn.Linear(16, 12)

    def forward(self, ids: torch.Tensor, img: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.lin(self.emb(ids)).flatten(1), self.conv(img).flatten(1)], dim=1)


def small(seed: int = 0) -> Small:
    g = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]):
        model = Small()
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.3)
    return model.eval()


SMALL_INPUT = (torch.randint(0, 40, (2, 5), generator=torch.Generator().manual_seed(2)),
               torch.randn(2, 3, 9, 9, generator=torch.Generator().manual_seed(3)))
llama_biased = functools.partial(tiny_llama, attention_bias=True, mlp_bias=True)


def feed(model: nn.Module) -> torch.Tensor:
    """The model's output on its fixed input: logits for the tiny LMs, the concatenated outputs for Small."""
    base = model.get_base_model() if isinstance(model, PeftModel) else model
    return model(*SMALL_INPUT) if isinstance(base, Small) else model(TOKENS).logits


CASES = {  # id: (model, config); each case also runs with a non-zero lora_dropout where it says so
    "gpt2-c_attn": (tiny_gpt2, dict(r=4, lora_alpha=8, target_modules=["c_attn"])),
    "gpt2-attn_mlp-rslora-bias_all": (tiny_gpt2, dict(r=2, lora_alpha=16, target_modules=["c_attn", "c_proj", "c_fc"],
                                                      use_rslora=True, bias="all")),
    "gpt2-c_proj-bias_lora_only-dropout": (tiny_gpt2, dict(r=4, lora_alpha=6, target_modules=["c_proj"],
                                                           bias="lora_only", lora_dropout=0.1)),
    "gpt2-c_attn-wte": (tiny_gpt2, dict(r=4, lora_alpha=8, target_modules=["c_attn", "wte"])),
    "llama-default_targets": (tiny_llama, dict(r=4, lora_alpha=16, target_modules=None)),
    "llama-qvo_mlp-rslora-dropout": (llama_biased, dict(r=8, lora_alpha=4, lora_dropout=0.2, use_rslora=True,
                                                        target_modules=["q_proj", "v_proj", "o_proj", "gate_proj",
                                                                        "down_proj"])),
    "llama-all_linear-bias_all": (llama_biased, dict(r=4, lora_alpha=8, target_modules="all-linear", bias="all")),
    "small-emb_conv_lin-dropout": (small, dict(r=2, lora_alpha=5, target_modules=["emb", "conv", "lin"],
                                               lora_dropout=0.25)),
    "small-conv-bias_lora_only": (small, dict(r=3, lora_alpha=4, target_modules=["conv"], bias="lora_only")),
}
PARAMS = dict(argnames="make,kw", argvalues=CASES.values(), ids=CASES.keys())


def with_biases(model: nn.Module, seed: int = 4) -> nn.Module:
    """Non-zero biases (the tiny models start at 0), so DoRA's unscaled bias really is compared."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("bias"):
                p.copy_(torch.randn(p.shape, generator=g) * 0.2)
    return model


def peft_twin(base: nn.Module, kw: dict, adapter_name: str = "default") -> PeftModel:
    with torch.random.fork_rng(devices=[]):  # PEFT draws its factors from the global RNG: a private copy of it
        return get_peft_model(copy.deepcopy(base), PeftLoraConfig(use_dora=True, **kw), adapter_name=adapter_name)


def perturb_magnitudes(model: nn.Module, seed: int = 5) -> None:
    """m away from ‖W + ΔW‖, so s = m / ‖W + ΔW‖ is not 1 (at 1, DoRA's output is plain LoRA's)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if ".lora_magnitude_vector." in name:
                p.mul_(1 + 0.5 * torch.rand(p.shape, generator=g))


def build_pair(make, kw: dict) -> tuple[nn.Module, PeftModel]:
    """Our model and PEFT's from one base: our factors (non-zero B) and perturbed magnitudes loaded into PEFT's."""
    kw = dict(init_lora_weights=False, **kw)
    base = with_biases(make())
    ours = copy.deepcopy(base)
    lc.inject_lora(ours, lc.LoraConfig(use_dora=True, **kw), generator=torch.Generator().manual_seed(0))
    perturb_magnitudes(ours)
    theirs = peft_twin(base, kw)
    theirs.base_model.model.load_state_dict(ours.state_dict(), strict=True)  # the same keys, all of them
    return ours.eval(), theirs.eval()


def assert_grad_close(got: torch.Tensor, want: torch.Tensor, name: str, tol: float = 1e-5) -> None:
    """Equal to rounding: entrywise within `tol` relative, or `tol` of the gradient's largest entry (fp32 sums)."""
    torch.testing.assert_close(got, want, rtol=tol, atol=tol * float(want.abs().max()), msg=labelled(name))


def labelled(label):
    """assert_close's message with what was compared in front."""
    return lambda message: f"{label}: {message}"


def trainable_names(model: nn.Module) -> set[str]:
    return {n.removeprefix(PREFIX) for n, p in model.named_parameters() if p.requires_grad}


def magnitudes(model: nn.Module) -> dict[str, torch.Tensor]:
    return {n.removeprefix(PREFIX): p for n, p in model.named_parameters() if ".lora_magnitude_vector." in n}


# --- building: keys, initial magnitudes, counts -------------------------------------------------------------------
@pytest.mark.parametrize("init", [False, True])
@pytest.mark.parametrize(**PARAMS)
def test_state_dict_and_initial_magnitudes_are_peft_s(make, kw, init):
    """Drawn from the same global RNG state, our factors are PEFT's, and so is m = ‖W + ΔW‖ computed from them:
    Conv1D's (in, out) weight, the Embedding's transposed table and the Conv2d's (1, out, 1, 1) shape included."""
    kw = dict(kw, init_lora_weights=init)
    base = with_biases(make())
    ours = copy.deepcopy(base)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(11)
        lc.inject_lora(ours, lc.LoraConfig(use_dora=True, **kw))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(11)
        theirs = get_peft_model(copy.deepcopy(base), PeftLoraConfig(use_dora=True, **kw))
    peft_state = {k.removeprefix(PREFIX): t for k, t in theirs.state_dict().items()}
    assert set(ours.state_dict()) == set(peft_state)
    ms = magnitudes(ours)
    assert ms and all(k.endswith(".lora_magnitude_vector.default.weight") for k in ms)
    for key, t in ours.state_dict().items():
        torch.testing.assert_close(t, peft_state[key], rtol=1e-6, atol=1e-7, msg=labelled(key))
    if init:  # B = 0 (an Embedding's A = 0): m is the norm of W's rows, one per output feature
        for name, layer in lc.lora_layers(ours):
            rows = dora_layer.unmerged_weight(layer).flatten(1).norm(dim=1)
            torch.testing.assert_close(layer.adapter().magnitude.flatten(), rows, rtol=1e-6, atol=0, msg=labelled(name))


@pytest.mark.parametrize(**PARAMS)
def test_trainable_counts_after_inject_match_peft(make, kw):
    ours, theirs = build_pair(make, kw)
    assert trainable_names(ours) == trainable_names(theirs)
    assert lc.trainable_parameters(ours) == theirs.get_nb_trainable_parameters()


@pytest.mark.parametrize(**PARAMS)
def test_set_adapter_trains_the_magnitudes_as_peft_does(make, kw):
    ours, theirs = build_pair(make, kw)
    lc.set_adapter(ours, "default")
    assert {n for n in trainable_names(theirs) if "magnitude" in n} == set(magnitudes(ours))
    assert trainable_names(ours) == trainable_names(theirs)
    assert lc.trainable_parameters(ours) == theirs.get_nb_trainable_parameters()
    ledger = lc.ledger_of(ours)
    assert ledger.lora_params == sum(p.numel() for n, p in theirs.named_parameters() if ".lora_" in n)
    assert all(row.magnitude_per_module == row.out_features for row in ledger.rows)
    assert ledger.other_trainable == sum(p.numel() for n, p in theirs.named_parameters()
                                         if p.requires_grad and ".lora_" not in n)


def test_the_ledger_on_the_meta_device_counts_the_magnitudes():
    cfg = dict(r=4, lora_alpha=8, target_modules=["c_attn", "wte"], init_lora_weights=False)
    ledger = lc.count_lora_parameters(tiny_gpt2_config(), lc.LoraConfig(use_dora=True, **cfg))
    plain = lc.count_lora_parameters(tiny_gpt2_config(), lc.LoraConfig(**cfg))
    assert ledger.lora_params - plain.lora_params == 32 + 2 * 96  # wte: dim 32; c_attn: out 96, in 2 blocks
    theirs = peft_twin(tiny_gpt2(), cfg)
    assert ledger.lora_params == sum(p.numel() for n, p in theirs.named_parameters() if ".lora_" in n)
    assert "DoRA m" in ledger.records()[0] and "+96" in str(ledger)


# --- forward and backward ---------------------------------------------------------------------------------------
@pytest.mark.parametrize(**PARAMS)
def test_outputs_match_peft(make, kw):
    """Eval mode (dropout off, the cheap form where the layer allows it) against PEFT's DoRA forward."""
    ours, theirs = build_pair(make, kw)
    with torch.no_grad():
        got, want, base = feed(ours), feed(theirs), feed(with_biases(make()))
    # atol 1e-5, as the plain-LoRA oracle tests: on an AMD EPYC host 6 of 1536 logits of the rsLoRA, bias="all"
    # case differ by 2.6e-6 (two orders of fp32 rounding under a scaling of 16/√2); on the earlier host, by < 1e-6
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    assert (got - base).abs().max() > 1e-2  # the adapter really changes the output


@pytest.mark.parametrize("path", ["one-node", "plain"])
@pytest.mark.parametrize(**PARAMS)
def test_gradients_match_peft_in_train_mode(make, kw, path):
    """One backward in train mode: dropout (where p > 0) draws the same masks from one seeded RNG state, so the
    literal form with PEFT's second product runs; without dropout the cheap form (or, "plain", the literal one)."""
    ours, theirs = build_pair(make, kw)
    for _, layer in lc.lora_layers(ours):
        if isinstance(layer, lc.LoraLinear):
            layer.forward_path = path
    outs = []
    for model in (ours.train(), theirs.train()):
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(7)
            out = feed(model)
        weights = torch.randn(out.shape, generator=torch.Generator().manual_seed(8))
        (out * weights).sum().backward()
        outs.append(out.detach())
    torch.testing.assert_close(outs[0], outs[1], rtol=1e-5, atol=1e-6)
    ours_params = dict(ours.named_parameters())
    trained = {n.removeprefix(PREFIX): p for n, p in theirs.named_parameters() if p.requires_grad}
    assert set(trained) == trainable_names(ours) and any("magnitude" in n for n in trained)
    for name, p in trained.items():  # through two blocks and their LayerNorms: to 1e-4 of the largest entry
        assert_grad_close(ours_params[name].grad, p.grad, name, 1e-4)
    assert all(float(ours_params[n].grad.abs().sum()) > 0 for n in magnitudes(ours))


def test_a_bf16_base_matches_peft_to_one_rounding():
    """fp32 factors and magnitudes on a bf16 base (PEFT's autocast_adapter_dtype): the DoRA part in fp32, rounded
    once to bf16 at the end, as PEFT's Linear.forward does."""
    ours, theirs = build_pair(lambda: llama_biased().to(torch.bfloat16),
                              dict(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "down_proj"]))
    assert {p.dtype for p in magnitudes(ours).values()} == {torch.float32}
    with torch.no_grad():
        got, want = feed(ours), feed(theirs)
    assert got.dtype == torch.bfloat16
    torch.testing.assert_close(got, want, rtol=2**-7, atol=2**-8)


# --- merge -------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(**PARAMS)
def test_merge_matches_peft_and_unmerge_is_exact(make, kw):
    ours, theirs = build_pair(make, kw)
    originals = {name: layer.base_layer.weight.detach().clone() for name, layer in lc.lora_layers(ours)}
    with torch.no_grad():
        unmerged = feed(ours)
        lc.merge_lora(ours)
        merged = feed(ours)
        theirs.merge_adapter()
    torch.testing.assert_close(merged, unmerged, rtol=1e-5, atol=1e-5)  # W' x + b is the DoRA forward
    peft_weights = dict(theirs.named_parameters())
    for name, layer in lc.lora_layers(ours):
        torch.testing.assert_close(layer.base_layer.weight, peft_weights[f"{PREFIX}{name}.base_layer.weight"],
                                   rtol=1e-6, atol=1e-6, msg=labelled(name))
    lc.unmerge_lora(ours)
    theirs.unmerge_adapter()
    for name, layer in lc.lora_layers(ours):
        assert torch.equal(layer.base_layer.weight, originals[name]), name  # ours: W itself comes back
        # PEFT divides by m / ‖W + ΔW‖ and subtracts ΔW again: W only to rounding (dora.unmerged_weight)
        torch.testing.assert_close(peft_weights[f"{PREFIX}{name}.base_layer.weight"], originals[name],
                                   rtol=1e-5, atol=1e-5, msg=labelled(name))
    with torch.no_grad():
        torch.testing.assert_close(feed(ours), unmerged, rtol=0, atol=0)


# --- named adapters ------------------------------------------------------------------------------------------------
CFG_X = dict(r=4, lora_alpha=8, target_modules=["c_attn"], init_lora_weights=False)
CFG_Y = dict(r=2, lora_alpha=16, use_rslora=True, target_modules=["c_attn", "c_fc"], init_lora_weights=False)


def plain_then_dora():
    """A plain adapter x (c_attn), then a DoRA adapter y (c_attn + c_fc) added to it, ours and PEFT's."""
    base = with_biases(tiny_gpt2())
    ours = copy.deepcopy(base)
    g = torch.Generator().manual_seed(0)
    lc.inject_lora(ours, lc.LoraConfig(**CFG_X), generator=g, adapter_name="x")
    lc.add_adapter(ours, "y", lc.LoraConfig(use_dora=True, **CFG_Y), generator=g)
    perturb_magnitudes(ours)
    with torch.random.fork_rng(devices=[]):
        theirs = get_peft_model(copy.deepcopy(base), PeftLoraConfig(**CFG_X), adapter_name="x")
        theirs.add_adapter("y", PeftLoraConfig(use_dora=True, **CFG_Y))
    theirs.base_model.model.load_state_dict(ours.state_dict(), strict=True)
    return ours.eval(), theirs.eval()


def logits(model):
    with torch.no_grad():
        return feed(model)


def test_an_added_dora_adapter_is_frozen_as_in_peft():
    ours, theirs = plain_then_dora()
    assert trainable_names(ours) == trainable_names(theirs)


def test_a_dora_adapter_added_to_a_plain_model_works_like_peft_s():
    ours, theirs = plain_then_dora()
    assert set(magnitudes(ours)) == {f"transformer.h.{i}.{m}.lora_magnitude_vector.y.weight"
                                     for i in (0, 1) for m in ("attn.c_attn", "mlp.c_fc")}
    torch.testing.assert_close(logits(ours), logits(theirs), rtol=1e-5, atol=1e-6)  # x alone
    for active in (["y"], ["x", "y"], ["y", "x"]):  # DoRA rescales what came before it, plain LoRA's branch too
        lc.set_adapter(ours, active)
        theirs.base_model.set_adapter(active)
        assert trainable_names(ours) == trainable_names(theirs)
        torch.testing.assert_close(logits(ours), logits(theirs), rtol=1e-5, atol=1e-6, msg=labelled(active))
    lc.set_adapter(ours, ["x", "y"])  # the order counts: y rescales x's branch, so W' = s_y (W + ΔW_x + ΔW_y)
    theirs.base_model.set_adapter(["x", "y"])
    unmerged = logits(ours)
    with torch.no_grad():
        lc.merge_lora(ours, ["x", "y"])  # x first: y's norm must still be of the unmerged W
        theirs.base_model.merge_adapter(["x", "y"])
    torch.testing.assert_close(logits(ours), unmerged, rtol=1e-5, atol=1e-5)
    peft_weights = dict(theirs.named_parameters())
    for name, layer in lc.lora_layers(ours):  # the norm is of the unmerged W, in PEFT's order
        torch.testing.assert_close(layer.base_layer.weight, peft_weights[f"{PREFIX}{name}.base_layer.weight"],
                                   rtol=1e-6, atol=1e-6, msg=labelled(name))
    lc.unmerge_lora(ours)
    theirs.base_model.unmerge_adapter()
    lc.set_adapter(ours, "x")
    theirs.base_model.set_adapter("x")
    lc.delete_adapter(ours, "y")
    theirs.delete_adapter("y")
    assert not magnitudes(ours) and not magnitudes(theirs)
    assert set(ours.state_dict()) == {k.removeprefix(PREFIX) for k in theirs.state_dict()}


# --- files ------------------------------------------------------------------------------------------------------
FILE_CASES = {k: CASES[k] for k in ("gpt2-attn_mlp-rslora-bias_all", "llama-qvo_mlp-rslora-dropout",
                                    "small-emb_conv_lin-dropout")}


@pytest.mark.parametrize("make,kw", FILE_CASES.values(), ids=FILE_CASES.keys())
def test_a_dora_adapter_file_goes_both_ways(make, kw, tmp_path):
    ours, theirs = build_pair(make, kw)
    lc.save_adapter(ours, tmp_path / "ours")
    assert lc.read_adapter_config(tmp_path / "ours").use_dora
    loaded = PeftModel.from_pretrained(with_biases(make()), tmp_path / "ours").eval()
    torch.testing.assert_close(logits(loaded), logits(ours), rtol=1e-5, atol=1e-5)  # see test_outputs_match_peft
    theirs.save_pretrained(tmp_path / "peft")
    back = lc.load_adapter(with_biases(make()), tmp_path / "peft").eval()
    torch.testing.assert_close(logits(back), logits(theirs), rtol=1e-5, atol=1e-5)
    assert set(magnitudes(back)) == set(magnitudes(ours))


# --- a 4-bit base, and bad input --------------------------------------------------------------------------------
def test_dora_on_an_nf4_base_uses_the_dequantized_weight():
    """QDoRA: the norm and, under dropout, the second product read the dequantized W (PEFT's dequantize_module_weight);
    the output is dora.py's formula on it."""
    model = lc.quantize_model(with_biases(llama_biased()))
    lc.inject_lora(model, lc.LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "down_proj"], use_dora=True,
                                        init_lora_weights=False), generator=torch.Generator().manual_seed(0))
    perturb_magnitudes(model)
    x = torch.randn(3, 64, generator=torch.Generator().manual_seed(1))
    layer = model.model.layers[0].mlp.down_proj
    a, base = layer.adapter(), layer.base_layer
    with torch.no_grad():
        want = dora.dora_linear_forward(x, base(x), base.weight, base.bias, a.A, a.B, a.magnitude, a.scaling)
        torch.testing.assert_close(layer(x), want, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("kw,field,allowed", [
    (dict(use_dora="yes"), "use_dora='yes'", "true or false"),
    (dict(use_dora=1), "use_dora=1", "true or false"),
], ids=["string", "int"])
def test_config_refuses_a_non_bool_use_dora(kw, field, allowed):
    with pytest.raises(ValueError) as e:
        lc.LoraConfig(**kw)
    assert field in str(e.value) and allowed in str(e.value)


@pytest.mark.parametrize("key,value", [("lora_bias", True), ("megatron_config", {"tensor_model_parallel_size": 2})])
def test_a_peft_config_refuses_dora_where_peft_does(key, value):
    """PEFT's LoraConfig.__post_init__ raises for DoRA with lora_bias and megatron_core: so do we, naming use_dora."""
    d = lc.LoraConfig(r=4, target_modules=["c_attn"], use_dora=True).to_peft_dict() | {key: value}
    with pytest.raises(ValueError) as e:
        lc.LoraConfig.from_peft_dict(d)
    assert "use_dora=True is not allowed" in str(e.value) and key in str(e.value)
    with pytest.raises(ValueError, match="DoRA"):
        PeftLoraConfig(r=4, target_modules=["c_attn"], use_dora=True,
                       **{key: True if key == "lora_bias" else {"tensor_model_parallel_size": 2}})


def test_use_dora_is_written_and_read_back():
    cfg = lc.LoraConfig(r=4, lora_alpha=8, target_modules=["c_attn"], use_dora=True)
    d = cfg.to_peft_dict()
    assert d["use_dora"] is True and lc.LoraConfig.from_peft_dict(d).use_dora is True
    assert lc.LoraConfig.from_peft_dict(lc.LoraConfig(target_modules=["c_attn"]).to_peft_dict()).use_dora is False


def test_a_mixed_batch_refuses_a_dora_adapter_as_peft_does():
    ours, theirs = plain_then_dora()
    with pytest.raises(ValueError, match="use_dora=True"):
        ours.transformer.h[0].attn.c_attn(torch.zeros(2, 3, 32), adapter_names=["x", "y"])
    with pytest.raises(ValueError, match="DoRA"):
        theirs(TOKENS, adapter_names=["x", "y"])
