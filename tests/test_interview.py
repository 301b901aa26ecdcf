"""The interview quiz (lora_core.teach.interview): its numeric answers match independent computations (PEFT's
counts, a real layer's shapes), answers are checked fairly in many formats, and every question has evidence."""

import dataclasses
import json
import math
import random
import re
import time

import pytest
import torch
from conftest import ROOT

import lora_core as lc
from lora_core.quant import memory
from lora_core.teach import peft_reference
from lora_core.teach.interview import numeric, question, quiz

SEEDS = range(6)
BYTES_PER_PARAM = {"param": 8, "fp32": 12, "mixed": 16}   # bf16 weights + grads + AdamW, by hand (issue 12)
SEED_IDS = [f"seed{seed}" for seed in SEEDS]


def _cfg(params: dict) -> lc.LoraConfig:
    targets = params["targets"]
    return lc.LoraConfig(r=params["r"], target_modules=list(targets) if isinstance(targets, tuple) else targets)


def test_the_same_seed_draws_the_same_questions():
    assert [q.text for q in quiz.question_bank(seed=5)] == [q.text for q in quiz.question_bank(seed=5)]
    assert quiz.make_question("layer_params", random.Random(2)) == quiz.make_question("layer_params", 2)


# --- the content table -------------------------------------------------------------------------------------------
def test_numeric_table_entries_build_their_questions():
    assert len(numeric.NUMERIC) == 13 and [q.kind for q in numeric.NUMERIC] == quiz.kinds()[:13]
    rng = random.Random(0)
    for entry in numeric.NUMERIC:
        q = entry.question(rng)
        assert (q.kind, q.topic) == (entry.kind, entry.topic) and q.numeric, entry.kind
        assert "{" not in q.text and "{" not in q.formula, entry.kind      # every placeholder was filled
        assert quiz.check_answer(q, q.expected_text).correct, entry.kind
    twice = numeric.NUMERIC[:2] + numeric.NUMERIC[:1]
    with pytest.raises(ValueError, match="kind='layer_params' appears twice"):
        question.by_kind(twice)
    with pytest.raises(ValueError, match="topic='nope' of question kind 'layer_params'"):
        question.by_kind((dataclasses.replace(numeric.NUMERIC[0], topic="nope"),))


# --- numeric answers against independent computations ----------------------------------------------------------
@pytest.mark.parametrize("seed", SEEDS, ids=SEED_IDS)
def test_model_counts_match_peft(seed):
    q = quiz.make_question("model_trainable", seed)
    trainable, total = peft_reference.peft_reference_count(q.params["model"], _cfg(q.params))
    assert q.expected == trainable
    pct = quiz.make_question("trainable_percent", seed)
    trainable, total = peft_reference.peft_reference_count(pct.params["model"], _cfg(pct.params))
    assert pct.expected == pytest.approx(100 * trainable / total)


@pytest.mark.parametrize("seed", SEEDS, ids=SEED_IDS)
def test_layer_answers_match_the_shapes_of_a_real_layer(seed):
    q = quiz.make_question("layer_params", seed)
    p = q.params
    pattern = p["module"].replace(".", r"\.").replace("*", r"\d+")
    layer = next(m for n, m in lc.build_on_meta(p["model"]).named_modules() if re.fullmatch(pattern, n))
    assert layer.weight.numel() == p["in_features"] * p["out_features"]
    wrapped = lc.layers.make_lora_layer(layer, lc.LoraConfig(r=p["r"]), "layer")   # on the meta device
    assert q.expected == wrapped.adapter().A.numel() + wrapped.adapter().B.numel()

    share = quiz.make_question("percent_of_weight", seed)
    i, o, r = (share.params[k] for k in ("in_features", "out_features", "r"))
    assert share.expected == pytest.approx(100 * (r * i + o * r) / (i * o))

    even = quiz.make_question("break_even_rank", seed)
    i, o = even.params["in_features"], even.params["out_features"]
    assert even.expected == next(r for r in range(1, min(i, o) + 1) if r * (i + o) >= i * o)


def test_delta_rank_is_the_rank_of_a_random_product():
    q = quiz.make_question("delta_rank", 3)
    r = q.params["r"]
    B, A = torch.randn(40, r, dtype=torch.float64), torch.randn(r, 30, dtype=torch.float64)
    assert q.expected == r == torch.linalg.matrix_rank(B @ A)


@pytest.mark.parametrize("seed", SEEDS, ids=SEED_IDS)
def test_scalar_answers(seed):
    s = quiz.make_question("scaling", seed)
    assert s.expected == s.params["lora_alpha"] / s.params["r"]
    rs = quiz.make_question("rslora_scaling", seed)
    assert rs.expected == pytest.approx(rs.params["lora_alpha"] / math.sqrt(rs.params["r"]))
    d = quiz.make_question("dropout_scale", seed)
    assert d.expected == pytest.approx(1 / (1 - d.params["p"]))
    nf4 = quiz.make_question("nf4_bits", seed)
    b = nf4.params["block_size"]
    assert nf4.expected == pytest.approx(4 + (8 / b + 32 / (b * 256) if nf4.params["double_quant"] else 32 / b))


@pytest.mark.parametrize("seed", SEEDS, ids=SEED_IDS)
def test_memory_answers(seed):
    q = quiz.make_question("optimizer_memory", seed)
    p = q.params
    if p["method"] == "full":   # weights + gradients + AdamW states, in the accounting the question names (issue 12)
        n = sum(t.numel() for t in lc.build_on_meta(p["model"]).parameters())
        assert q.expected == pytest.approx(BYTES_PER_PARAM[p["precision"]] * n / 2**30)
    else:
        trainable, _ = peft_reference.peft_reference_count(p["model"], lc.LoraConfig(r=p["r"]))
        assert q.expected == pytest.approx(8 * trainable / 2**20)
    w = quiz.make_question("weight_memory", seed)
    if w.params["method"] == "full":
        n = sum(t.numel() for t in lc.build_on_meta(w.params["model"]).parameters())
        assert w.expected == pytest.approx(n * {"fp32": 4, "bf16": 2}[w.params["weight_dtype"]] / 2**30)
    f = quiz.make_question("adapter_file", seed)
    trainable, _ = peft_reference.peft_reference_count(f.params["model"], _cfg(f.params))
    assert f.expected == pytest.approx(4 * trainable / 2**20)


# --- checking answers ------------------------------------------------------------------------------------------
def test_counts_are_accepted_in_many_formats_and_exactly():
    q = quiz.make_question("model_trainable", 0)
    n = int(q.expected)
    for text in (f"{n:,}", str(n), f"{n:_}", f"{n:,}".replace(",", " "), f"  {n} params "):
        assert quiz.check_answer(q, text).correct, text
    wrong = quiz.check_answer(q, str(n + 1))
    assert not wrong.correct and "Σ count·r·(in+out)" in wrong.explanation and f"{n:,}" in wrong.explanation


def test_percentages_scales_and_fractions():
    q = quiz.make_question("trainable_percent", 2)
    v = q.expected
    for text in (f"{v:.4f}%", f"{v:.3f} %", f"{v / 100:.7f}", f"{v:.2g}%"):
        assert quiz.check_answer(q, text).correct, text
    assert not quiz.check_answer(q, f"{2 * v:.4f}%").correct
    s = quiz.make_question("scaling", 1)
    alpha, r = s.params["lora_alpha"], s.params["r"]
    assert quiz.check_answer(s, f"{alpha}/{r}").correct
    bad = quiz.check_answer(s, f"{alpha / math.sqrt(r) + 1:.3f}")
    assert not bad.correct and f"α/r = {alpha}/{r}" in bad.explanation


def test_unreadable_answers_are_explained_not_crashed():
    q = quiz.make_question("layer_params", 4)
    v = quiz.check_answer(q, "twelve thousand")
    assert not v.correct and "Could not read a number" in v.explanation and "r·(in+out)" in v.explanation


@pytest.mark.parametrize("text,value,percent", [("147,456", 147456, False), ("0.18%", 0.18, True),
                                                 ("1.5k", 1500, False), ("≈ 2.83", 2.83, False),
                                                 ("3.6 GiB", 3.6, False), ("1e-3", 0.001, False)],
                         ids=["thousands-comma", "percent", "k-suffix", "approx-sign", "with-unit", "exponent"])
def test_parse_number(text, value, percent):
    got = quiz.parse_number(text)
    assert got.value == pytest.approx(value) and got.percent == percent


def test_concept_answers_are_checked_for_key_ideas():
    q = quiz.make_question("why_b_zero")
    assert quiz.check_answer(q, "So that ΔW is zero and the model starts as the pretrained one").correct
    v = quiz.check_answer(q, "because it is faster")
    assert not v.correct and "Missing" in v.explanation and q.answer in v.explanation


def test_bank_covers_every_kind_with_an_answer():
    bank = quiz.question_bank()
    assert len(bank) >= 30 and len({q.kind for q in bank}) == len(bank)
    assert all(q.expected_text for q in bank)
    assert {"counting", "scaling", "quantization", "memory", "speed", "variants"} <= set(quiz.topics())
    speed = quiz.make_question("not_faster")
    assert "Quoted, not measured by LoRA Lab" in speed.answer and "H100" in speed.answer  # external, labelled
    metrics = quiz.evidence_for(speed).metrics
    assert metrics["quoted (H100): full fine-tuning, compiled"] == "12.7 ms"
    assert "measured now: LoRA all-linear" in metrics
    with pytest.raises(ValueError, match="kind='nope'"):
        quiz.make_question("nope")


def test_light_concept_evidence_is_not_empty():
    for q in quiz.question_bank():
        if q.numeric:
            continue
        ev = quiz.evidence_for(q)
        assert ev.metrics or ev.table or ev.figure or ev.code, q.kind


# --- answers that are not numbers: a message, never an exception (issue 11, items 7 and 12) --------------------------
@pytest.mark.parametrize("text,reason", [("1/0", "can't divide by zero"), ("0/0", "can't divide by zero"),
                                         ("1.5/0.0k", "can't divide by zero"), ("1e400", "too large"),
                                         ("1e308k", "too large"), ("9" * 400, "too long"),
                                         ("nan", "is not a number"), ("inf", "is not a number")],
                         ids=["1/0", "0/0", "zero-denominator-with-suffix", "overflow", "overflow-by-suffix",
                              "400-digits", "nan", "inf"])
def test_a_number_that_has_no_value_is_explained(text, reason):
    q = quiz.make_question("layer_params", 4)
    v = quiz.check_answer(q, text)
    assert not v.correct and "Could not read a number" in v.explanation and reason in v.explanation
    assert "r·(in+out)" in v.explanation                      # the formula still comes back
    assert quiz.parse_number(text) is None
    with pytest.raises(ValueError, match=reason):
        quiz.read_number(text)


@pytest.mark.parametrize("text", ["1,2,3", "1 2 3", "12,34", "1234,567", "0,18", "1,234,56", "147,456 789"])
def test_separators_count_only_between_groups_of_three_digits(text):
    assert quiz.parse_number(text) is None
    with pytest.raises(ValueError, match="groups of three digits"):
        quiz.read_number(text)
    q = quiz.make_question("model_trainable", 0)
    assert "groups of three digits" in quiz.check_answer(q, text).explanation


@pytest.mark.parametrize("text,value", [("1,234", 1234), ("12,345,678", 12345678), ("147 456", 147456),
                                        ("1'234'567", 1234567), ("147_456", 147456), ("-1,234.5", -1234.5),
                                        ("147\u202f456 params", 147456), ("16 / 64", 0.25), ("1.5 k", 1500)])
def test_valid_thousands_groupings_still_read(text, value):
    assert quiz.read_number(text).value == pytest.approx(value)


def test_a_long_answer_is_echoed_shortened_and_read_in_linear_time():
    q = quiz.make_question("model_trainable", 0)
    for text in ("x" * 20_000, "9" * 20_000 + "z", "1," * 10_000):
        start = time.perf_counter()
        v = quiz.check_answer(q, text)
        assert time.perf_counter() - start < 0.5, text[:10]   # a backtracking regex took 70 s on the second
        assert not v.correct and text[:80] in v.explanation and text[:81] not in v.explanation
        assert "…" in v.explanation and len(v.explanation) < 600
    assert quiz.echo("short") == "'short'" and quiz.echo("y" * 100) == repr("y" * 80 + "…")


# --- issue 12: every answer checked against its source ---------------------------------------------------------------
def test_task_type_answer_says_a_missing_seq_cls_leaves_the_head_frozen_and_unsaved():
    q = quiz.make_question("task_type")
    assert "512" in q.answer and "576" in q.answer and "modules_to_save" in q.answer
    assert "not quietly lower quality" not in q.answer and "drops without an error" in q.answer
    assert "PeftModelForCausalLM" in q.answer                        # the causal-LM wrapper point stays
    # 2 layers · r=2 · (32 + 96) LoRA parameters, and a 32·2 score head (the tiny classifier's shapes).
    assert 2 * 2 * (32 + 96) == 512 and 512 + 32 * 2 == 576
    assert not quiz.check_answer(q, "It picks the PeftModel wrapper class").correct   # the head is a key idea now
    assert quiz.check_answer(q, "It picks the wrapper class, and for SEQ_CLS the score head is trained").correct
    ev = quiz.evidence_for(q)
    assert ev.metrics["trainable without task_type"] == "512"
    assert ev.metrics["trainable with task_type='SEQ_CLS'"] == "576"


def test_adamw_moments_follow_the_parameter_dtype_and_the_question_names_its_accounting():
    p = torch.nn.Parameter(torch.ones(4, dtype=torch.bfloat16))
    opt = torch.optim.AdamW([p])
    p.grad = torch.ones_like(p)
    opt.step()
    assert opt.state[p]["exp_avg"].dtype == opt.state[p]["exp_avg_sq"].dtype == torch.bfloat16
    seen = {}
    for seed in range(80):
        q = quiz.make_question("optimizer_memory", seed)
        if q.params["method"] == "full":
            seen.setdefault(q.params["precision"], q)
    assert set(seen) == set(BYTES_PER_PARAM)
    for precision, q in seen.items():
        assert memory.PRECISION_LABELS[precision] in q.text
        assert f"P·{BYTES_PER_PARAM[precision]} B" in q.formula
    assert "whatever the weight dtype" not in seen["param"].hint and "own dtype" in seen["param"].hint


def test_qlora_ideas_are_nf4_double_quantization_and_paged_optimizers():
    ideas = quiz.make_question("qlora_ideas")
    assert "paged optimizers" in ideas.answer and "2110.02861" in ideas.answer
    assert quiz.check_answer(ideas, "NF4, double quantization and paged optimizers").correct
    assert not quiz.check_answer(ideas, "NF4, blockwise absmax and double quantization").correct
    nf4 = quiz.make_question("nf4")
    assert "8-bit optimizers" in nf4.answer and "not from QLoRA" in nf4.answer


def test_paged_optimizers_answer_names_what_is_paged_and_computes_its_size():
    q = quiz.make_question("paged_optimizers")
    assert q.topic == "memory"
    for words in ("optimizer states", "unified memory", "CPU RAM", "gradient checkpointing", "long sequences",
                  "paging costs nothing"):
        assert words in q.answer, words
    states = memory.estimate_memory(memory.SEED_002_QLORA).optimizer
    assert states == 2 * 4 * lc.count_lora_parameters("Llama-2-7b", lc.LoraConfig(r=64)).trainable
    assert f"{states / 2**20:.0f} MiB" in q.answer
    assert quiz.check_answer(q, "The optimizer states go to CPU RAM during memory spikes").correct


def test_nf4_offset_is_attributed_to_bitsandbytes():
    from lora_core.quant import codebook

    q = quiz.make_question("nf4")
    offset = 1 - (1 / 30 + 1 / 32) / 2
    assert offset == pytest.approx(codebook.NF4_OFFSET, abs=1e-7)
    assert f"{offset:.7f}" in q.answer and "create_normal_map" in q.answer
    assert "not a value the QLoRA paper gives" in q.answer


def test_speed_answer_comes_from_the_measured_benchmark_and_labels_quoted_numbers():
    result = json.loads((ROOT / "results" / "bench" / "cpu.json").read_text().strip().splitlines()[-1])
    mode = result["floor_mode"]
    vs_floor = {c["name"]: c["vs_floor"][mode] for c in result["cases"]}   # as the benchmark recorded them
    q = quiz.make_question("not_faster")
    assert f"{vs_floor['ours all-linear r=8']:.2f}×" in q.answer and f"{vs_floor['full fine-tuning']:.2f}×" in q.answer
    assert ("faster there" in q.answer) == (vs_floor["ours all-linear r=8"] < vs_floor["full fine-tuning"])
    assert "Quoted, not measured by LoRA Lab" in q.answer and "batch 16 × seq 256" in q.answer
    assert "1.52" not in q.answer and "slower than full fine-tuning" not in q.answer


def test_alpha_answer_is_not_alpha_equals_r_and_quotes_the_authors_scripts():
    from lora_core.teach.interview import concepts

    q = quiz.make_question("alpha")
    assert "first r it tries" in q.answer and "not α = r" in q.answer and "often at r or 2r" not in q.answer
    assert "r = 4, α = 32" in q.answer and "microsoft/LoRA" in q.answer
    scales = {row["model"]: row["α/r"] for row in concepts.authors_alpha()}
    assert scales == {"RoBERTa-base, MNLI": 2, "DeBERTa-v2-xxlarge, MNLI": 2, "GPT-2 Medium, E2E": 8}


def test_a_init_answer_says_the_code_is_kaiming_uniform_not_the_papers_gaussian():
    peft = pytest.importorskip("peft")
    torch.manual_seed(0)
    model = peft.get_peft_model(torch.nn.Sequential(torch.nn.Linear(768, 768)),
                                peft.LoraConfig(r=8, target_modules=["0"]))
    A = model.base_model.model[0].lora_A["default"].weight.detach()
    assert A.abs().max() <= 1 / math.sqrt(768)                       # uniform in ±1/√in: Kaiming-uniform, a=√5
    q = quiz.make_question("a_init")
    assert "Gaussian" in q.answer and "kaiming_uniform_" in q.answer and "PEFT" in q.answer
    assert f"{1 / math.sqrt(768):.4f}" in q.answer
    assert quiz.check_answer(q, "B is zero and A is Kaiming-uniform").correct


def test_intrinsic_rank_answer_does_not_present_the_planted_toy_as_evidence():
    q = quiz.make_question("intrinsic_rank")
    for words in ("hypothes", "intrinsic dimension", "90%", "planted", "not replayed"):
        assert words in q.answer, words
    assert "Trained adapters concentrate" not in q.answer
    assert "planted" in quiz.evidence_for(q).note


def test_disable_adapter_on_a_merged_model_differs_between_peft_and_lora_core():
    pytest.importorskip("peft")
    from lora_core.teach.interview import disable_check

    rows = {row["library"].split(" ")[0]: row for row in disable_check.disable_on_merged()["rows"]}
    assert rows["lora_core"]["merged after the block"] is True and rows["PEFT"]["merged after the block"] is False
    for row in rows.values():
        assert row["max |Δ| vs base inside the block"] < 1e-5 and row["max |Δ| vs adapted after the block"] < 1e-5
    q = quiz.make_question("disable_merged")
    assert "leaves the model unmerged" in q.answer and "merges the adapter back" in q.answer


def test_activation_answer_counts_only_what_autograd_keeps_and_memory_names_its_accounting():
    from lora_core.teach.interview import concepts_memory

    est = memory.compare_methods(concepts_memory.memory_setup())
    q = quiz.make_question("activations")
    assert est["lora"].activations < est["full"].activations                     # frozen o_proj / MLP inputs dropped
    assert f"{memory.gib(est['full'].activations):.2f} GiB" in q.answer
    assert f"{memory.gib(est['lora'].activations):.2f} GiB" in q.answer
    assert "not stored" in q.answer and "the activations stay" not in q.answer
    saving = quiz.make_question("lora_vs_full_memory")
    assert memory.PRECISION_LABELS["param"] in saving.answer
