"""AppTest for the Load-an-adapter page, run through app.py: a good upload, a bad one, base against adapted."""

import io
import zipfile
from types import SimpleNamespace

from conftest import metrics

import lora_core as lc


def test_adapter_page_loads_a_good_zip_then_keeps_it_through_a_bad_one(app_page, adapter_zip):
    at = app_page("adapters")
    assert "No adapter loaded yet" in at.info[0].value
    at.selectbox[0].set_value("distilgpt2-random").run()
    at.file_uploader[0].set_value(("lora.zip", adapter_zip, "application/zip")).run()
    assert not at.exception, at.exception
    assert not at.error
    assert metrics(at) == {"r": "4", "lora_alpha": "8", "scaling": "2", "adapted layers": "6"}
    # 6 layers · r · (768 + 2304) = 73,728
    assert at.code[0].value == "trainable params: 73,728 || all params: 81,986,304 || trainable%: 0.0899"
    assert len(at.dataframe[1].value) == 6                                    # one spectrum row per layer

    at.file_uploader[0].set_value(("evil.zip", b"not a zip at all", "application/zip")).run()
    assert not at.exception
    assert "not a readable zip archive" in at.error[0].value
    assert "Still showing the adapter loaded before: **lora.zip**" in " ".join(c.value for c in at.caption)
    assert metrics(at)["r"] == "4"

    at.file_uploader[0].set_value(("lora.zip", adapter_zip, "application/zip")).run()
    next(b for b in at.button if b.label.startswith("Generate both ways")).click().run()
    assert not at.exception, at.exception
    shown = " ".join(m.value for m in at.markdown)
    assert "**base model:**" in shown and "**with the adapter:**" in shown


def test_adapter_page_names_a_misfit_inline(app_page, adapter_zip):
    at = app_page("adapters")
    at.selectbox[0].set_value("smollm2-135m").run()                          # a GPT-2 adapter on a Llama base
    at.file_uploader[0].set_value(("lora.zip", adapter_zip, "application/zip")).run()
    assert not at.exception, at.exception
    assert "target_modules=['c_attn'] matches no module of this model" in at.error[0].value
    assert "No adapter loaded yet" in at.info[0].value


def test_adapter_page_offers_the_adapter_trained_in_this_session(app_page, adapter_zip, tmp_path):
    model, _ = lc.load_model("distilgpt2-random", device="cpu")
    zipfile.ZipFile(io.BytesIO(adapter_zip)).extractall(tmp_path)
    lc.load_adapter(model, tmp_path)
    finished = SimpleNamespace(status="done", model=model, lora_config=lc.adapter_config(model), step=3)
    at = app_page("adapters", session_state={"finetune:run": finished})      # what the Fine-tuning page keeps
    at.selectbox[0].set_value("distilgpt2-random").run()
    at.radio[0].set_value("the adapter trained in this session").run()
    assert not at.exception, at.exception
    assert not at.error
    assert metrics(at)["r"] == "4"
    assert "trained in this session: r=4, 3 steps" in " ".join(c.value for c in at.caption)


# --- issue 11, items 8 and 9: an error is kept while its file stays; the in-session adapter names itself ----------
def _crash_once(monkeypatch, message: str) -> list[int]:
    """Make the next load crash (a bug, not bad input), as an upload with huge values once did; then load normally."""
    from lora_core.teach import adapter_views

    real, calls = adapter_views.load_adapter_upload, []

    def crash_then_load(*args, **kwargs):
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError(message)
        return real(*args, **kwargs)

    monkeypatch.setattr(adapter_views, "load_adapter_upload", crash_then_load)
    return calls


def test_a_crash_while_loading_stays_shown_while_the_file_stays(app_page, adapter_zip, monkeypatch):
    from conftest import ROOT

    calls = _crash_once(monkeypatch, f"linalg.svd: non-finite input in {ROOT}/lora_core/spectrum.py")
    at = app_page("adapters")
    at.selectbox[0].set_value("distilgpt2-random").run()
    at.file_uploader[0].set_value(("huge.zip", adapter_zip, "application/zip")).run()
    for _ in range(2):                                        # the upload's rerun, then any later rerun
        assert not at.exception, at.exception
        (err,) = at.error
        assert err.value.startswith("Something went wrong in loading the adapter.") and "Reference: " in err.value
        assert [t.value for t in at.text] == ["RuntimeError: linalg.svd: non-finite input in spectrum.py"]
        assert "No adapter loaded yet" in at.info[0].value
        first = err.value
        at.run()
    assert at.error[0].value == first and len(calls) == 1    # the same error, kept; not loaded again

    at.file_uploader[0].set_value(None).run()                # the file leaves the uploader: its error goes with it
    assert not at.error
    at.file_uploader[0].set_value(("huge.zip", adapter_zip, "application/zip")).run()
    assert not at.exception and not at.error and len(calls) == 2   # the same file again is checked again
    assert metrics(at)["r"] == "4"


def test_a_bad_upload_keeps_its_message_through_reruns(app_page, adapter_zip):
    at = app_page("adapters")
    at.selectbox[0].set_value("distilgpt2-random").run()
    at.file_uploader[0].set_value(("lora.zip", adapter_zip, "application/zip")).run()
    at.file_uploader[0].set_value(("evil.zip", b"not a zip at all", "application/zip")).run()
    for _ in range(2):
        assert "adapter upload is not a readable zip archive" in at.error[0].value
        assert "Still showing the adapter loaded before: **lora.zip**" in " ".join(c.value for c in at.caption)
        at.run()


def test_the_adapter_trained_in_this_session_is_not_called_an_upload(app_page, adapter_zip, tmp_path, monkeypatch):
    from lora_core.serve import upload_limits

    monkeypatch.setattr(upload_limits, "largest_adapter_bytes", lambda: 1000)   # as if the adapter were too big
    monkeypatch.setenv("LORA_LAB_SETTINGS", str(tmp_path / "lab.toml"))
    (tmp_path / "lab.toml").write_text("[limits]\nmax_adapter_bytes = 1000\n")
    import streamlit as st

    st.cache_resource.clear()                                # settings are read once per server
    try:
        model, _ = lc.load_model("distilgpt2-random", device="cpu")
        zipfile.ZipFile(io.BytesIO(adapter_zip)).extractall(tmp_path)
        lc.load_adapter(model, tmp_path)
        finished = SimpleNamespace(status="done", model=model, lora_config=lc.adapter_config(model), step=3)
        at = app_page("adapters", session_state={"finetune:run": finished})
        at.selectbox[0].set_value("distilgpt2-random").run()
        at.radio[0].set_value("the adapter trained in this session").run()
        assert not at.exception, at.exception
        (err,) = at.error
        assert err.value.startswith("the adapter trained in this session is ") and "upload" not in err.value.split(
            "over")[0]
        assert "over this server's limit: at most 1,000" in err.value
    finally:
        st.cache_resource.clear()
