"""Bad input, page by page: a message that names the field, no exception, and the last good state kept.

The sweep covers every place a page takes a LoRA setting, a dataset or a prompt: nonsense configs
(alpha <= 0, dropout 1.0, no target, a bad regex, r larger than the matrix), broken uploads (empty,
binary, not UTF-8, over the size limit), a prompt longer than the model reads, a learning rate that
makes the loss NaN, and a run stopped and left for another page. r = 0 cannot be entered anywhere:
every rank widget is a slider from 1 or a number input with min_value=1. The Scaling and Rank/SVD
pages' alpha and rank errors are pinned in test_page_rank_svd.py and test_page_scaling.py; the core rules
behind the long-prompt and diverged-run messages in test_train.py and test_live.py. The same uploads and the
long prompt go through a real browser in test_room.py.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
from conftest import errors, metrics
from streamlit.testing.v1 import AppTest

from lora_core.serve.settings import load_settings

DEFAULT_LINE = "trainable params: 147,456 || all params: 82,060,032 || trainable%: 0.1797"
TOO_BIG = load_settings().max_upload_bytes + 1


def _number(at: AppTest, label: str):
    return next(n for n in at.number_input if n.label == label)


def _button(at: AppTest, label: str):
    return next(b for b in at.button if b.label == label)


# --- the Parameters page ------------------------------------------------------------------------------
@pytest.mark.parametrize("change,message", [
    (lambda at: at.number_input[0].set_value(0.0), "lora_alpha=0.0 is not allowed: alpha must be a positive"),
    (lambda at: at.multiselect[0].set_value([]), "target_modules=[] is not allowed: give at least one"),
    (lambda at: at.text_input[0].set_value("("), "target_modules='(' is not allowed: not a valid regular expr"),
], ids=["alpha=0", "no target", "bad regex"])
def test_parameters_page_refuses_a_bad_config_and_keeps_the_last_ledger(app_page, change: Callable, message: str):
    at = app_page("parameters")
    change(at).run()
    assert not at.exception
    assert message in errors(at)
    assert DEFAULT_LINE in [c.value for c in at.code]
    assert any("last valid settings" in c.value for c in at.caption)


def test_parameters_page_refuses_r_larger_than_the_matrix(app_page):
    at = app_page("parameters")
    at.selectbox[0].set_value("SmolLM2-135M").run()
    at.multiselect[0].set_value(["k_proj"]).run()                 # 576 → 192 (grouped-query attention)
    assert metrics(at)["trainable"] == "184,320"                 # 30 × 8·(576 + 192)
    at.select_slider[0].set_value(256).run()
    assert not at.exception
    assert "r=256 is too large for 'model.layers.0.self_attn.k_proj' (576→192)" in errors(at)
    assert metrics(at)["trainable"] == "184,320"


# --- the Anatomy page ---------------------------------------------------------------------------------
@pytest.mark.parametrize("change,message", [
    (lambda at: at.number_input[0].set_value(0.0), "lora_alpha=0.0 is not allowed"),
    (lambda at: at.multiselect[0].set_value([]), "target_modules=[] is not allowed"),
    (lambda at: at.text_input[0].set_value("no_such_layer"), "target_modules='no_such_layer' matches no module"),
], ids=["alpha=0", "no target", "regex matching nothing"])
def test_anatomy_page_refuses_a_bad_config_and_keeps_drawing(app_page, change: Callable, message: str):
    at = app_page("anatomy")
    good = metrics(at)
    change(at).run()
    assert not at.exception                       # alpha=0 and a regex matching nothing used to raise here
    assert message in errors(at)
    assert metrics(at) == good                   # every section still shows the last valid settings


# --- the QLoRA page's memory estimator -----------------------------------------------------------------
@pytest.mark.parametrize("key,value,message", [
    ("qlora_r", 100_000, "r=100000 is too large for 'model.layers.0.self_attn.q_proj' (4096→4096)"),
    ("qlora_targets", "q_proj,,", "target_modules=['q_proj', '', ''] is not allowed"),
], ids=["r larger than the matrix", "empty target name"])
def test_qlora_estimator_refuses_bad_values_and_keeps_the_estimate(app_page, key: str, value, message: str):
    at = app_page("qlora")
    good = metrics(at)["trainable parameters"]
    widget = at.number_input(key=key) if key == "qlora_r" else at.text_input(key=key)
    widget.set_value(value).run()
    assert not at.exception
    assert message in errors(at)
    assert metrics(at)["trainable parameters"] == good


# --- the Fine-tuning page: refused before anything starts ------------------------------------------------
def _upload(name: str, data: bytes) -> Callable:
    def change(at: AppTest) -> None:
        next(s for s in at.selectbox if s.label == "data").set_value("upload a .jsonl")
        at.file_uploader[0].set_value((name, data, "application/octet-stream"))
    return change


FINETUNE_CASES = {
    "dropout=1.0": (lambda at: _number(at, "lora_dropout").set_value(1.0),
                    "lora_dropout=1.0 is not allowed: dropout must be in [0, 1)"),
    "no target": (lambda at: at.multiselect[0].set_value([]), "target_modules=[] is not allowed"),
    "no file": (lambda at: next(s for s in at.selectbox if s.label == "data").set_value("upload a .jsonl"),
                "data='upload a .jsonl' needs a file"),
    "empty file": (_upload("empty.jsonl", b""), "uploaded file is empty: it needs one JSON object per line"),
    "binary file": (_upload("model.jsonl", bytes(range(256)) * 4), "uploaded file is not UTF-8 text"),
    "latin-1 file": (_upload("cafe.jsonl", '{"prompt": "café", "completion": "olé"}\n'.encode("latin-1")),
                     "uploaded file is not UTF-8 text (bad byte at offset 15)"),
    "over the limit": (_upload("big.jsonl", b"x" * TOO_BIG),
                       f"upload_bytes={TOO_BIG:,} is over this server's limit"),
}


@pytest.mark.parametrize("case", FINETUNE_CASES)
def test_finetune_page_refuses_bad_config_and_bad_uploads_before_starting(app_page, case: str):
    change, message = FINETUNE_CASES[case]
    at = app_page("finetune")
    at.selectbox[0].set_value("distilgpt2-random").run()
    change(at)
    at.button[0].click().run()                                   # the form's "Start training"
    assert not at.exception
    assert message in errors(at)
    assert "finetune:run" not in at.session_state
    assert "No run yet" in at.info[0].value


# --- the Fine-tuning page with a run on screen ------------------------------------------------------------
def _configure(at: AppTest, steps: int, lr: float = 2e-3) -> None:
    at.selectbox[0].set_value("distilgpt2-random").run()
    _number(at, "steps").set_value(steps)
    _number(at, "sequence length").set_value(16)
    _number(at, "batch size").set_value(2)
    _number(at, "learning rate").set_value(lr)


@pytest.mark.slow
def test_a_stopped_run_survives_a_page_switch_a_long_prompt_a_bad_upload_and_a_diverging_lr(app_page):
    at = app_page("finetune")
    _configure(at, steps=500)
    at.button[0].click().run()
    at.run()                                                     # a tick of training
    _button(at, "Stop").click().run()
    stopped = metrics(at)
    assert "held-out BLEU (0–100)" in stopped and not at.exception
    label = f"distilgpt2-random r=8 ({stopped['step'].split(' / ')[0]} steps)"
    assert list(at.session_state["trained_adapters"]) == [label]

    # Away and back: the form is reset to the default model, the run is still there and still stopped.
    at.switch_page("pages/parameters.py").run()
    at.switch_page("pages/finetune.py").run()
    assert not at.exception
    assert metrics(at) == stopped
    assert "status: stopped" in at.get("progress")[0].proto.text
    assert list(at.session_state["trained_adapters"]) == [label]  # not relabelled with the reset selectbox

    # A prompt longer than distilgpt2's 1,024 positions.
    next(t for t in at.text_input if t.label.startswith("Try a prompt")).set_value("tell me more " * 400)
    _button(at, "Generate both ways").click().run()
    assert not at.exception
    assert "reads at most 1,024 positions" in errors(at) and "prompt has 1,201 tokens" in errors(at)
    assert metrics(at) == stopped

    # A bad upload while the results are on screen.
    _upload("empty.jsonl", b"")(at)
    at.button[0].click().run()
    assert not at.exception and "uploaded file is empty" in errors(at)
    assert metrics(at) == stopped

    # A learning rate that makes the loss NaN: a clear message, the restored adapter measured, no crash.
    _configure(at, steps=20, lr=1e20)
    next(s for s in at.selectbox if s.label == "data").set_value("recommendations")
    at.button[0].click().run()
    for _ in range(10):
        if at.session_state["finetune:run"].status != "running":
            break
        at.run()
    assert not at.exception, at.exception
    assert at.session_state["finetune:run"].status == "diverged"
    assert "the loss became nan at step" in errors(at) and "(learning rate 1e+20)" in errors(at)
    assert "Trainer" not in errors(at)                           # a learner's words, not a script's
    assert any("lower the **learning rate**" in c.value for c in at.caption)
    assert "held-out BLEU (0–100)" in metrics(at)                # the results of the restored adapter
    assert label in at.session_state["trained_adapters"]         # the earlier adapter is still there
