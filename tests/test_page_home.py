"""AppTest on the Home page (app.py's default): PEFT's line for distilgpt2 c_attn r=8, r and α followed live,
bad α shown inline."""

from conftest import metrics


def test_home_shows_peft_line_for_distilgpt2_c_attn_r8(app_page):
    at = app_page("home")
    assert "trainable params: 147,456 || all params: 82,060,032 || trainable%: 0.1797" in [c.value for c in at.code]
    shown = metrics(at)
    assert shown["LoRA parameters per c_attn"] == "24,576"
    assert shown["scaling"] == "2"


def test_home_follows_r_and_alpha(app_page):
    at = app_page("home")
    at.select_slider[0].set_value(16).run()
    assert "trainable params: 294,912" in at.code[0].value
    at.toggle[0].set_value(True).run()
    assert metrics(at)["scaling"] == "4"   # 16 / sqrt(16)


def test_home_shows_bad_alpha_inline(app_page):
    at = app_page("home")
    at.number_input[0].set_value(0.0).run()
    assert not at.exception
    assert "lora_alpha=0.0 is not allowed" in at.error[0].value
