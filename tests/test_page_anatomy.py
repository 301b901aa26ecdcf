"""AppTest on pages/anatomy.py by itself: the regex result, the dropout trace, bias, init and notation."""

from pathlib import Path

from streamlit.testing.v1 import AppTest

PAGE = str(Path(__file__).resolve().parents[1] / "pages" / "anatomy.py")
TIMEOUT = 60  # the first run loads SmolLM2-135M for the init gallery


def _page() -> AppTest:
    at = AppTest.from_file(PAGE, default_timeout=TIMEOUT)
    at.run()
    assert not at.exception, at.exception
    return at


def _metrics(at: AppTest) -> dict[str, str]:
    return {m.label: m.value for m in at.metric}


def test_seed_regex_finds_only_lm_head_on_gpt2():
    at = _page()
    assert at.code[0].value == "['lm_head']"
    gpt2_all_linear = at.dataframe[0].value
    assert set(gpt2_all_linear["module"]) == {"c_attn", "c_fc", "c_proj"}


def test_dropout_trace_train_then_eval():
    at = _page()
    m = _metrics(at)
    assert m["zeros in x → W"] == "0.00%"
    assert 5 < float(m["zeros in dropout(x) → A"].rstrip("%")) < 15          # p = 0.1
    assert m["zeros in A"] == m["zeros in B"] == "0.00%" and m["A or B changed"] == "no"
    at.radio[0].set_value("eval").run()
    assert _metrics(at)["zeros in dropout(x) → A"] == "0.00%"


def test_bias_and_added_parameters():
    at = _page()
    bias = at.dataframe[2].value.set_index("bias")
    assert bias.loc["none", "trainable"] == 147_456 and bias.loc["lora_only", "extra trainable"] == 6 * 2304
    m = _metrics(at)
    assert (m["of them still trainable"], m["new LoRA parameters"]) == ("0", "147,456")


def test_init_gallery_rows():
    at = _page()
    init = at.dataframe[3].value
    assert len(init) == 4
    assert init["max |Δ output|"].iloc[0] == 0 and init["max |Δ output|"].iloc[2] > 0
    assert init["max |(W now + ΔW) − W|"].iloc[3] < 1e-5                     # PiSSA: W_res + ΔW == W


def test_notation_shows_the_shape_error():
    at = _page()
    assert any("cannot be multiplied" in c.value for c in at.code)


def test_bad_regex_is_inline():
    at = _page()
    at.text_input[0].set_value("(").run()
    assert not at.exception
    assert "not a valid regular expression" in at.error[0].value
    assert at.code[0].value == "['lm_head']"                                  # the page still draws
