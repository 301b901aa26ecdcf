"""AppTest on the Parameters page: the ledger, its errors, the PEFT check."""

from conftest import metrics

DEFAULT_LINE = "trainable params: 147,456 || all params: 82,060,032 || trainable%: 0.1797"


def test_default_is_distilgpt2_c_attn_r8(app_page):
    at = app_page("parameters")
    assert DEFAULT_LINE in [c.value for c in at.code]
    m = metrics(at)
    assert (m["trainable"], m["all params"], m["trainable %"]) == ("147,456", "82,060,032", "0.1797")
    table = at.dataframe[0].value
    assert table.to_dict("records") == [{"module": "transformer.h.*.attn.c_attn", "type": "Conv1D",
                                         "shape (in→out)": "768→2304", "count": 6, "r·(in+out)": 24_576,
                                         "LoRA params": 147_456}]
    assert any(c.value.count("attn.c_attn") == 6 for c in at.code)   # the matched modules


def test_r16_doubles_the_count(app_page):
    at = app_page("parameters")
    at.select_slider[0].set_value(16).run()
    assert not at.exception
    assert any("trainable params: 294,912 ||" in c.value for c in at.code)


def test_regex_matching_nothing_is_shown_inline_and_keeps_the_last_ledger(app_page):
    at = app_page("parameters")
    at.text_input[0].set_value(r".*\.no_such_layer").run()
    assert not at.exception
    (err,) = at.error
    assert "matches no module" in err.value and "candidates are ['c_attn', 'c_fc', 'c_proj'" in err.value
    assert DEFAULT_LINE in [c.value for c in at.code]
    at.text_input[0].set_value(r".*\.attn\.c_proj").run()          # a working regex takes over
    assert not at.error
    assert metrics(at)["trainable"] == "73,728"                    # 6 × 8·(768+768)


def test_verify_with_peft_shows_an_identical_line(app_page):
    at = app_page("parameters")
    at.button[0].click().run()
    assert not at.exception
    assert [c.value for c in at.code].count(DEFAULT_LINE) >= 3      # ours, ours beside PEFT's, PEFT's
    assert "Identical" in at.success[0].value


def test_seed_000_worked_example(app_page):
    at = app_page("parameters")
    m = metrics(at)
    assert (m["claimed"], m["computed by the ledger"], m["per c_attn"]) == ("98,304", "147,456", "24,576")
    text = " ".join(md.value for md in at.markdown)
    assert "**12,288**" in text and "2.08%" in text and "589,824" in text
    assert "c_attn in only 4 of the 6 blocks" in text


def test_other_models_and_bias(app_page):
    at = app_page("parameters")
    at.selectbox[0].set_value("Llama-2-7b").run()
    assert not at.exception
    assert any("trainable params: 4,194,304 ||" in c.value for c in at.code)   # q_proj, v_proj at r=8
    at.selectbox[1].set_value("all").run()
    assert not at.exception and not at.error
