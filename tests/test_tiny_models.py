"""conftest's one tiny GPT-2 and one tiny Llama, which the oracle tests build twice and compare: the same seed
gives the same weights and another seed others, the global RNG never moves (no test seeds it to build a model),
the init is Hugging Face's, and the overrides and heads are the ones asked for."""

import pytest
import torch
from conftest import tiny_gpt2, tiny_llama
from transformers import GPT2ForSequenceClassification, LlamaForTokenClassification


@pytest.mark.parametrize("make", [tiny_gpt2, tiny_llama], ids=["gpt2", "llama"])
def test_the_same_seed_builds_the_same_model_and_the_global_rng_stays(make):
    state = torch.get_rng_state()
    one, two, other = make(), make(), make(seed=1)
    assert torch.equal(torch.get_rng_state(), state)
    assert all(torch.equal(p, q) for p, q in zip(one.parameters(), two.parameters(), strict=True))
    assert any(not torch.equal(p, q) for p, q in zip(one.parameters(), other.parameters(), strict=True))
    assert not one.training                                                 # eval mode: no dropout unless asked


def test_the_init_is_hugging_faces():
    gpt2 = tiny_gpt2()
    block = gpt2.transformer.h[0]
    assert gpt2.lm_head.weight is gpt2.transformer.wte.weight               # tied, drawn once
    assert 0.018 < float(block.attn.c_attn.weight.std()) < 0.022            # N(0, 0.02²), 3,072 draws
    assert 0.009 < float(block.attn.c_proj.weight.std()) < 0.011            # residual: 0.02 / √(2·2 layers)
    assert block.attn.c_attn.bias.eq(0).all() and block.ln_1.weight.eq(1).all() and block.ln_1.bias.eq(0).all()
    llama = tiny_llama()
    assert llama.model.embed_tokens.weight[0].eq(0).all()                   # the padding row (pad_token_id=0)
    assert llama.model.norm.weight.eq(1).all()
    head_dim = 32 // 4                                                      # RoPE's buffer is computed, not drawn
    expected = 1.0 / (llama.config.rope_parameters["rope_theta"] ** (torch.arange(0, head_dim, 2) / head_dim))
    torch.testing.assert_close(llama.model.rotary_emb.inv_freq, expected)


def test_overrides_dropout_and_heads_are_the_ones_asked_for():
    gpt2 = tiny_gpt2(head=GPT2ForSequenceClassification, num_labels=2, pad_token_id=0, dropout=0.0, n_embd=64)
    assert (gpt2.score.out_features, gpt2.config.n_embd) == (2, 64)
    assert gpt2.config.resid_pdrop == gpt2.config.embd_pdrop == gpt2.config.attn_pdrop == 0.0
    llama = tiny_llama(head=LlamaForTokenClassification, num_labels=3, initializer_range=0.2)
    assert llama.score.out_features == 3 and 0.18 < float(llama.model.embed_tokens.weight.std()) < 0.22
