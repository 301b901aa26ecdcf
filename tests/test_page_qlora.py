"""AppTest for the QLoRA page: double quantization, seed 002's memory estimate, the codebook ranking."""

import pytest
from conftest import metrics
from streamlit.testing.v1 import AppTest

from lora_core.quant import memory
from lora_core.teach import qlora_study


@pytest.fixture
def page(app_page) -> AppTest:
    """The QLoRA page as it opens: on seed 002's settings, which must draw without an error."""
    at = app_page("qlora")
    assert not at.error, [e.value for e in at.error]
    return at


def test_page_shows_double_quantization_bits(page):
    shown = metrics(page)
    assert shown["constants, plain"] == "0.5 bits / weight"
    assert shown["constants, double-quantized"] == "0.127 bits / weight"
    measured = next(v for k, v in shown.items() if k.startswith("measured on this matrix"))
    assert abs(float(measured.split()[0]) - 0.127) < 0.001


def test_page_starts_from_seed_002_and_counts_lora_in_every_layer(page):
    shown = metrics(page)
    expected = memory.estimate_memory(memory.SEED_002_QLORA)
    assert shown["trainable parameters"] == "33,554,432"
    assert shown["layers with LoRA"] == "32 of 32"
    assert shown["QLoRA, total"] == f"{memory.gib(expected.total):.2f} GiB"


def test_error_table_ranks_nf4_first_on_the_default_layer(page):
    table = next(df.value for df in page.dataframe if "codebook" in df.value.columns)
    rmse = dict(zip(table["codebook"], table["RMSE"], strict=True))
    assert min(rmse, key=rmse.get) == "NF4"
    assert "**NF4** has the lowest RMSE" in " ".join(m.value for m in page.markdown)


def test_changing_r_changes_the_lora_estimate(page):
    page.radio(key="qlora_method").set_value("lora").run()
    before = metrics(page)
    page.number_input(key="qlora_r").set_value(8).run()
    after = metrics(page)
    assert after["trainable parameters"] == "4,194,304"
    assert float(after["LoRA, total"].split()[0]) < float(before["LoRA, total"].split()[0])


def test_bad_target_shows_inline_error_and_keeps_the_chart(page):
    charts = len(page.get("plotly_chart"))
    page.text_input(key="qlora_targets").set_value("not_a_module").run()
    assert not page.exception
    assert "target_modules=['not_a_module'] matches no module" in page.error[0].value
    assert len(page.get("plotly_chart")) == charts          # the last good estimate is still drawn
    page.button[0].click().run()                             # the seed 002 preset puts it right
    assert not page.error
    assert metrics(page)["trainable parameters"] == "33,554,432"


def test_page_names_the_papers_three_ideas_and_attributes_the_offset(page):
    text = " ".join(m.value for m in page.markdown) + " ".join(c.value for c in page.caption)
    assert "**three ideas**: the **NF4** data type" in text and "**paged optimizers**" in text
    assert "8-bit optimizers work (Dettmers et al. 2021, arXiv 2110.02861)" in text
    assert "default `offset` of bitsandbytes' `create_normal_map`" in text and "gives no value for it" in text
    assert "AdamW keeps two fp32 moments" not in " ".join(e.value for e in page.markdown)


def test_paged_optimizers_section_shows_the_states_it_can_move(page):
    view = qlora_study.paged_optimizer_view(memory.SEED_002_QLORA)
    shown = metrics(page)
    assert shown["optimizer states (can be paged out)"] == f"{memory.gib(view['optimizer']):.3f} GiB"
    assert shown["activation spike of that batch"] == f"{memory.gib(view['spike']):.2f} GiB"
    text = " ".join(m.value for m in page.markdown)
    assert "NVIDIA unified memory" in text and "evicts those pages to CPU RAM" in text


def test_bytes_per_parameter_are_selectable_and_each_chart_says_its_accounting(page):
    from dataclasses import replace

    full = replace(memory.SEED_002_QLORA, method="full")
    for precision in memory.OPTIMIZER_PRECISIONS:
        page.selectbox(key="qlora_precision").set_value(precision).run()
        assert not page.exception
        expected = memory.estimate_memory(replace(full, optimizer_precision=precision))
        shown = " ".join(c.value for c in page.caption)
        assert f"Accounting used by these bars: {memory.PRECISION_LABELS[precision]}" in shown
        assert f"full fine-tuning {expected.bytes_per_trainable_param:g} B" in shown
        assert "LoRA 16 B" in shown
