"""AppTest for the Memory page: a measured step beside the estimate, the explanations, the checkpointing trap,
and a too-large step refused inline with the last good ledger kept."""

import pytest
from conftest import errors, metrics
from streamlit.testing.v1 import AppTest


@pytest.fixture
def page(app_page) -> AppTest:
    at = app_page("memory")
    assert not at.error, errors(at)
    return at


def table(at: AppTest, column: str):
    return next(df.value for df in at.dataframe if column in df.value.columns)


def test_page_shows_the_measured_ledger_beside_the_estimate_and_the_trap(page):
    shown = metrics(page)
    assert shown["measured, total"].endswith(" MB") and shown["estimated, total"].endswith(" MB")
    assert shown["CUDA max_memory_allocated"] == "not on CUDA"
    ledger = table(page, "estimated MB").set_index("component")
    assert list(ledger.index) == ["weights", "quantization constants", "gradients", "optimizer states",
                                  "activations", "total"]
    assert ledger.loc["weights", "ratio"] == 1.0 and ledger.loc["gradients", "ratio"] == 1.0
    assert len(page.get("plotly_chart")) == 3
    # the trap runs on a narrow distilgpt2 (2 of its blocks, LoRA on c_attn: two lora_B), and says so;
    # the old reentrant setup trains none of them
    trap = table(page, "lora_B with a gradient").set_index("setting")
    old = next(s for s in trap.index if s.startswith("reentrant checkpoint, embedding output frozen"))
    fix = next(s for s in trap.index if "enable_input_require_grads" in s)
    assert trap.loc[old, "lora_B with a gradient"] == "0 of 2" and trap.loc[old, "lora_B grad norm"] == 0.0
    assert trap.loc[fix, "lora_B with a gradient"] == "2 of 2" and trap.loc[fix, "lora_B grad norm"] > 0
    assert any("**a narrow distilgpt2: 2 of its gpt2 blocks" in m.value for m in page.markdown)
    saved = table(page, "shape")
    assert saved.iloc[0]["dtype"] == "float32" and saved.iloc[0]["shape"] == "[64, 50257]"  # the fp32 logits


def test_the_estimate_is_asked_for_what_nf4linear_keeps_and_the_page_says_so(page):
    assert any("`double_quant=False`" in c.value and "0.500 bit per weight" in c.value and "0.127" in c.value
               for c in page.caption)
    page.radio(key="mem_method").set_value("qlora")
    page.number_input(key="mem_seq").set_value(8).run()
    assert not page.exception and not page.error, errors(page)
    ledger = table(page, "estimated MB").set_index("component")
    # one fp32 absmax per block on both sides; the measurement adds each layer's 16-entry codebook (64 B)
    assert 1.0 < ledger.loc["quantization constants", "ratio"] < 1.001


def test_a_step_too_large_for_the_server_is_refused_inline_and_the_last_ledger_stays(page):
    page.selectbox(key="mem_model").set_value("SmolLM2-135M")
    page.radio(key="mem_method").set_value("full").run()
    assert not page.exception
    assert "method='full' is not allowed" in errors(page) and "GiB" in errors(page)
    assert any("last valid settings" in c.value for c in page.caption)
    assert "estimated MB" in table(page, "estimated MB").columns  # the previous ledger is still drawn
