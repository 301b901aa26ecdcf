"""AppTest for the Scaling page: α/r against α/√r, bad input kept inline, the Adam table from the toy runs."""

import pytest
import torch
from conftest import metrics

from lora_core.teach import toy


def test_scaling_page_numbers_and_bad_input(app_page):
    at = app_page("scaling")
    assert metrics(at) == {"α/r at r=64": "0.25", "α/√r at r=64": "2"}
    at.number_input[0].set_value(0.0).run()
    assert not at.exception and "lora_alpha=0.0 is not allowed" in at.error[0].value
    assert metrics(at)["α/r at r=64"] == "0.25"                      # the last good picture stays
    at.number_input[0].set_value(16.0).run()
    at.multiselect[0].set_value([]).run()
    assert any("ranks=[] is not allowed" in e.value for e in at.error)


def test_scaling_page_adam_table_matches_the_toy_runs(app_page):
    at = app_page("scaling")
    table = at.dataframe[-1].value
    first, half, twin = table.columns[1:]
    assert table.iloc[0][first] == pytest.approx(table.iloc[0][half], rel=1e-6)   # step 1: equal
    assert (table[first] - table[twin]).abs().max() < 1e-6 * table[first].max() * 100
    ref = toy.train_toy(toy.ToyConfig(r=8, lora_alpha=16, lr=1e-3, steps=80))
    assert table.iloc[-1][first] == pytest.approx(ref.losses[-1])
    assert torch.isfinite(torch.tensor(table[first].tolist())).all()
