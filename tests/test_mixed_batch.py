"""Mixed batches: each example of a batch runs its own adapter (PEFT 0.21's `adapter_names=`), against PEFT.

`with lc.mixed_batch(model, names): model(x)` is PEFT's `model(x, adapter_names=names)`. Two adapters on the tiny
GPT-2 and Llama, a (r 4, α 8) and b (r 2, α 16, rsLoRA, one more target), non-zero factors loaded into PEFT's
model; the batch is ["a", "__base__", "b", "a"].

A row is compared with torch.equal to that example run alone with its adapter active, on the plain formula:
the CPU fast paths (fused.py) agree with it to rounding only, and a GEMM over more rows may round differently
(~1e-6), so "alone" means the row by itself.
"""

import contextlib
import copy

import pytest
import torch
import torch.nn as nn
from conftest import tiny_gpt2, tiny_llama
from peft import LoraConfig as PeftLoraConfig
from peft import get_peft_model

import lora_core as lc
from lora_core.mixed import BASE, mixed_batch

pytestmark = pytest.mark.filterwarnings("ignore:Adapter name:UserWarning")  # PEFT: "a" is inside its prefix "lora_"

NAMES = ["a", BASE, "b", "a"]
TARGETS = {  # model: (make, a's targets, b's targets)
    "gpt2": (tiny_gpt2, ["c_attn"], ["c_attn", "c_fc"]),
    "llama": (tiny_llama, ["q_proj", "v_proj"], ["q_proj", "v_proj", "up_proj"]),
}


def configs(kind: str, **extra) -> tuple[dict, dict]:
    _, ta, tb = TARGETS[kind]
    a = dict(r=4, lora_alpha=8, target_modules=ta, init_lora_weights=False, **extra)
    b = dict(r=2, lora_alpha=16, use_rslora=True, target_modules=tb, init_lora_weights=False, **extra)
    return a, b


def two_adapters(kind: str = "gpt2", dtype: torch.dtype = torch.float32, **extra):
    """Ours and PEFT's model with adapters a (active) and b, the same non-zero factors, in eval mode."""
    make = TARGETS[kind][0]
    a, b = configs(kind, **extra)
    ours = make().to(dtype)
    g = torch.Generator().manual_seed(0)
    lc.inject_lora(ours, lc.LoraConfig(**a), generator=g, adapter_name="a")
    lc.add_adapter(ours, "b", lc.LoraConfig(**b), generator=g)
    theirs = get_peft_model(make().to(dtype), PeftLoraConfig(**copy.deepcopy(a)), adapter_name="a")
    theirs.add_adapter("b", PeftLoraConfig(**copy.deepcopy(b)))
    theirs.base_model.model.load_state_dict(ours.state_dict(), strict=True)
    return ours.eval(), theirs.eval()


def plain(model: nn.Module) -> nn.Module:
    """Every LoRA Linear on the plain formula (the fused paths agree with it to rounding, not bit for bit)."""
    for _, layer in lc.lora_layers(model):
        if isinstance(layer, lc.LoraLinear):
            layer.forward_path = "plain"
    return model


def logits(model, tokens) -> torch.Tensor:
    with torch.no_grad():
        return model(tokens).logits


def each_row_alone(ours, tokens, names) -> list[torch.Tensor]:
    """Row i of `tokens` run by itself with adapter names[i] active (or LoRA disabled for "__base__")."""
    rows = []
    for i, name in enumerate(names):
        if name == BASE:
            with lc.disable_lora(ours):
                rows.append(logits(ours, tokens[i:i + 1])[0])
        else:
            lc.set_adapter(ours, name)
            rows.append(logits(ours, tokens[i:i + 1])[0])
    return rows


def no_hooks(model: nn.Module) -> bool:
    return not any(m._forward_pre_hooks for m in model.modules())


@pytest.fixture
def batch() -> torch.Tensor:
    return torch.randint(0, 64, (4, 12), generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize("kind", sorted(TARGETS))
def test_a_mixed_batch_gives_peft_s_logits_and_each_row_is_its_own_adapter_s_run(kind, batch):
    ours, theirs = two_adapters(kind)
    with mixed_batch(ours, NAMES) as model:
        assert model is ours
        mixed = logits(ours, batch)
    with torch.no_grad():
        peft_mixed = theirs(batch, adapter_names=NAMES).logits
    assert torch.equal(mixed, peft_mixed)                       # fp32: the same adds in the same order
    assert no_hooks(ours)
    lc.set_adapter(ours, "a")
    assert (mixed - logits(ours, batch)).abs().amax(dim=(1, 2)).gt(1e-3).tolist() == [False, True, True, False]
    for i, row in enumerate(each_row_alone(plain(ours), batch, NAMES)):
        assert torch.equal(mixed[i], row), (i, NAMES[i])


@pytest.mark.parametrize("kind", sorted(TARGETS))
def test_on_a_bf16_base_each_row_is_rounded_once_as_its_own_run_where_peft_rounds_twice(kind, batch):
    """PEFT rounds each adapter's branch to bf16 before adding it to the base (`_mixed_batch_forward`,
    peft/tuners/lora/layer.py, `.to(result.dtype)`), its single-adapter forward adds in fp32 and rounds once:
    so its mixed rows are near, not equal to, its own single-adapter rows. Ours equal ours."""
    ours, theirs = two_adapters(kind, torch.bfloat16)
    with mixed_batch(ours, NAMES):
        mixed = logits(plain(ours), batch)
    with torch.no_grad():
        peft_mixed = theirs(batch, adapter_names=NAMES).logits
    assert mixed.dtype == peft_mixed.dtype == torch.bfloat16
    torch.testing.assert_close(mixed.float(), peft_mixed.float(), rtol=0.02, atol=0.02)
    for i, row in enumerate(each_row_alone(ours, batch, NAMES)):
        assert torch.equal(mixed[i], row), (i, NAMES[i])
    layer = theirs.base_model.model.model.layers[0].self_attn.q_proj if kind == "llama" else \
        theirs.base_model.model.transformer.h[0].attn.c_attn
    x = torch.randn(4, 6, 32, generator=torch.Generator().manual_seed(2)).to(torch.bfloat16)
    with torch.no_grad():
        peft_rows = layer(x, adapter_names=["b"] * 4)
        theirs.base_model.set_adapter("b")
        assert not torch.equal(peft_rows, layer(x))              # PEFT's two roundings (pinned)
        ours_layer = ours.get_submodule(next(n for n, _ in lc.lora_layers(ours)))
        lc.set_adapter(ours, "b")
        assert torch.equal(ours_layer(x, adapter_names=["b"] * 4), ours_layer(x))


def test_generate_takes_one_name_per_row(batch):
    """`model.generate` under mixed_batch: the names follow the rows through every step (greedy: one per row)."""
    ours, _ = two_adapters()
    plain(ours)
    prompt, names = batch[:3, :5], ["a", BASE, "b"]
    kw = dict(max_new_tokens=6, do_sample=False, pad_token_id=0)
    with mixed_batch(ours, names), torch.no_grad():
        mixed = ours.generate(prompt, attention_mask=torch.ones_like(prompt), **kw)
    alone = []
    for i, name in enumerate(names):
        one = dict(input_ids=prompt[i:i + 1], attention_mask=torch.ones_like(prompt[i:i + 1]), **kw)
        if name != BASE:
            lc.set_adapter(ours, name)
        with torch.no_grad(), (lc.disable_lora(ours) if name == BASE else contextlib.nullcontext()):
            alone.append(ours.generate(**one)[0])
    assert torch.equal(mixed, torch.stack(alone))
    assert len({tuple(row[5:].tolist()) for row in alone}) > 1  # the adapters do change what is generated


# --- Embedding and Conv2d layers, at layer level ------------------------------------------------------------------
class Toy(nn.Module):
    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(20, 12)
        self.conv = nn.Conv2d(6, 8, 3, padding=1)


def toy_pair():
    """Adapters a (emb + conv, r 4, α 8), b (emb + conv, r 2, α 16, rsLoRA) and c (conv only) on both toys."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        base = Toy()
    cfgs = {"a": dict(r=4, lora_alpha=8, target_modules=["emb", "conv"]),
            "b": dict(r=2, lora_alpha=16, use_rslora=True, target_modules=["emb", "conv"]),
            "c": dict(r=2, lora_alpha=2, target_modules=["conv"])}
    ours, g = copy.deepcopy(base), torch.Generator().manual_seed(0)
    theirs = None
    for name, kw in cfgs.items():
        if theirs is None:
            lc.inject_lora(ours, lc.LoraConfig(init_lora_weights=False, **kw), generator=g, adapter_name=name)
            theirs = get_peft_model(copy.deepcopy(base), PeftLoraConfig(init_lora_weights=False, **kw),
                                    adapter_name=name)
        else:
            lc.add_adapter(ours, name, lc.LoraConfig(init_lora_weights=False, **kw), generator=g)
            theirs.add_adapter(name, PeftLoraConfig(init_lora_weights=False, **kw))
    theirs.base_model.model.load_state_dict(ours.state_dict(), strict=True)
    return ours.eval(), theirs.base_model.model.eval()


@pytest.mark.parametrize("layer_name", ["emb", "conv"])
def test_embedding_and_conv2d_layers_mix_as_peft_s(layer_name):
    """Rows equal PEFT's. Against a row's own run: Embedding bit for bit; Conv2d to 1e-6, since torch's CPU
    convolution picks another kernel for a batch of one than for a batch of several (the base alone differs)."""
    ours, theirs = toy_pair()
    g = torch.Generator().manual_seed(3)
    x = torch.randint(0, 20, (5, 7), generator=g) if layer_name == "emb" else torch.randn(5, 6, 5, 5, generator=g)
    names = ["a", "c", BASE, "b", "a"]                     # c: the Embedding lacks it, so that row is the base's
    ours_layer, peft_layer = getattr(ours, layer_name), getattr(theirs, layer_name)
    with torch.no_grad():
        mixed = ours_layer(x, adapter_names=names)
        assert torch.equal(mixed, peft_layer(x, adapter_names=names))
        base = ours_layer.base_layer(x)
        for i, name in enumerate(names):
            if name == BASE or name not in ours_layer.r:
                assert torch.equal(mixed[i], base[i]), name
            else:
                lc.set_adapter(ours, name)
                alone = ours_layer(x[i:i + 1])[0]
                if layer_name == "emb":
                    assert torch.equal(mixed[i], alone), name
                torch.testing.assert_close(mixed[i], alone, rtol=0, atol=1e-6)
                assert (mixed[i] - base[i]).abs().max() > 1e-3, name


# --- what is refused, and the hooks ---------------------------------------------------------------------------------
def test_a_mixed_batch_refuses_what_peft_refuses(batch):
    ours, theirs = two_adapters()
    with pytest.raises(ValueError, match="has 2 names but the batch has 4 examples"), mixed_batch(ours, ["a", "b"]):
        ours(batch)
    with pytest.raises(ValueError, match="Length of `adapter_names` should be the same"):
        theirs(batch, adapter_names=["a", "b"])
    with pytest.raises(ValueError, match=r"Trying to infer with non-existing adapter\(s\): q, r\. The model holds "
                                         r"\['a', 'b'\]"), mixed_batch(ours, ["a", "r", "q", "a"]):
        pass
    with pytest.raises(ValueError, match=r"Trying to infer with non-existing adapter\(s\): q, r$"):
        theirs(batch, adapter_names=["a", "r", "q", "a"])
    ours.train()
    theirs.train()
    with pytest.raises(ValueError, match="Cannot pass `adapter_names` when the model is in training mode"), \
            mixed_batch(ours, NAMES):
        pass
    with pytest.raises(ValueError, match="Cannot pass `adapter_names` when the model is in training mode"):
        theirs(batch, adapter_names=NAMES)
    ours.eval()
    lc.merge_lora(ours)
    with pytest.raises(ValueError, match=r"cannot be used while adapters are merged \(\['a'\]\)"), \
            mixed_batch(ours, NAMES):
        pass
    layer = ours.transformer.h[0].attn.c_attn
    with pytest.raises(ValueError, match="merged"):
        layer(torch.zeros(4, 3, 32), adapter_names=NAMES)      # the layer checks too
    lc.unmerge_lora(ours)
    assert no_hooks(ours)


def test_a_str_of_names_is_refused_where_peft_reads_its_letters(batch):
    ours, theirs = two_adapters()
    for bad in ("abab", ("a", 1, "b", "a"), None):
        with pytest.raises(ValueError, match="must be a list with one adapter name per example"), \
                mixed_batch(ours, bad):
            pass
    with mixed_batch(ours, list("abab")):
        letters = logits(ours, batch)
    with torch.no_grad():   # PEFT takes the str "abab" as the names a, b, a, b (len and iteration of a str)
        assert torch.equal(theirs(batch, adapter_names="abab").logits, letters)


def test_the_hooks_are_gone_after_the_block_also_after_an_exception_where_peft_s_stay(batch):
    ours, theirs = two_adapters()
    before = logits(ours, batch)
    with mixed_batch(ours, NAMES):
        assert sum(len(m._forward_pre_hooks) for m in ours.modules()) == len(lc.lora_layers(ours)) == 4
    assert no_hooks(ours)
    with pytest.raises(RuntimeError, match="boom"), mixed_batch(ours, NAMES):
        raise RuntimeError("boom")
    assert no_hooks(ours)
    with pytest.raises(ValueError, match="2 names"), mixed_batch(ours, ["a", "b"]):
        ours(batch)
    assert no_hooks(ours) and torch.equal(logits(ours, batch), before)
    # PEFT's _enable_peft_forward_hooks (peft/tuners/lora/model.py) removes its hooks after the `yield`, not in a
    # `finally`: after a forward that raised they stay, and every later forward gets the old names.
    with pytest.raises(ValueError, match="Length of `adapter_names`"):
        theirs(batch, adapter_names=["a", "b"])
    assert not no_hooks(theirs)
    with pytest.raises(ValueError, match="Length of `adapter_names`"):
        theirs(batch)
