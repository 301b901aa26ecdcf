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
    assert len(init) == 5                                                      # True, gaussian, False, pissa, olora
    assert init["max |Δ output|"].iloc[0] == 0 and init["max |Δ output|"].iloc[2] > 0
    assert init["max |(W now + ΔW) − W|"].iloc[3] < 1e-5                     # PiSSA: W_res + ΔW == W
    assert init["max |(W now + ΔW) − W|"].iloc[4] < 1e-5                     # OLoRA: the same with a QR
    assert init["max |Δ output|"].iloc[4] < 1e-4


def test_notation_shows_the_shape_error(app_page):
    at = app_page("anatomy")
    assert any("cannot be multiplied" in c.value for c in at.code)


def test_bad_regex_is_inline(app_page):
    at = app_page("anatomy")
    at.text_input[0].set_value("(").run()
    assert not at.exception
    assert "not a valid regular expression" in at.error[0].value
    assert at.code[0].value == "['lm_head']"                                  # the page still draws


def test_grouped_query_attention_is_read_from_the_shipped_configs_not_called_a_llama_trait(app_page):
    at = app_page("anatomy")
    heads = at.table[0].value.set_index("model")
    assert heads.loc["Llama-2-7b", "key/value heads"] == heads.loc["Llama-2-7b", "query heads"] == 32
    assert not heads.loc["Llama-2-7b", "grouped-query attention"]
    for name in ("SmolLM2-135M", "Llama-3-8B", "Mistral-7B"):
        assert heads.loc[name, "grouped-query attention"]
    assert heads.loc["SmolLM2-135M", "k_proj, v_proj out"] == 192                 # 3 k/v heads × 64
    text = " ".join(m.value for m in at.markdown) + " ".join(c.value for c in at.caption)
    assert "not a Llama trait" in text and "Llama-2-7b does not" in text
    assert "Llama keeps `q_proj`, `k_proj`, `v_proj`, `o_proj` apart (k and v are narrower" not in text


def test_init_section_says_the_paper_text_and_the_reference_code_differ(app_page):
    at = app_page("anatomy")
    text = " ".join(c.value for c in at.caption)
    assert "paper's text says a random Gaussian" in text and "Kaiming-uniform with a = √5" in text
