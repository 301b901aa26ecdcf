"""add_weighted_adapter against PEFT 0.21's LoraModel.add_weighted_adapter (peft/tuners/lora/model.py 682-951).

Sources with non-zero factors (init_lora_weights=False, ours copied into PEFT's), alphas 8 and 16 at r = 4 (so
the scalings differ from each other and from 1), layers holding only some of the sources, and a negative
weight: every combination type gives PEFT's ΔW in every layer and PEFT's logits. Where PEFT is wrong (#3761's
√r, its silent no-op on an existing name, its substring freeze, its inherited config) the test pins PEFT's
behaviour next to ours.
"""

import contextlib
import math

import peft.tuners.lora.model as peft_lora_model
import pytest
import torch
import torch.nn as nn
from conftest import tiny_gpt2, tiny_llama
from peft import LoraConfig as PeftLoraConfig
from peft import get_peft_model
from peft.tuners.lora import LoraLayer as PeftLoraLayer

import lora_core as lc
from lora_core import combining
from lora_core.weighted import COMBINATION_TYPES, PRUNING, add_weighted_adapter, combining_method


class Toy(nn.Module):
    """An Embedding, a 3×3 Conv2d and a 1×1 Conv2d: the layer types the transformers lack."""

    def __init__(self):
        super().__init__()
        with torch.random.fork_rng(devices=[]):
            self.emb, self.conv = nn.Embedding(20, 12), nn.Conv2d(8, 10, 3, padding=1)
            self.pointwise = nn.Conv2d(10, 9, 1)
        g = torch.Generator().manual_seed(3)
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(torch.randn(p.shape, generator=g) * 0.2)

    def forward(self, ids, image):
        return torch.cat([self.emb(ids).flatten(), self.pointwise(self.conv(image)).flatten()])


def lora(targets, r=4, alpha=8, **kw):
    return dict(r=r, lora_alpha=alpha, target_modules=targets, init_lora_weights=False) | kw


# x and y overlap in one layer type and differ in another; z has another rank (for the rank rules).
SOURCES = {
    "gpt2": (tiny_gpt2, dict(x=lora(["c_attn"]), y=lora(["c_attn", "c_fc"], alpha=16), z=lora(["c_attn"], 2, 4))),
    "llama": (tiny_llama, dict(x=lora(["q_proj", "v_proj"]), y=lora(["v_proj", "o_proj"], alpha=16),
                               z=lora(["q_proj"], 2, 4))),
    "toy": (Toy, dict(x=lora(["emb", "conv", "pointwise"]), y=lora(["emb", "conv"], alpha=16),
                      z=lora(["emb"], 2, 4))),
}
TOKENS = torch.randint(0, 20, (2, 12), generator=torch.Generator().manual_seed(1))
IMAGE = torch.randn(2, 8, 5, 5, generator=torch.Generator().manual_seed(2))


def build(kind: str, configs: dict | None = None):
    """Ours and PEFT's model with the same adapters (the first one active), our random factors loaded into PEFT's."""
    make, configs = SOURCES[kind][0], configs or SOURCES[kind][1]
    (first, cfg), *rest = configs.items()
    g = torch.Generator().manual_seed(0)
    ours = make()
    lc.inject_lora(ours, lc.LoraConfig(**cfg), generator=g, adapter_name=first)
    with torch.random.fork_rng(devices=[]):
        theirs = get_peft_model(make(), PeftLoraConfig(**cfg), adapter_name=first)
    for name, cfg in rest:
        lc.add_adapter(ours, name, lc.LoraConfig(**cfg), generator=g)
        with torch.random.fork_rng(devices=[]):
            theirs.add_adapter(name, PeftLoraConfig(**cfg))
    with torch.no_grad():  # trained-looking head copies and DoRA magnitudes, not the init's
        for key, p in ours.named_parameters():
            if ".modules_to_save." in key or ".lora_magnitude_vector." in key:
                p.add_(torch.randn(p.shape, generator=g) * 0.1)
    theirs.base_model.model.load_state_dict(ours.state_dict(), strict=True)
    return ours.eval(), theirs.eval()


@contextlib.contextmanager
def peft_masks_seeded(seed: int):
    """PEFT draws DARE's masks from the global RNG after its injection drew the new adapter's (discarded) init.
    Reseed it where the masks start, right after _freeze_adapter (model.py 769): then PEFT's masks are those of our
    torch.Generator().manual_seed(seed), as tests/test_combining.py shows tensor by tensor."""
    freeze = peft_lora_model._freeze_adapter

    def freeze_then_seed(model, name):
        freeze(model, name)
        torch.manual_seed(seed)

    peft_lora_model._freeze_adapter = freeze_then_seed
    try:
        with torch.random.fork_rng(devices=[]):
            yield
    finally:
        peft_lora_model._freeze_adapter = freeze


def weigh_both(ours, theirs, adapters, weights, name, kind, seed=5, **kw):
    out = add_weighted_adapter(ours, adapters, weights, name, kind, generator=torch.Generator().manual_seed(seed), **kw)
    with peft_masks_seeded(seed):
        theirs.add_weighted_adapter(adapters, weights, name, kind, **kw)
    return out


def deltas(ours, theirs, name):
    """{layer: (our ΔW, PEFT's ΔW)} in (out, in) for every layer holding adapter `name` (PEFT lays out Conv1D's
    and Embedding's ΔW as (in, out))."""
    pairs = {}
    for n, layer in lc.lora_layers(ours):
        if name in layer.r:
            theirs_delta = theirs.base_model.model.get_submodule(n).get_delta_weight(name)
            pairs[n] = layer.delta_weight(name), theirs_delta.T if layer.fan_in_fan_out else theirs_delta
    return pairs


def outputs(model, kind):
    with torch.no_grad():
        return model(TOKENS, IMAGE) if kind == "toy" else model(TOKENS).logits


def trainable(model) -> set[str]:
    return {n.removeprefix("base_model.model.") for n, p in model.named_parameters() if p.requires_grad}


def density_for(kind: str):
    return 0.5 if kind in PRUNING else None


# --- every combination type, against PEFT ---------------------------------------------------------------------
@pytest.mark.parametrize("kind", COMBINATION_TYPES)
@pytest.mark.parametrize("model", ["gpt2", "llama"])
def test_every_combination_type_gives_peft_s_delta_weights_and_logits(model, kind):
    ours, theirs = build(model)
    before = trainable(ours)
    names = weigh_both(ours, theirs, ["x", "y"], [0.7, -0.4], "mix", kind, density=density_for(kind))
    assert names == [n for n, layer in lc.lora_layers(ours) if "x" in layer.r or "y" in layer.r]
    assert lc.active_adapters(ours) == ["x"] and trainable(ours) == before == trainable(theirs)  # inactive, frozen
    pairs = deltas(ours, theirs, "mix")
    assert list(pairs) == names and len(names) == (4 if model == "gpt2" else 6)
    for layer, (mine, peft) in pairs.items():
        assert mine.abs().max() > 1e-3, layer                           # a real ΔW in every layer
        torch.testing.assert_close(mine, peft, rtol=1e-5, atol=1e-7, msg=layer)
    lc.set_adapter(ours, "mix")
    theirs.base_model.set_adapter("mix")
    torch.testing.assert_close(outputs(ours, model), outputs(theirs, model), rtol=0, atol=1e-5)


@pytest.mark.parametrize(("kind", "options"), [("svd", {}), ("cat", {}), ("svd", dict(svd_rank=2, svd_clamp=0.9)),
                                               ("svd", dict(svd_full_matrices=False)), ("dare_ties_svd", {})])
def test_embedding_and_conv2d_layers_give_peft_s_delta_weights_and_outputs(kind, options):
    ours, theirs = build("toy")
    weigh_both(ours, theirs, ["x", "y"], [0.7, -0.4], "mix", kind, density=density_for(kind), **options)
    pairs = deltas(ours, theirs, "mix")
    assert list(pairs) == ["emb", "conv", "pointwise"]                   # pointwise holds x alone
    for layer, (mine, peft) in pairs.items():
        torch.testing.assert_close(mine, peft, rtol=1e-5, atol=1e-6, msg=layer)
    lc.set_adapter(ours, "mix")
    theirs.base_model.set_adapter("mix")
    torch.testing.assert_close(outputs(ours, "toy"), outputs(theirs, "toy"), rtol=0, atol=1e-5)
    if kind == "cat":                                                    # cat is exact: Σ wᵢ ΔWᵢ
        layer = ours.conv
        torch.testing.assert_close(layer.delta_weight("mix"), 0.7 * layer.delta_weight("x") - 0.4 *
                                   layer.delta_weight("y"), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("kind", ["dare_linear", "dare_ties_svd"])
def test_dare_draws_its_masks_from_the_generator_alone(kind):
    def mixed(seed):
        ours, _ = build("gpt2")
        add_weighted_adapter(ours, ["x", "y"], [1.0, 1.0], "mix", kind, density=0.5,
                             generator=torch.Generator().manual_seed(seed))
        return torch.cat([layer.delta_weight("mix").flatten() for _, layer in lc.lora_layers(ours)])

    before = torch.get_rng_state()
    assert torch.equal(mixed(1), mixed(1)) and not torch.equal(mixed(1), mixed(2))
    assert torch.equal(torch.get_rng_state(), before)


# --- ranks ------------------------------------------------------------------------------------------------------
def test_the_linear_family_needs_one_rank_as_in_peft():
    ours, theirs = build("gpt2")
    for kind in ("linear", "ties", "dare_linear", "dare_ties", "magnitude_prune"):
        with pytest.raises(ValueError, match=r"combination_type=.*r=\[4, 2\]"):
            add_weighted_adapter(ours, ["x", "z"], [1.0, 1.0], "mix", kind, density=density_for(kind))
        with pytest.raises(ValueError, match="All adapters must have the same r value"):
            theirs.add_weighted_adapter(["x", "z"], [1.0, 1.0], "mix", kind, density=density_for(kind))
    assert list(ours.lora_configs) == ["x", "y", "z"]


@pytest.mark.parametrize(("kind", "svd_rank", "rank"), [("cat", None, 6), ("svd", None, 4), ("svd", 3, 3),
                                                        ("ties_svd", 5, 5)])
def test_cat_sums_the_ranks_and_svd_takes_svd_rank_or_the_largest(kind, svd_rank, rank):
    ours, theirs = build("gpt2")
    weigh_both(ours, theirs, ["x", "z"], [0.7, -0.4], "mix", kind, svd_rank=svd_rank, density=density_for(kind))
    cfg = ours.lora_configs["mix"]
    assert cfg.r == cfg.lora_alpha == rank == theirs.peft_config["mix"].r
    for layer, (mine, peft) in deltas(ours, theirs, "mix").items():
        torch.testing.assert_close(mine, peft, rtol=1e-5, atol=1e-7, msg=layer)
    if kind == "cat":
        layer = ours.transformer.h[0].attn.c_attn
        torch.testing.assert_close(layer.delta_weight("mix"), 0.7 * layer.delta_weight("x") - 0.4 *
                                   layer.delta_weight("z"), rtol=1e-5, atol=1e-7)


# --- one source: PEFT's collapse to linear, #3761 and #2918 -------------------------------------------------------
@pytest.mark.parametrize("kind", ["linear", "cat", "svd", "ties"])
@pytest.mark.parametrize("rslora", [False, True])
def test_one_source_with_weight_one_comes_back_unchanged_where_peft_s_rslora_is_sqrt_r_times(kind, rslora):
    configs = dict(x=lora(["c_attn"], use_rslora=rslora), y=lora(["c_attn", "c_fc"], alpha=16))
    ours, theirs = build("gpt2", configs)
    weigh_both(ours, theirs, ["x"], [1.0], "mix", kind, density=density_for(kind))
    assert ours.lora_configs["mix"].r == 4 and all(layer.scaling["mix"] == 1.0 for _, layer in lc.lora_layers(ours)
                                                          if "x" in layer.r)
    expected = {n: layer.delta_weight("x") for n, layer in lc.lora_layers(ours) if "x" in layer.r}
    assert [n for n, layer in lc.lora_layers(ours) if "mix" in layer.r] == list(expected)
    lc.set_adapter(ours, "x")
    source_logits = outputs(ours, "gpt2")
    lc.set_adapter(ours, "mix")
    theirs.base_model.set_adapter("mix")
    torch.testing.assert_close(outputs(ours, "gpt2"), source_logits, rtol=0, atol=1e-5)
    for n, (mine, peft) in deltas(ours, theirs, "mix").items():
        torch.testing.assert_close(mine, expected[n], rtol=1e-5, atol=1e-7)
        # PEFT's new config keeps the source's use_rslora (model.py 758-765): scaling r/√r = 2 at r = 4 (#3761)
        torch.testing.assert_close(peft, 2 * mine if rslora else mine, rtol=1e-5, atol=1e-7)
    if rslora:
        assert (outputs(theirs, "gpt2") - source_logits).abs().max() > 1e-3


def test_a_negative_weight_on_one_source_scales_its_delta_as_in_peft():
    ours, theirs = build("gpt2")
    weigh_both(ours, theirs, ["y"], [-0.5], "mix", "svd")               # collapses to linear (PEFT #2918)
    for n, (mine, peft) in deltas(ours, theirs, "mix").items():
        source = ours.get_submodule(n).delta_weight("y")
        torch.testing.assert_close(mine, -0.5 * source, rtol=1e-5, atol=1e-7)
        torch.testing.assert_close(peft, -0.5 * source, rtol=1e-5, atol=1e-7)


def test_svd_with_alpha_not_r_scales_once_as_peft_0_21_does():
    """PEFT #3111 multiplied the weights by the scaling on top of get_delta_weight's; 0.21 is fixed (model.py 853)."""
    ours, theirs = build("gpt2")
    weigh_both(ours, theirs, ["x", "y"], [1.0, 0.0], "mix", "svd")     # rank-4 ΔW_x survives a rank-4 SVD
    for n, (mine, peft) in deltas(ours, theirs, "mix").items():
        source = ours.get_submodule(n).delta_weight("x") if "x" in ours.get_submodule(n).r else torch.zeros_like(mine)
        torch.testing.assert_close(mine, source, rtol=1e-4, atol=1e-6)
        torch.testing.assert_close(peft, source, rtol=1e-4, atol=1e-6)


# --- the new adapter's config and freezing ------------------------------------------------------------------------
def test_the_new_config_is_built_not_inherited_where_peft_drops_a_source_s_layers():
    configs = dict(x=lora(["c_attn"], use_rslora=True, layers_to_transform=[0], layers_pattern="h", lora_dropout=0.1),
                   y=lora(["c_attn", "c_fc"], alpha=16))
    ours, theirs = build("gpt2", configs)
    weigh_both(ours, theirs, ["x", "y"], [1.0, 1.0], "mix", "cat")
    cfg = ours.lora_configs["mix"]
    layers = [f"transformer.h.{i}.{m}" for i in (0, 1) for m in ("attn.c_attn", "mlp.c_fc")]
    assert cfg.target_modules == sorted(layers) and cfg.r == cfg.lora_alpha == 8 and not cfg.use_rslora
    assert (cfg.bias, cfg.init_lora_weights, cfg.layers_to_transform, cfg.lora_dropout) == ("none", False, None, 0.1)
    assert [n for n, layer in lc.lora_layers(ours) if "mix" in layer.r] == layers
    # PEFT inherits layers_to_transform=[0] from x: y's layers in block 1 are lost
    assert [n for n, m in theirs.base_model.model.named_modules() if isinstance(m, PeftLoraLayer) and "mix" in m.r] \
        == layers[:2]


def test_a_source_with_bias_is_fine_here_where_peft_s_inherited_bias_raises():
    configs = dict(x=lora(["c_attn"], bias="all"), y=lora(["c_attn", "c_fc"], alpha=16))
    ours, theirs = build("gpt2", configs)
    add_weighted_adapter(ours, ["x", "y"], [1.0, 1.0], "mix", "svd")
    assert ours.lora_configs["mix"].bias == "none"
    with pytest.raises(ValueError, match="supports only 1 adapter with bias"), torch.random.fork_rng(devices=[]):
        theirs.add_weighted_adapter(["x", "y"], [1.0, 1.0], "mix", "svd")


def test_exactly_the_new_adapter_is_frozen_where_peft_freezes_every_name_containing_it():
    configs = dict(default=lora(["c_attn"]), y=lora(["c_attn", "c_fc"], alpha=16))
    ours, theirs = build("gpt2", configs)
    before = trainable(ours)
    assert before == trainable(theirs) and any(".default." in n for n in before)
    weigh_both(ours, theirs, ["default", "y"], [1.0, 1.0], "fault", "svd")
    assert trainable(ours) == before
    assert trainable(theirs) == set()                 # PEFT's _freeze_adapter: "fault" in "...lora_A.default.weight"


def test_an_existing_name_is_refused_where_peft_returns_silently():
    ours, theirs = build("gpt2")
    x_before = {k: t.clone() for k, t in ours.state_dict().items()}
    with pytest.raises(ValueError, match="adapter_name='y'"):
        add_weighted_adapter(ours, ["x"], [2.0], "y", "linear")
    assert all(torch.equal(t, x_before[k]) for k, t in ours.state_dict().items())
    peft_before = {k: t.clone() for k, t in theirs.state_dict().items()}
    assert theirs.add_weighted_adapter(["x"], [2.0], "y", "linear") is None  # model.py 749-750: nothing happens
    assert all(torch.equal(t, peft_before[k]) for k, t in theirs.state_dict().items())


# --- bad input: a ValueError naming the field, and the model as it was --------------------------------------------
BAD = [
    (dict(weights=[1.0]), "weights"),                                   # PEFT's zip drops y
    (dict(weights=[1.0, 1.0, 1.0]), "weights"),
    (dict(weights=[float("nan"), 1.0]), "weights"),
    (dict(weights=[float("inf"), 1.0]), "weights"),
    (dict(combination_type="mean"), "combination_type"),
    (dict(combination_type="ties"), "density"),
    (dict(combination_type="dare_linear_svd"), "density"),
    (dict(combination_type="magnitude_prune", density=0.0), "density"),
    (dict(combination_type="svd", density=0.5), "density"),
    (dict(combination_type="linear", density=0.5), "density"),
    (dict(combination_type="cat", density=0.5), "density"),
    (dict(combination_type="linear", svd_rank=2), "svd_rank"),
    (dict(svd_rank=0), "svd_rank"),
    (dict(svd_rank=40), "svd_rank"),                                    # c_attn is 32 -> 96
    (dict(svd_clamp=1.5), "svd_clamp"),
    (dict(majority_sign_method="most"), "majority_sign_method"),
    (dict(adapters=["x", "w"]), "adapters"),
    (dict(adapters="x", weights=[1.0]), "adapters"),
    (dict(adapters=["x"] * 9, weights=[0.1] * 9, combination_type="cat"), "combination_type"),  # Σr = 36 > 32
    (dict(adapter_name="a.b"), "adapter_name"),
]


@pytest.mark.parametrize(("change", "field"), BAD, ids=[f"{f}-{i}" for i, (_, f) in enumerate(BAD)])
def test_bad_input_is_a_value_error_naming_the_field_and_changes_nothing(change, field):
    ours, _ = build("gpt2")
    state = {k: t.clone() for k, t in ours.state_dict().items()}
    call = dict(adapters=["x", "y"], weights=[1.0, -1.0], adapter_name="mix", combination_type="svd") | change
    with pytest.raises(ValueError, match=f"^{field}="):
        add_weighted_adapter(ours, **call)
    assert list(ours.lora_configs) == ["x", "y", "z"] and set(ours.state_dict()) == set(state)
    assert all(torch.equal(t, state[k]) for k, t in ours.state_dict().items())


def test_a_source_s_trained_copy_of_a_saved_module_comes_along_where_peft_copies_the_original():
    configs = dict(x=lora(["c_attn"], modules_to_save=["lm_head"]), y=lora(["c_attn", "c_fc"], alpha=16))
    ours, theirs = build("gpt2", configs)
    weigh_both(ours, theirs, ["x", "y"], [1.0, 0.5], "mix", "cat")
    head, peft_head = ours.lm_head.modules_to_save, theirs.base_model.model.lm_head
    assert torch.equal(head["mix"].weight, head["x"].weight) and not head["mix"].weight.requires_grad
    assert ours.lora_configs["mix"].modules_to_save == ["lm_head"]
    # PEFT inherits modules_to_save from the first source, and its wrapper deep-copies the original module
    assert torch.equal(peft_head.modules_to_save["mix"].weight, peft_head.original_module.weight)
    assert not torch.equal(peft_head.modules_to_save["x"].weight, peft_head.original_module.weight)
    add_weighted_adapter(ours, ["x"], [1.0], "solo", "linear")          # one source, weight 1: x itself, head too
    lc.set_adapter(ours, "x")
    source_logits = outputs(ours, "gpt2")
    lc.set_adapter(ours, "solo")
    torch.testing.assert_close(outputs(ours, "gpt2"), source_logits, rtol=0, atol=1e-5)


def test_two_sources_with_copies_of_one_module_are_refused_as_in_peft():
    configs = dict(x=lora(["c_attn"], modules_to_save=["lm_head"]), y=lora(["c_fc"], modules_to_save=["lm_head"]))
    ours, theirs = build("gpt2", configs)
    with pytest.raises(ValueError, match=r"^adapters=.*lm_head"):
        add_weighted_adapter(ours, ["x", "y"], [1.0, 1.0], "mix", "cat")
    with pytest.raises(ValueError, match="target the same module with modules_to_save"):
        theirs.add_weighted_adapter(["x", "y"], [1.0, 1.0], "mix", "cat")
    assert list(ours.lora_configs) == ["x", "y"]


# --- DoRA ---------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["linear", "cat", "svd"])
def test_one_dora_source_keeps_its_magnitude_where_peft_keeps_the_discarded_init_s(kind):
    configs = dict(x=lora(["c_attn"], use_dora=True), y=lora(["c_attn", "c_fc"], alpha=16))
    ours, theirs = build("gpt2", configs)
    weigh_both(ours, theirs, ["x"], [1.0], "mix", kind)
    assert ours.lora_configs["mix"].use_dora and theirs.peft_config["mix"].use_dora
    for n, layer in lc.lora_layers(ours):
        if "x" in layer.r:
            m = layer.adapter("mix").magnitude
            assert torch.equal(m, layer.adapter("x").magnitude) and not m.requires_grad, n
            torch.testing.assert_close(layer.delta_weight("mix"), layer.delta_weight("x"), rtol=1e-5, atol=1e-7)
    lc.set_adapter(ours, "x")
    source_logits = outputs(ours, "gpt2")
    lc.set_adapter(ours, "mix")
    theirs.base_model.set_adapter("mix")
    torch.testing.assert_close(outputs(ours, "gpt2"), source_logits, rtol=0, atol=1e-5)
    # PEFT's new DoRA adapter keeps the magnitude its injection computed from the discarded init (#3761)
    assert (outputs(theirs, "gpt2") - source_logits).abs().max() > 1e-3


def test_several_sources_with_a_dora_one_are_refused_where_peft_drops_the_magnitude():
    configs = dict(x=lora(["c_attn"], use_dora=True), y=lora(["c_attn", "c_fc"], alpha=16))
    ours, theirs = build("gpt2", configs)
    with pytest.raises(ValueError, match=r"^adapters=.*DoRA"):
        add_weighted_adapter(ours, ["y", "x"], [1.0, 1.0], "mix", "svd")
    assert list(ours.lora_configs) == ["x", "y"]
    with torch.random.fork_rng(devices=[]):
        assert theirs.add_weighted_adapter(["y", "x"], [1.0, 1.0], "mix", "svd") is None   # silently, no magnitude
    assert "mix" not in theirs.base_model.model.transformer.h[0].attn.c_attn.lora_magnitude_vector


def test_density_and_weights_reach_the_combining_step():
    """A pruned mix differs from the plain one, and scaling both weights scales a linear-family mix's ΔW by it."""
    ours, _ = build("gpt2")
    add_weighted_adapter(ours, ["x", "y"], [1.0, 1.0], "plain", "svd")
    add_weighted_adapter(ours, ["x", "y"], [1.0, 1.0], "pruned", "magnitude_prune_svd", density=0.2)
    add_weighted_adapter(ours, ["x", "y"], [0.5, -0.5], "small", "linear")
    add_weighted_adapter(ours, ["x", "y"], [2.0, -2.0], "big", "linear")
    layer = ours.transformer.h[0].attn.c_attn
    assert not torch.allclose(layer.delta_weight("plain"), layer.delta_weight("pruned"))
    torch.testing.assert_close(layer.delta_weight("big"), 4 * layer.delta_weight("small"), rtol=1e-5, atol=1e-7)
    assert math.isclose(layer.scaling["big"], 1.0)


@pytest.mark.parametrize("kind", [t for t in COMBINATION_TYPES if t != "cat"])  # cat concatenates, combines nothing
def test_each_combination_type_runs_its_combining_function(kind):
    ts = [torch.randn(6, 5, generator=torch.Generator().manual_seed(i)) for i in range(2)]
    method, w = combining_method(kind), [0.7, -0.4]
    via_name = combining.combine(method, ts, w, density_for(kind), "total", torch.Generator().manual_seed(3))
    direct = {"task_arithmetic": lambda: combining.task_arithmetic(ts, w),
              "ties": lambda: combining.ties(ts, w, 0.5),
              "dare_linear": lambda: combining.dare_linear(ts, w, 0.5, torch.Generator().manual_seed(3)),
              "dare_ties": lambda: combining.dare_ties(ts, w, 0.5, generator=torch.Generator().manual_seed(3)),
              "magnitude_prune": lambda: combining.magnitude_prune(ts, w, 0.5)}[method]()
    assert torch.equal(via_name, direct)
    if method != "task_arithmetic":
        with pytest.raises(ValueError, match=r"^density=None"):
            combining.combine(method, ts, w)
