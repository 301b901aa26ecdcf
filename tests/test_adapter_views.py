"""lora_core.teach.adapter_views, what the Load-an-adapter page shows: an upload loads onto a private copy of
the shared base, its spectrum rows and figures, and generation with the adapter on and off."""

import lora_core as lc
from lora_core import training
from lora_core.teach import adapter_views


def test_loading_an_upload_never_writes_the_shared_base(adapter_zip):
    base, tok = lc.load_model("distilgpt2-random", device="cpu")
    before = {n: p.data_ptr() for n, p in base.named_parameters()}
    loaded = adapter_views.load_adapter_upload(base, adapter_zip, "distilgpt2-random", max_bytes=50_000_000, max_r=256)
    assert not lc.lora_layers(base)                                          # the cached base has no adapter
    assert {n: p.data_ptr() for n, p in base.named_parameters()} == before
    assert lc.shares_storage(base, loaded["model"]) > 0                      # its weights are shared, not copied
    assert (loaded["config"].r, loaded["ledger"].trainable, len(loaded["report"])) == (4, 73_728, 6)
    rows = adapter_views.spectrum_rows(loaded["report"])
    assert [r["numerical rank"] for r in rows] == [4] * 6
    figures = adapter_views.layer_spectra(loaded["report"], [rows[1]["layer"]])
    assert list(figures["spectra"]) == [rows[1]["layer"]] and len(figures["relative"]) == 6
    assert len(adapter_views.layer_spectra(loaded["report"])["spectra"]) == min(6, adapter_views.FIRST_LAYERS)
    on, off = adapter_views.generate_both_ways(loaded["model"], tok, "User likes cooking videos.", 4)
    assert isinstance(on, str) and isinstance(off, str)
    with lc.disable_lora(loaded["model"]):
        assert training.generate(loaded["model"], tok, ["User likes cooking videos."], 4)[0] == off
