"""AppTest on the Anatomy page: the regex result, the dropout trace, bias, init and notation."""

from conftest import metrics


def test_seed_regex_finds_only_lm_head_on_gpt2(app_page):
    at = app_page("anatomy")
    assert at.code[0].value == "['lm_head']"
    gpt2_all_linear = at.dataframe[0].value
    assert set(gpt2_all_linear["module"]) == {"c_attn", "c_fc", "c_proj"}


def test_dropout_trace_train_then_eval(app_page):
    at = app_page("anatomy")
    m = metrics(at)
    assert m["zeros in x → W"] == "0.00%"
    assert 5 < float(m["zeros in dropout(x) → A"].rstrip("%")) < 15          # p = 0.1
    assert m["zeros in A"] == m["zeros in B"] == "0.00%" and m["A or B changed"] == "no"
    at.radio[0].set_value("eval").run()
    assert metrics(at)["zeros in dropout(x) → A"] == "0.00%"


def test_bias_and_added_parameters(app_page):
    at = app_page("anatomy")
    bias = at.dataframe[2].value.set_index("bias")
    assert bias.loc["none", "trainable"] == 147_456 and bias.loc["lora_only", "extra trainable"] == 6 * 2304
    m = metrics(at)
    assert (m["of them still trainable"], m["new LoRA parameters"]) == ("0", "147,456")


def test_init_gallery_rows(app_page):
    at = app_page("anatomy")
    init = at.dataframe[3].value
    assert len(init) == 4
    assert init["max |Δ output|"].iloc[0] == 0 and init["max |Δ output|"].iloc[2] > 0
    assert init["max |(W now + ΔW) − W|"].iloc[3] < 1e-5                     # PiSSA: W_res + ΔW == W


def test_notation_shows_the_shape_error(app_page):
    at = app_page("anatomy")
    assert any("cannot be multiplied" in c.value for c in at.code)


def test_bad_regex_is_inline(app_page):
    at = app_page("anatomy")
    at.text_input[0].set_value("(").run()
    assert not at.exception
    assert "not a valid regular expression" in at.error[0].value
    assert at.code[0].value == "['lm_head']"                                  # the page still draws
