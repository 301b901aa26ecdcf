"""What lessons 04, 06, 08 and 09 say, pinned where issue 12 found them wrong (their cells assert the numbers
when nbmake runs them), and the disable_adapter difference lesson 06 teaches, checked on both libraries."""

from pathlib import Path

import peft
import pytest
import torch
import torch.nn as nn

import lora_core as lc

LESSONS = Path(__file__).resolve().parents[1] / "lessons"


def lesson(stem: str) -> str:
    return (LESSONS / f"{stem}.py").read_text()


def test_lesson_04_labels_the_toy_a_planted_target_not_intrinsic_rank_evidence():
    text = lesson("04_rank_svd_spectrum")
    assert "section 4 below sees it on a toy task" not in text
    assert "intrinsic *dimensions*" in text and "low_rank.what_the_toy_shows(planted)" in text


def test_lesson_06_says_five_of_peft_options_reads_the_rest_and_shows_disable_adapter_differs():
    text = lesson("06_dropout_bias_init_merge")
    assert "## 2. Four ways to start" not in text and "Five of PEFT's options" in text
    assert 'shown = [True, "gaussian", False, "pissa", "olora"]' in text
    assert 'typing.get_type_hints(peft.LoraConfig)["init_lora_weights"]' in text
    assert "kaiming_uniform_(lora_A, a=math.sqrt(5))" in text and "random Gaussian" in text
    assert "`with model.disable_adapter():` does the same." not in text
    assert "assert before and not after" in text


def test_lesson_08_names_the_three_ideas_attributes_the_offset_and_computes_the_gpu_verdict():
    text = lesson("08_qlora_from_scratch")
    assert "**paged optimizers**" in text and "arXiv 2110.02861" in text
    assert "The paper takes\n" not in text and "create_normal_map" in text
    assert "two Adam moments for all 6.7 B parameters: far beyond one GPU." not in text
    assert "memory.OPTIMIZER_PRECISIONS" in text and "qlora_study.paged_optimizer_view" in text


def test_lesson_09_shows_the_classification_head_and_the_authors_alpha():
    text = lesson("09_interview_prep")
    assert "evidence.classification_head_check(r=2)" in text
    assert "A wrong\n# or missing task type doesn't" not in text
    assert "(often r or 2r)" not in text and "α = 32 with r = 4 for GPT-2 on E2E" in text
    assert "**NF4**, **double quantization** and **paged optimizers**" in text


class OneLayer(nn.Module):
    def __init__(self):
        super().__init__()
        self.proj = nn.Linear(8, 8)

    def forward(self, x):
        return self.proj(x)


@pytest.mark.filterwarnings("ignore")
def test_disable_adapter_leaves_peft_unmerged_while_lora_core_merges_again():
    x = torch.randn(3, 8)
    torch.manual_seed(0)
    theirs = peft.get_peft_model(OneLayer(), peft.LoraConfig(r=2, target_modules=["proj"], init_lora_weights=False))
    theirs.merge_adapter()
    with theirs.disable_adapter():
        base_out = theirs(x)
    assert not theirs.base_model.model.proj.merged                  # unmerged at the first forward, left so
    ours = OneLayer()
    lc.inject_lora(ours, lc.LoraConfig(r=2, target_modules=["proj"], init_lora_weights=False))
    lc.merge_lora(ours)
    with lc.disable_lora(ours):
        assert not ours.proj.merged
    assert ours.proj.merged                                          # merged again on the way out
    assert base_out.shape == (3, 8)
