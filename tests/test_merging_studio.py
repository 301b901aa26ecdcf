"""The Merging studio's core (lora_core.teach.merging_studio): two adapters trained in turn on one copy of the base,
merged and scored, the sweep over PEFT's eleven types, the mixed batch, and one adapter at weight 1.0 against PEFT."""

import math

import pytest
import torch
from conftest import GPT2_TOKENS, tiny_gpt2

import lora_core as lc
from lora_core.serve.settings import Settings
from lora_core.teach import merging_studio as ms
from lora_core.weighted import COMBINATION_TYPES

PLAN = ms.StudioPlan(steps=2, r=4, lora_alpha=8, lr=5e-3, target_modules=("c_attn",), batch_size=4, heldout=3)


def tiny_base():
    """A tiny GPT-2 that GPT-2's tokenizer fits (its vocabulary, 128 positions for the longest E2E pair)."""
    return tiny_gpt2(n_positions=128, pad_token_id=50256, **GPT2_TOKENS), lc.models.gpt2_tokenizer()


@pytest.fixture(scope="module")
def studio() -> ms.Studio:
    base, tok = tiny_base()
    studio = ms.Studio.start(base, tok, PLAN)
    for _ in range(100):
        if studio.ready:
            break
        studio.advance(seconds=0.5)
    assert studio.ready
    return studio


def test_each_adapter_trains_its_own_factors_on_a_copy_of_the_base(studio):
    names = {adapter: trainer.names for adapter, trainer in studio.trainers.items()}
    assert names["recsys"] and all(".recsys." in n for n in names["recsys"])
    assert names["e2e"] and all(".e2e." in n for n in names["e2e"])
    assert [len(studio.losses[a]) for a in ms.ADAPTERS] == [2, 2]
    layer = lc.lora_layers(studio.model)[0][1]
    for adapter in ms.ADAPTERS:  # B starts at zero: both moved, so both trained
        assert layer.adapter(adapter).B.abs().max() > 0
    assert all(not p.requires_grad for name, p in studio.model.named_parameters() if ".lora_" not in name)
    assert studio.progress()["fraction"] == 1.0 and studio.progress()["phase"] == "ready"
    with pytest.raises(ValueError, match=r"^merged="):               # nothing merged yet: no "merged" row
        ms.mixed_generations(studio, ["a prompt"])


def test_scores_are_finite_for_the_base_both_sources_and_a_merge(studio):
    merged = ms.merge_and_score(studio, "ties", [0.5, 0.5], density=0.5)
    assert [row["model"] for row in merged["rows"]] == ["base", "recsys", "e2e", "merged (ties, 0.5 / 0.5)"]
    for row in merged["rows"]:
        losses = [v for k, v in row.items() if k != "model"]
        assert len(losses) == 3 and all(math.isfinite(v) and v > 0 for v in losses)
    assert [p["role"] for p in merged["points"]] == ["base", "source", "source", "merged"]
    assert merged["rank"] == PLAN.r and merged["density"] == 0.5
    # the base scores what the unadapted model scores
    with lc.disable_lora(studio.model):
        base = lc.training.completion_loss(studio.model, studio.tokenizer, studio.heldout("e2e"), PLAN.seq_len)[0]
    assert merged["rows"][0][f"task 2 ({ms.TASKS['e2e']}) loss"] == pytest.approx(base, abs=1e-6)


def test_weight_one_on_one_adapter_gives_back_its_scores(studio):
    merged = ms.merge_and_score(studio, "linear", [1.0, 0.0])   # the other source's factors get √0 = 0
    assert studio.scores["merged"] == pytest.approx(studio.scores["recsys"], abs=1e-5)
    assert merged["density"] is None                              # linear prunes nothing: density is not used


def test_a_bad_merge_keeps_the_previous_one(studio):
    ms.merge_and_score(studio, "linear", [0.5, 0.5])
    before, label = studio.merged, studio.merged_label
    with pytest.raises(ValueError, match=r"density=0\.0 is not allowed"):
        ms.merge_and_score(studio, "ties", [0.5, 0.5], density=0.0)
    assert studio.merged == before and studio.merged_label == label
    assert before in studio.model.lora_configs
    assert [n for n in studio.model.lora_configs if n.startswith("merged")] == [before]


def test_the_sweep_scores_all_eleven_types_and_leaves_the_model_as_it_was(studio):
    configs, seen = list(studio.model.lora_configs), []
    result = ms.sweep(studio, [0.7, 0.3], density=0.5, on_type=lambda i, kind: seen.append(kind))
    assert [row["model"] for row in result["rows"]] == list(COMBINATION_TYPES) == seen
    assert len(COMBINATION_TYPES) == 11
    ranks = {row["model"]: row["rank"] for row in result["rows"]}
    assert ranks["cat"] == 2 * PLAN.r and {r for k, r in ranks.items() if k != "cat"} == {PLAN.r}
    assert all(math.isfinite(p["x"]) and math.isfinite(p["y"]) for p in result["points"])
    assert result["best"] in COMBINATION_TYPES
    assert list(studio.model.lora_configs) == configs


def test_the_mixed_batch_rows_equal_their_own_runs(studio):
    ms.merge_and_score(studio, "svd", [0.5, 0.5])
    prompts = [studio.heldout("recsys")[0][0], studio.heldout("e2e")[0][0]]
    result = ms.mixed_generations(studio, prompts, max_new_tokens=4)
    assert [row["row"] for row in result["rows"]] == ["recsys", "e2e", "merged", "__base__"]
    assert result["same"] == result["total"] == 8
    assert result["max_abs_dlogit"] < 1e-4


def test_one_adapter_at_weight_one_ours_unchanged_peft_sqrt_r_with_rslora():
    pytest.importorskip("peft")
    before = torch.get_rng_state()
    check = ms.one_adapter_check(r=4)
    assert torch.equal(torch.get_rng_state(), before)             # PEFT's init draws went to a local generator
    ours, peft = check["ours"], check["peft"]
    for rslora in (False, True):
        assert ours[rslora][ms.RATIO] == pytest.approx(1.0, abs=1e-6)
        assert ours[rslora][ms.DLOGIT] < 1e-5
        assert ours[rslora]["merged scaling"] == 1.0
    assert peft[False][ms.RATIO] == pytest.approx(1.0, abs=1e-6) and peft[False][ms.DLOGIT] < 1e-5
    assert peft[True][ms.RATIO] == pytest.approx(2.0, abs=1e-5)   # √4: peft issue 3761
    assert peft[True]["merged scaling"] == pytest.approx(2.0) and peft[True][ms.DLOGIT] > 0.1
    assert ms.one_adapter_check(r=16)["peft"][True][ms.RATIO] == pytest.approx(4.0, abs=1e-5)


@pytest.mark.parametrize(("call", "field"), [
    (lambda s: ms.merge_and_score(s, "linear", [3.0, 0.5]), "weights"),
    (lambda s: ms.merge_and_score(s, "linear", [float("nan"), 0.5]), "weights"),
    (lambda s: ms.merge_and_score(s, "linear", [0.5]), "weights"),
    (lambda s: ms.merge_and_score(s, "average", [0.5, 0.5]), "combination_type"),
    (lambda s: ms.merge_and_score(s, "dare_ties", [0.5, 0.5], density=1.5), "density"),
    (lambda s: ms.sweep(s, [0.5, 0.5], density=0.0), "density"),
    (lambda s: ms.mixed_generations(s, "one prompt"), "prompts"),
    (lambda s: ms.mixed_generations(s, ["", "x"]), "prompts"),
])
def test_bad_input_is_a_value_error_naming_the_field(studio, call, field):
    with pytest.raises(ValueError, match=rf"^{field}="):
        call(studio)


@pytest.mark.parametrize(("plan", "field"), [
    (ms.StudioPlan(heldout=0, target_modules=("c_attn",)), "heldout"),
    (ms.StudioPlan(lora_alpha=0.0, target_modules=("c_attn",)), "lora_alpha"),
    (ms.StudioPlan(target_modules=()), "target_modules"),
    (ms.StudioPlan(target_modules=("q_proj",)), "target_modules"),   # nothing of that name in GPT-2
    (ms.StudioPlan(steps=0, target_modules=("c_attn",)), "steps"),
])
def test_a_bad_plan_is_refused_before_anything_is_built(plan, field):
    base, tok = tiny_base()
    with pytest.raises(ValueError, match=rf"{field}="):
        ms.Studio.start(base, tok, plan)
    assert not hasattr(base, "lora_configs")                       # the shared base was never touched


def test_the_servers_limits_apply_and_an_untrained_studio_cannot_merge():
    base, tok = tiny_base()
    with pytest.raises(ValueError, match=r"steps=20 is over this server's limit"):
        ms.Studio.start(base, tok, ms.StudioPlan(target_modules=("c_attn",)), Settings(max_steps=10))
    fresh = ms.Studio.start(base, tok, PLAN)
    with pytest.raises(ValueError, match=r"^studio="):
        ms.merge_and_score(fresh, "linear", [0.5, 0.5])
    with pytest.raises(ValueError, match=r"^r="):
        ms.one_adapter_check(r=0)

