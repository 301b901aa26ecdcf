"""Oracle tests for task_type and fan_in_fan_out: lora_core against HF PEFT 0.21 on the same weights.

PEFT's wrappers for SEQ_CLS, TOKEN_CLS and QUESTION_ANS add the model's head to modules_to_save, so the
head trains in full and is saved with the adapter (peft_model.py). Every comparison uses a non-zero B
(init_lora_weights=False) and a perturbed head copy, so equal logits compare something.
"""

import copy
import json
import warnings

import pytest
import torch
from conftest import load_ours_into_peft, tiny_gpt2, tiny_llama
from peft import LoraConfig as PeftLoraConfig
from peft import PeftModel, get_peft_model
from peft.utils import set_peft_model_state_dict
from peft.utils.peft_types import TaskType
from safetensors.torch import load_file
from transformers import (
    GPT2ForQuestionAnswering,
    GPT2ForSequenceClassification,
    GPT2ForTokenClassification,
    GPT2LMHeadModel,
    LlamaForCausalLM,
    LlamaForTokenClassification,
)

import lora_core as lc
from lora_core.config import TASK_TYPES


def _gpt2(head):
    def make():
        return tiny_gpt2(head=head, pad_token_id=0, num_labels=2)
    make.__name__ = head.__name__
    return make


def _llama(head):
    def make():
        return tiny_llama(head=head, num_labels=3)
    make.__name__ = head.__name__
    return make


seq_cls, token_cls, qa = (_gpt2(c) for c in (GPT2ForSequenceClassification, GPT2ForTokenClassification,
                                               GPT2ForQuestionAnswering))
llama_token_cls, llama_lm = _llama(LlamaForTokenClassification), _llama(LlamaForCausalLM)
gpt2_lm = _gpt2(GPT2LMHeadModel)

HEAD_CASES = {  # id: (model, config, the head's adapter-file keys)
    "seq_cls-score": (seq_cls, dict(r=2, target_modules=["c_attn"], task_type="SEQ_CLS"), ["score.weight"]),
    "seq_cls-plus-ln_f": (seq_cls, dict(r=2, target_modules=["c_attn"], task_type="SEQ_CLS", modules_to_save=["ln_f"]),
                          ["score.weight", "transformer.ln_f.bias", "transformer.ln_f.weight"]),
    "seq_cls-all-linear": (seq_cls, dict(r=2, target_modules="all-linear", task_type="SEQ_CLS"), ["score.weight"]),
    "seq_cls-score-targeted": (seq_cls, dict(r=2, target_modules=["c_attn", "score"], task_type="SEQ_CLS"),
                               ["score.weight"]),
    "token_cls-classifier": (token_cls, dict(r=2, target_modules=["c_attn"], task_type="TOKEN_CLS"),
                             ["classifier.bias", "classifier.weight"]),
    "llama-token_cls-score": (llama_token_cls, dict(r=2, target_modules=["q_proj", "v_proj"], task_type="TOKEN_CLS"),
                              ["score.bias", "score.weight"]),
    "qa-qa_outputs": (qa, dict(r=2, target_modules=["c_attn", "c_fc"], task_type="QUESTION_ANS"),
                      ["qa_outputs.bias", "qa_outputs.weight"]),
}


def _peft_model(base, kw):
    """PEFT's model for `kw` (a copy of the lists: PEFT extends modules_to_save in place)."""
    kw = copy.deepcopy(kw)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # PEFT's Conv1D notice
        return get_peft_model(base, PeftLoraConfig(init_lora_weights=False, **kw))


def build_pair(make, kw):
    base = make()
    ours = copy.deepcopy(base)
    lc.inject_lora(ours, lc.LoraConfig(init_lora_weights=False, **kw))
    theirs = _peft_model(copy.deepcopy(base), kw)
    return load_ours_into_peft(ours, theirs)


def _outputs(model, tokens) -> list[torch.Tensor]:
    with torch.no_grad():
        out = model(input_ids=tokens)
    return [out.start_logits, out.end_logits] if hasattr(out, "start_logits") else [out.logits]


def _assert_same(a: list[torch.Tensor], b: list[torch.Tensor]) -> None:
    for x, y in zip(a, b, strict=True):
        torch.testing.assert_close(x, y, rtol=1e-5, atol=1e-5)


# --- task_type: the allowed values --------------------------------------------------------------
def test_task_types_are_peft_task_types():
    assert TASK_TYPES == tuple(t.value for t in TaskType)
    for t in TaskType:  # PEFT's enum members are accepted and stored as plain strings
        tt = lc.LoraConfig(task_type=t).task_type
        assert tt == t.value and type(tt) is str


@pytest.mark.parametrize("bad", ["TOKEN_CLASSIFICATION", "causal_lm", "", 5],
                         ids=["TOKEN_CLASSIFICATION", "lower-case-causal_lm", "empty-string", "int-5"])
def test_unknown_task_type_is_refused_as_peft_refuses_it(bad):
    with pytest.raises(ValueError, match="Invalid task type"):
        PeftLoraConfig(task_type=bad)
    with pytest.raises(ValueError) as e:
        lc.LoraConfig(task_type=bad)
    assert f"task_type={bad!r}" in str(e.value) and "SEQ_CLS" in str(e.value) and "TOKEN_CLS" in str(e.value)


# --- the heads: counts, logits, adapter files -----------------------------------------------------
def test_the_issues_sequence_classifier_trains_576_parameters():
    ours, theirs = build_pair(*HEAD_CASES["seq_cls-score"][:2])
    assert lc.trainable_parameters(ours)[0] == theirs.get_nb_trainable_parameters()[0] == 576  # 512 + score 32×2
    assert lc.adapter_config(ours).modules_to_save == ["classifier", "score"]


@pytest.mark.parametrize("make,kw,head", HEAD_CASES.values(), ids=HEAD_CASES.keys())
def test_task_heads_count_and_wrap_as_in_peft(make, kw, head):
    ours, theirs = build_pair(make, kw)
    assert lc.trainable_parameters(ours) == theirs.get_nb_trainable_parameters()
    peft_lora = sorted(n.removeprefix("base_model.model.") for n, m in theirs.named_modules()
                       if hasattr(m, "lora_A") and hasattr(m, "base_layer"))
    assert sorted(n for n, _ in lc.lora_layers(ours)) == peft_lora
    peft_saved = sorted(n.removeprefix("base_model.model.") for n, m in theirs.named_modules()
                        if type(m).__name__ == "ModulesToSaveWrapper")
    assert sorted(n for n, m in ours.named_modules() if isinstance(m, lc.ModulesToSaveWrapper)) == peft_saved


@pytest.mark.parametrize("make,kw,head", HEAD_CASES.values(), ids=HEAD_CASES.keys())
def test_task_heads_logits_match_peft_with_nonzero_b(make, kw, head, tokens):
    ours, theirs = build_pair(make, kw)
    assert all(float(layer.adapter().B.detach().abs().sum()) > 0 for _, layer in lc.lora_layers(ours))
    _assert_same(_outputs(ours, tokens), _outputs(theirs, tokens))
    base = _outputs(make(), tokens)
    assert max(float((a - b).abs().max()) for a, b in zip(_outputs(ours, tokens), base, strict=True)) > 1e-3


@pytest.mark.parametrize("make,kw,head", HEAD_CASES.values(), ids=HEAD_CASES.keys())
def test_our_adapter_with_its_head_loads_into_peft(make, kw, head, tmp_path, tokens):
    ours, _ = build_pair(make, kw)
    lc.save_adapter(ours, tmp_path)
    saved = load_file(tmp_path / "adapter_model.safetensors")
    assert sorted(k.removeprefix("base_model.model.") for k in saved if ".lora_" not in k) == head
    config = json.loads((tmp_path / "adapter_config.json").read_text())
    assert config["task_type"] == kw["task_type"]
    assert config["modules_to_save"] == [*kw.get("modules_to_save", []), *lc.LoraConfig(**kw).task_heads]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs = PeftModel.from_pretrained(make(), tmp_path).eval()
    _assert_same(_outputs(ours, tokens), _outputs(theirs, tokens))


@pytest.mark.parametrize("make,kw,head", HEAD_CASES.values(), ids=HEAD_CASES.keys())
def test_peft_adapter_with_its_head_loads_into_lora_core(make, kw, head, tmp_path, tokens):
    _, theirs = build_pair(make, kw)
    theirs.save_pretrained(tmp_path)
    saved = load_file(tmp_path / "adapter_model.safetensors")
    assert sorted(k.removeprefix("base_model.model.") for k in saved if ".lora_" not in k) == head  # PEFT's names
    ours = lc.load_adapter(make(), tmp_path).eval()
    assert lc.trainable_parameters(ours) == theirs.get_nb_trainable_parameters()
    _assert_same(_outputs(ours, tokens), _outputs(theirs, tokens))


@pytest.mark.parametrize("make,task", [(token_cls, "TOKEN_CLS"), (qa, "QUESTION_ANS")], ids=["token_cls", "qa"])
def test_a_late_head_that_is_also_a_lora_target_is_refused_as_in_peft(make, task):
    # TOKEN_CLS and QUESTION_ANS add their head after injection: with all-linear the head already has LoRA,
    # and PEFT's ModulesToSaveWrapper refuses to wrap a LoRA layer (TypeError). Ours refuses before any change.
    with pytest.raises(TypeError, match="modules_to_save cannot be applied"):
        _peft_model(make(), dict(r=2, target_modules="all-linear", task_type=task))
    model = make()
    before = [n for n, _ in model.named_modules()]
    with pytest.raises(ValueError, match=r"target module '(classifier|qa_outputs)' is also saved in full"):
        lc.inject_lora(model, lc.LoraConfig(r=2, target_modules="all-linear", task_type=task))
    assert [n for n, _ in model.named_modules()] == before and not hasattr(model, "lora_configs")


@pytest.mark.parametrize("task", [None, "CAUSAL_LM", "FEATURE_EXTRACTION", "SEQ_CLS", "TOKEN_CLS", "QUESTION_ANS"],
                         ids=lambda task: task or "no-task_type")
def test_tasks_without_their_head_in_the_model_change_nothing(task):
    # A causal LM has no classifier/score/qa_outputs: the task's head names match nothing, silently, as in PEFT.
    kw = dict(r=2, target_modules=["c_attn"], task_type=task)
    ours, theirs = build_pair(gpt2_lm, kw)
    assert lc.trainable_parameters(ours) == theirs.get_nb_trainable_parameters() == (512, 29_056)
    assert not any(isinstance(m, lc.ModulesToSaveWrapper) for m in ours.modules())


def test_seq_2_seq_lm_changes_nothing_about_the_adapter():
    # PEFT's Seq2Seq wrapper needs an encoder-decoder for generation (on GPT-2 it raises while it is built);
    # the adapter it would hold is the plain one, which is what lora_core injects.
    cfg = lc.LoraConfig(r=2, target_modules=["c_attn"], task_type="SEQ_2_SEQ_LM", init_lora_weights=False)
    model = gpt2_lm()
    lc.inject_lora(model, cfg)
    assert lc.trainable_parameters(model)[0] == 512 and lc.adapter_config(model).modules_to_save is None


def test_a_modules_to_save_name_that_matches_nothing_is_still_refused():
    with pytest.raises(ValueError, match=r"modules_to_save=\['lm_hed'\] matches no module"):
        lc.inject_lora(seq_cls(), lc.LoraConfig(r=2, target_modules=["c_attn"], task_type="SEQ_CLS",
                                                modules_to_save=["lm_hed"]))


# --- fan_in_fan_out: PEFT's warnings, the layer's own layout, the file ----------------------------
def _fan_warnings(build) -> tuple[object, list[str]]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = build()
    return out, [str(w.message) for w in caught if "fan_in_fan_out" in str(w.message)]


FAN_CASES = {  # id: (model, config); each is built by PEFT and by lora_core
    "conv1d-False": (gpt2_lm, dict(r=2, target_modules=["c_attn"], fan_in_fan_out=False)),
    "conv1d-True": (gpt2_lm, dict(r=2, target_modules=["c_attn"], fan_in_fan_out=True)),
    "linear-True": (llama_lm, dict(r=2, target_modules=["q_proj", "v_proj"], fan_in_fan_out=True)),
    "linear-False": (llama_lm, dict(r=2, target_modules=["q_proj", "v_proj"], fan_in_fan_out=False)),
    "conv1d-then-linear-False": (gpt2_lm, dict(r=2, target_modules=["c_attn", "lm_head"], fan_in_fan_out=False)),
    "conv1d-then-linear-True": (gpt2_lm, dict(r=2, target_modules=["c_attn", "lm_head"], fan_in_fan_out=True)),
    "embedding-True": (gpt2_lm, dict(r=2, target_modules=["wte", "c_attn"], fan_in_fan_out=True)),
}


@pytest.mark.parametrize("make,kw", FAN_CASES.values(), ids=FAN_CASES.keys())
def test_fan_in_fan_out_warns_and_settles_as_in_peft(make, kw, tmp_path, tokens):
    base = make()
    theirs, peft_said = _fan_warnings(lambda: get_peft_model(copy.deepcopy(base),
                                                             PeftLoraConfig(init_lora_weights=False, **kw)))
    ours = copy.deepcopy(base)
    _, we_said = _fan_warnings(lambda: lc.inject_lora(ours, lc.LoraConfig(init_lora_weights=False, **kw)))
    assert we_said == peft_said                               # the same warnings, in the same order
    peft_layers = {n.removeprefix("base_model.model."): m for n, m in theirs.named_modules()
                   if hasattr(m, "lora_A") and hasattr(m, "base_layer")}
    for name, layer in lc.lora_layers(ours):                   # each layer uses its own layout, as PEFT's
        assert layer.fan_in_fan_out == bool(getattr(peft_layers[name], "fan_in_fan_out", True)), name
    set_peft_model_state_dict(theirs, lc.adapter_state_dict(ours))
    with torch.no_grad():
        torch.testing.assert_close(ours.eval()(tokens).logits, theirs.eval()(tokens).logits, rtol=1e-5, atol=1e-5)
    theirs.save_pretrained(tmp_path / "peft")
    lc.save_adapter(ours, tmp_path / "ours")
    peft_file, our_file = (json.loads((tmp_path / k / "adapter_config.json").read_text()) for k in ("peft", "ours"))
    assert our_file["fan_in_fan_out"] == peft_file["fan_in_fan_out"]


def test_the_warnings_say_what_peft_says():
    _, said = _fan_warnings(lambda: lc.inject_lora(gpt2_lm(), lc.LoraConfig(target_modules=["c_attn"],
                                                                          fan_in_fan_out=False)))
    assert said == ["fan_in_fan_out is set to False but the target module is `Conv1D`. "
                    "Setting fan_in_fan_out to True."]
    _, said = _fan_warnings(lambda: lc.inject_lora(llama_lm(), lc.LoraConfig(target_modules=["q_proj"],
                                                                           fan_in_fan_out=True)))
    assert said == ["fan_in_fan_out is set to True but the target module is `torch.nn.Linear`. "
                    "Setting fan_in_fan_out to False."]


@pytest.mark.parametrize("make,targets,written", [(gpt2_lm, ["c_attn"], True), (llama_lm, ["q_proj"], False),
                                                  (gpt2_lm, ["c_attn", "lm_head"], False)],
                         ids=["conv1d", "linear", "conv1d-then-linear"])
def test_unset_fan_in_fan_out_stays_silent_and_writes_what_peft_writes(make, targets, written, tmp_path):
    model = make()
    _, said = _fan_warnings(lambda: lc.inject_lora(model, lc.LoraConfig(r=2, target_modules=targets)))
    assert said == [] and lc.LoraConfig().fan_in_fan_out is None
    lc.save_adapter(model, tmp_path)
    assert json.loads((tmp_path / "adapter_config.json").read_text())["fan_in_fan_out"] is written
