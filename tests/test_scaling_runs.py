"""lora_core.teach.scaling_runs, what the Scaling page shows: α/r and α/√r from LoraConfig, and the toy runs'
loss and norm tables."""

import pytest

from lora_core.teach import scaling_runs, toy


def test_scaling_numbers_come_from_lora_config():
    rules = scaling_runs.scale_rules(16.0, [1, 4, 64], 64)
    assert rules["curves"]["α/r (LoRA, PEFT default)"] == [16.0, 4.0, 0.25]
    assert rules["curves"]["α/√r (use_rslora=True)"] == [16.0, 8.0, 2.0]
    assert (rules["picked"], rules["picked_rs"]) == (0.25, 2.0)
    assert scaling_runs.qlora_recipe() == {"r": 64, "lora_alpha": 16, "scale": 0.25, "shrink": 4.0,
                                                "scale_rs": 2.0}
    with pytest.raises(ValueError, match=r"lora_alpha=0\.0 is not allowed"):
        scaling_runs.scale_rules(0.0, [1], 1)
    with pytest.raises(ValueError, match=r"ranks=\[\] is not allowed"):
        scaling_runs.rule_runs([], 16.0, 1e-3, 10)


def test_scaling_run_table_reports_the_share_of_the_loss_left():
    runs = scaling_runs.rule_runs([2, 4], 8.0, 1e-3, 5)
    assert list(runs) == [(2, False), (4, False), (2, True), (4, True)]
    rows = scaling_runs.run_table(runs)
    initial = toy.initial_loss(toy.ToyConfig())
    assert rows[0]["loss left (%)"] == pytest.approx(100 * runs[2, False]["loss"][-1] / initial)
    assert list(scaling_runs.loss_curves(runs, True)) == ["r=2", "r=4"]
    norms, dashed = scaling_runs.norm_curves(runs)
    assert dashed == ["r=2, α/√r", "r=4, α/√r"] and set(dashed) < set(norms)
