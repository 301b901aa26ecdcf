"""A shared server: settings limits, the training queue, and errors that never take a session down."""

import threading
import time
from pathlib import Path

import pytest

from lora_core.serve.admission import TrainingSlots
from lora_core.serve.runs import RunRegistry
from lora_core.serve.settings import Settings, load_settings
from lora_core.serve.upload_limits import UploadLimit, adapter_limit, largest_adapter_bytes, upload_limit

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
    seq_len = next(n for n in at.number_input if n.label == "sequence length")
    assert seq_len.max == 256                            # the widget stops at the server's limit ...
    next(n for n in at.number_input if n.label == "lora_alpha").set_value(0.0)
    at.button[0].click().run()                           # ... and a bad value past the widget is named inline
    assert not at.exception
    assert "lora_alpha=0.0 is not allowed" in at.error[0].value
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


def test_upload_limits_shown_are_the_limits_enforced():
    shipped = load_settings(ROOT / "lora_lab.toml")
    # The adapter limit in force is never below the largest adapter the Fine-tuning page makes (issue 11, item 9):
    # 104 MB, whole MB by construction, over the shipped 50 MB that refused the app's own r=64 adapter.
    for key, enforced in (("max_upload_bytes", shipped.max_upload_bytes),
                          ("max_adapter_bytes", adapter_limit(shipped))):
        limit = upload_limit(shipped, key)
        mb = enforced // 1_000_000
        assert (limit.widget_mb, limit.exact, limit.label) == (mb, True, f"{mb} MB")
        assert limit.widget_mb * 1_000_000 == limit.max_bytes == enforced
    assert upload_limit(shipped, "max_adapter_bytes").max_bytes == largest_adapter_bytes() > shipped.max_adapter_bytes
    small = UploadLimit("max_upload_bytes", 4096)      # below Streamlit's 1 MB minimum: the label says the bytes
    assert (small.widget_mb, small.exact, small.label) == (1, False, "4,096 bytes")
    assert UploadLimit("max_adapter_bytes", 1_500_000).widget_mb == 2   # rounded up: never refuses an allowed file
    with pytest.raises(ValueError, match=r"max_upload_bytes=0 is not allowed"):
        UploadLimit("max_upload_bytes", 0)
    with pytest.raises(ValueError, match=r"key='max_steps' is not allowed"):
        upload_limit(shipped, "max_steps")


@pytest.mark.parametrize("max_bytes,mb,label", [(50_000_000, None, "adapter .zip (PEFT format)"),
                                                (4096, None, "adapter .zip (PEFT format)"),
                                                (200_000_000, 200, "adapter .zip (PEFT format)"),
                                                (123_456_789, 124, "adapter .zip (PEFT format) (at most 123,456,789 "
                                                                   "bytes)")],
                         ids=["shipped 50 MB, raised", "a 4,096-byte limit, raised", "a larger 200 MB",
                              "a larger limit, not whole MB"])
def test_the_adapter_uploader_says_the_servers_limit(app_page, tmp_path, monkeypatch, max_bytes: int,
                                                     mb: int | None, label: str):
    """The limit shown is the one enforced: the setting, or the largest adapter the app makes if that is more."""
    import streamlit as st

    enforced = max(max_bytes, largest_adapter_bytes())
    mb = mb or enforced // 1_000_000                   # None: raised to the largest adapter, a whole number of MB

    cfg = tmp_path / "lab.toml"
    cfg.write_text(f"[limits]\nmax_adapter_bytes = {max_bytes}\n")
    monkeypatch.setenv("LORA_LAB_SETTINGS", str(cfg))
    st.cache_resource.clear()                          # settings are read once per server
    try:
        at = app_page("adapters")
        (uploader,) = at.file_uploader
        assert (uploader.proto.max_upload_size_mb, uploader.proto.label) == (mb, label)
        assert f"at most {enforced:,} bytes (max_adapter_bytes in lora_lab.toml)" in uploader.proto.help
    finally:
        st.cache_resource.clear()


# --- runs that outlive a tab ------------------------------------------------------------------------------
def test_a_reload_claims_its_run_only_once_the_old_tab_has_gone():
    runs, open_tabs = RunRegistry(grace_seconds=60), {"tab-1", "tab-2"}
    alive = open_tabs.__contains__
    run = object()
    run_id = runs.register(run, "tab-1")
    assert len(run_id) == 32 and runs.register(object(), "tab-2") != run_id
    assert runs.claim(run_id, "tab-2", alive) is None          # a copied link cannot take an open tab's run
    assert runs.claim("f" * 32, "tab-2", alive) is None         # no such run
    open_tabs.discard("tab-1")                                  # the reload closed the old session
    assert runs.claim(run_id, "tab-3", alive) is run            # ... and its new session finds the run
    assert runs.claim(run_id, "tab-3", alive) is run            # asking again is harmless


def test_a_closed_tabs_run_frees_its_slot_at_once_and_is_dropped_after_the_grace():
    runs, slots, open_tabs = RunRegistry(grace_seconds=60), TrainingSlots(1, heartbeat_seconds=300), {"a", "b"}
    alive = open_tabs.__contains__
    first, second = runs.register("run a", "a"), runs.register("run b", "b")
    assert slots.request(first) == 0 and slots.request(second) == 1
    open_tabs.discard("a")                                       # tab a closed mid-training
    orphans = runs.sweep(alive, now=1000.0)
    assert orphans == [first]
    for run_id in orphans:
        slots.release(run_id)
    assert slots.request(second) == 0                            # no 300 s heartbeat wait
    assert runs.sweep(alive, now=1059.0) == [first] and len(runs) == 2   # still claimable within the grace
    runs.sweep(alive, now=1061.0)
    assert len(runs) == 1 and runs.claim(first, "c", alive) is None       # gone after it


def test_the_registry_is_bounded():
    runs = RunRegistry(max_runs=2)
    runs.register(1, "a")
    runs.register(2, "b")
    with pytest.raises(ValueError, match=r"runs=2 is the most this server keeps at once \(2\)"):
        runs.register(3, "c")


def test_a_claim_waits_a_moment_for_the_reloaded_tabs_old_session_to_close():
    runs, open_tabs = RunRegistry(), {"old"}
    run_id = runs.register("run", "old")
    threading.Timer(0.3, open_tabs.discard, args=("old",)).start()   # the server sees the old tab close late
    assert runs.claim(run_id, "new", open_tabs.__contains__, wait_seconds=0.0) is None
    assert runs.claim(run_id, "new", open_tabs.__contains__, wait_seconds=5.0) == "run"
