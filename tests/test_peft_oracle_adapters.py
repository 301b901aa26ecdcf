"""Named adapters against PEFT 0.21: the same names, keys, draws and (with several adapters) the same outputs.

Every comparison of outputs uses non-zero factors (init_lora_weights=False, copied across), with alphas that
differ from r, so that a wrong scaling or a dropped adapter shows.
"""

import pytest
import torch
from conftest import tiny_gpt2
from peft import LoraConfig as PeftLoraConfig
from peft import get_peft_model

import lora_core as lc


@pytest.mark.parametrize("init", [True, False, "gaussian"])
def test_factors_drawn_from_the_global_rng_are_peft_s_embedding_included(init):
    """Without a generator every factor comes from torch's global RNG in PEFT's order: an Embedding's A and B are
    drawn with torch.randn first, then reset (A = 0, B normal), so the layers after it get PEFT's stream too."""
    kw = dict(r=4, lora_alpha=8, target_modules=["wte", "c_attn", "c_fc"], init_lora_weights=init)
    torch.manual_seed(11)
    ours = tiny_gpt2()
    lc.inject_lora(ours, lc.LoraConfig(**kw))
    after_ours = torch.get_rng_state()
    torch.manual_seed(11)
    theirs = get_peft_model(tiny_gpt2(), PeftLoraConfig(**kw))
    assert torch.equal(torch.get_rng_state(), after_ours)            # the same number of draws
    peft_state = {k.removeprefix("base_model.model."): t for k, t in theirs.state_dict().items()}
    lora = {k: t for k, t in ours.state_dict().items() if ".lora_" in k}
    assert len(lora) == 2 * 5                                        # wte, and c_attn and c_fc in 2 blocks
    for key, t in lora.items():
        assert torch.equal(t, peft_state[key]), key
