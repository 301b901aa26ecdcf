"""The measurements the claims check and the quiz show (lora_core.teach.evidence, training_runs): merging is
exact, zero-init gradients are what the paper says, step times cover three setups, and the seed's BLEU
experiment trains a copy, never the caller's base."""

import torch
from conftest import tiny_gpt2

import lora_core as lc
from lora_core.teach import evidence, training_runs


def test_merge_is_exact_and_removes_every_lora_layer():
    m = evidence.merged_vs_unmerged()
    assert m["adapter_effect"] > 1e-2                        # a live adapter, not B = 0
    assert m["max_abs_logit_diff"] < 1e-5 and m["lora_layers_left"] == 0
    assert m["params_merged"] == m["params_base"]


def test_zero_init_gradients():
    lora, both_zero = evidence.zero_init_gradients()
    assert lora["‖∂L/∂A‖"] == 0 and lora["‖∂L/∂B‖"] > 0
    assert both_zero["‖∂L/∂A‖"] == 0 and both_zero["‖∂L/∂B‖"] == 0


def test_step_times_measure_three_setups():
    t = training_runs.step_times(repeats=1, batch=1, seq=8)
    assert set(t["ms"]) == {"frozen base (fwd+bwd)", "LoRA all-linear", "full fine-tuning"}
    assert all(v > 0 for v in t["ms"].values()) and t["relative"]["frozen base (fwd+bwd)"] == 1
    assert t["threads"] == torch.get_num_threads()          # reported as a fact, never set




def test_seed_bleu_experiment_runs_the_seed_setup_on_a_copy():
    base = tiny_gpt2(vocab_size=50257, n_layer=1, n_positions=64)
    copy = lc.shared_base_copy(base)
    out = training_runs.seed_bleu_experiment(copy, lc.models.gpt2_tokenizer(), n_train=2, epochs=2, eval_limit=2,
                                           max_new_tokens=4)
    assert (out["train_pairs"], out["epochs"], out["test_pairs"]) == (2, 2, 2)
    assert 0 <= out["bleu_after"] <= 100 and len(out["train_loss"]) == 2
    assert lc.lora_layers(copy) and not lc.lora_layers(base)          # the caller's base is never touched


def test_classification_head_trains_and_is_saved_only_with_seq_cls():
    c = evidence.classification_head_check(r=2)
    assert (c["without"], c["with"], c["head_params"]) == (512, 576, 64)      # 2·2·(32+96); score 32·2
    without, with_seq_cls = c["rows"]
    assert not without["head trainable (lora_core)"] and not without["head in adapter file (lora_core)"]
    assert with_seq_cls["head trainable (lora_core)"] and with_seq_cls["head in adapter file (lora_core)"]
    assert "base_model.model.score.weight" in c["adapter_file_keys"][("'SEQ_CLS'", "lora_core")]
    if c["available"]:                                                        # PEFT agrees, count and file alike
        assert (without["PEFT trainable"], with_seq_cls["PEFT trainable"]) == (512, 576)
        assert with_seq_cls["PEFT class"] == "PeftModelForSequenceClassification"
        assert not without["head in adapter file (PEFT)"] and with_seq_cls["head in adapter file (PEFT)"]
        assert c["adapter_file_keys"][("'SEQ_CLS'", "PEFT")] == c["adapter_file_keys"][("'SEQ_CLS'", "lora_core")]
