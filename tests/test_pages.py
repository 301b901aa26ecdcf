"""AppTest: every page runs without an exception and shows the numbers lora_core computes."""

from pathlib import Path

from streamlit.testing.v1 import AppTest

APP = str(Path(__file__).resolve().parents[1] / "app.py")
TIMEOUT = 60  # pages that import torch need more than AppTest's default 3 s


def _app() -> AppTest:
    at = AppTest.from_file(APP, default_timeout=TIMEOUT)
    at.run()
    assert not at.exception, at.exception
    return at


def test_home_shows_peft_line_for_distilgpt2_c_attn_r8():
    at = _app()
    assert "trainable params: 147,456 || all params: 82,060,032 || trainable%: 0.1797" in [c.value for c in at.code]
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["LoRA parameters per c_attn"] == "24,576"
    assert metrics["scaling"] == "2"


def test_home_follows_r_and_alpha():
    at = _app()
    at.select_slider[0].set_value(16).run()
    assert "trainable params: 294,912" in at.code[0].value
    at.toggle[0].set_value(True).run()
    assert {m.label: m.value for m in at.metric}["scaling"] == "4"   # 16 / sqrt(16)


def test_home_shows_bad_alpha_inline():
    at = _app()
    at.number_input[0].set_value(0.0).run()
    assert not at.exception
    assert "lora_alpha=0.0 is not allowed" in at.error[0].value


def test_sidebar_names_the_model_and_device():
    at = _app()
    text = " ".join(c.value for c in at.sidebar.caption)
    assert "Device:" in text and "Model:" in text
