"""A shared server: settings limits, the training queue, and errors that never take a session down."""

import time
from pathlib import Path

import pytest

from lora_core.serve.admission import TrainingSlots
from lora_core.serve.settings import Settings, load_settings
from lora_core.serve.upload_limits import UploadLimit, upload_limit

ROOT = Path(__file__).resolve().parents[1]


def test_shipped_settings_file_equals_the_documented_defaults():
    assert load_settings(ROOT / "lora_lab.toml") == Settings()


def test_limits_name_the_field_the_value_and_the_limit(tmp_path):
    with pytest.raises(ValueError, match=r"steps=5,000 is over this server's limit: at most 2,000"):
        Settings().check("steps", 5000)
    Settings().check("r", 8)
    bad = tmp_path / "s.toml"
    bad.write_text("[limits]\nmax_stepz = 3\n")
    with pytest.raises(ValueError, match=r"unknown keys \['max_stepz'\]"):
        load_settings(bad)
    bad.write_text("[limits\n")
    with pytest.raises(ValueError, match="not valid TOML"):
        load_settings(bad)
    assert load_settings(tmp_path / "missing.toml") == Settings()


@pytest.mark.parametrize("line,message", [
    ("[models]\nmodels_dir = 3\n", "models_dir=3 in .* is not allowed: use a non-empty string"),
    ("[models]\nmodels_dir = ''\n", "models_dir='' in .* is not allowed: use a non-empty string"),
    ("[limits]\nmax_steps = 2.5\n", "max_steps=2.5 in .* is not allowed: use a whole number"),
    ("[limits]\nmax_r = 'big'\n", "max_r='big' in .* is not allowed: use a number >= 0"),
], ids=["models_dir-a-number", "models_dir-empty", "max_steps-not-whole", "max_r-a-string"])
def test_settings_check_each_keys_type(tmp_path, line, message):
    (tmp_path / "s.toml").write_text(line)
    with pytest.raises(ValueError, match=message):
        load_settings(tmp_path / "s.toml")


def test_queue_is_first_come_first_served_and_frees_slots():
    slots = TrainingSlots(capacity=1, heartbeat_seconds=60)
    assert [slots.request(s) for s in ("a", "b", "c")] == [0, 1, 2]
    assert slots.request("b") == 1                                   # asking again keeps its place
    slots.release("a")                                               # a paused or stopped
    assert slots.request("c") == 1 and slots.request("b") == 0       # b was first in line
    assert slots.snapshot() == {"running": 1, "waiting": 1, "capacity": 1}


def test_a_silent_holder_loses_its_slot():
    slots = TrainingSlots(capacity=1, heartbeat_seconds=0.05)
    assert slots.request("closed-tab") == 0
    time.sleep(0.1)
    assert slots.request("next") == 0
    with pytest.raises(ValueError, match="capacity=0"):
        TrainingSlots(0)


def test_finetune_page_enforces_the_limits_inline(app_page):
    at = app_page("finetune")
    at.selectbox[0].set_value("distilgpt2-random").run()
    next(n for n in at.number_input if n.label == "steps").set_value(2000)
    next(n for n in at.number_input if n.label == "sequence length").set_value(512)
    at.button[0].click().run()
    assert not at.exception
    assert "seq_len=512 is over this server's limit: at most 256" in at.error[0].value
    assert "finetune:run" not in at.session_state
    (uploader,) = at.file_uploader                      # what the widget tells a learner is what the server takes
    assert uploader.proto.max_upload_size_mb * 1_000_000 == load_settings().max_upload_bytes == 2_000_000


@pytest.mark.slow
def test_a_second_session_queues_until_the_first_run_ends(app_page, tmp_path, monkeypatch):
    import streamlit as st

    cfg = tmp_path / "one_slot.toml"
    # A long run and a long heartbeat: the first session must still hold its slot, however slow or fast
    # this machine is, when the second one asks.
    cfg.write_text("[training]\nmax_concurrent = 1\nheartbeat_seconds = 3600\n")
    monkeypatch.setenv("LORA_LAB_SETTINGS", str(cfg))
    st.cache_resource.clear()                    # settings and the queue are read once per server
    sessions = []
    for _ in range(2):
        at = app_page("finetune")
        at.selectbox[0].set_value("distilgpt2-random").run()
        next(n for n in at.number_input if n.label == "steps").set_value(500)
        at.button[0].click().run()
        sessions.append(at)
    first, second = sessions
    assert any("you are number 1 in line" in w.value for w in second.warning)
    assert not any("in line" in w.value for w in first.warning)
    next(b for b in first.button if b.label == "Stop").click().run()
    second.run()                                 # the slot is free now
    assert not any("in line" in w.value for w in second.warning)
    assert not first.exception and not second.exception
    st.cache_resource.clear()


def test_the_adapter_upload_limit_in_whole_mib_rounds_up():
    from lora_core.serve.settings import Settings

    assert Settings(max_adapter_bytes=50_000_000).max_adapter_mib == 48   # 47.68 MiB, rounded up
    assert Settings(max_adapter_bytes=2**20).max_adapter_mib == 1
    assert Settings(max_adapter_bytes=1).max_adapter_mib == 1


def test_upload_limits_shown_are_the_limits_enforced():
    shipped = load_settings(ROOT / "lora_lab.toml")
    for key, mb in (("max_upload_bytes", 2), ("max_adapter_bytes", 50)):
        limit = upload_limit(shipped, key)
        assert (limit.widget_mb, limit.exact, limit.label) == (mb, True, f"{mb} MB")
        assert limit.widget_mb * 1_000_000 == getattr(shipped, key)
    small = UploadLimit("max_upload_bytes", 4096)      # below Streamlit's 1 MB minimum: the label says the bytes
    assert (small.widget_mb, small.exact, small.label) == (1, False, "4,096 bytes")
    assert UploadLimit("max_adapter_bytes", 1_500_000).widget_mb == 2   # rounded up: never refuses an allowed file
    with pytest.raises(ValueError, match=r"max_upload_bytes=0 is not allowed"):
        UploadLimit("max_upload_bytes", 0)
    with pytest.raises(ValueError, match=r"key='max_steps' is not allowed"):
        upload_limit(shipped, "max_steps")


@pytest.mark.parametrize("max_bytes,mb,label", [(50_000_000, 50, "adapter .zip (PEFT format)"),
                                                (4096, 1, "adapter .zip (PEFT format) (at most 4,096 bytes)")],
                         ids=["shipped 50 MB", "a 4,096-byte test limit"])
def test_the_adapter_uploader_says_the_servers_limit(app_page, tmp_path, monkeypatch, max_bytes: int, mb: int,
                                                     label: str):
    import streamlit as st

    cfg = tmp_path / "lab.toml"
    cfg.write_text(f"[limits]\nmax_adapter_bytes = {max_bytes}\n")
    monkeypatch.setenv("LORA_LAB_SETTINGS", str(cfg))
    st.cache_resource.clear()                          # settings are read once per server
    try:
        at = app_page("adapters")
        (uploader,) = at.file_uploader
        assert (uploader.proto.max_upload_size_mb, uploader.proto.label) == (mb, label)
        assert f"at most {max_bytes:,} bytes (max_adapter_bytes in lora_lab.toml)" in uploader.proto.help
    finally:
        st.cache_resource.clear()
