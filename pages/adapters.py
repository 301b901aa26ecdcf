"""Load an adapter: upload a PEFT-format .zip, have lora_core check all of it, then see what it holds and does."""

import hashlib
from collections.abc import Callable

import streamlit as st

import lora_core as lc
from lora_core import training, viz
from lora_core.serve.upload_limits import upload_limit
from lora_core.teach import adapter_views
from pages.common import (
    RUN,
    Unexpected,
    as_text,
    base_model,
    draw_unexpected,
    last_good,
    log_unexpected,
    model_picker,
    settings,
    upload_widget,
)

st.title("Load an adapter")
st.markdown("Upload a LoRA adapter in Hugging Face PEFT's format: a .zip holding `adapter_config.json` and "
            "`adapter_model.safetensors`, like the one the **Live fine-tuning** page downloads. Everything in it "
            "is checked before it touches a model: the zip's members, every config field, and each tensor's name, "
            "shape, dtype and values. Weights are read as safetensors only, never unpickled.")

# LOADED: the adapter on show, KEY: (base, sha256) of the file it came from; ERROR: (key, message or bug) of the
# last file that failed, redrawn on every rerun while that same file is chosen, forgotten when it leaves.
LOADED, KEY, ERROR, GENERATED = "adapters:loaded", "adapters:key", "adapters:error", "adapters:generated"
IN_SESSION = "the adapter trained in this session"


@st.cache_data(show_spinner=False)
def default_prompt() -> str:
    return training.load_dataset("recommendations").test[0][0]


def load(model_name: str, data: bytes, label: str, source: str) -> dict:
    """Check the .zip against the shared base, then load it into this session's own copy of the base.

    The size limit is the one in force (never below the largest adapter the Fine-tuning page makes);
    `source` names the .zip in messages: an upload, or the adapter trained in this session.
    """
    limits = settings()
    model, tok = base_model(model_name)
    loaded = adapter_views.load_adapter_upload(model, data, model_name,
                                               upload_limit(limits, "max_adapter_bytes").max_bytes, limits.max_r,
                                               source=source)
    return {**loaded, "label": label, "model_name": model_name, "tokenizer": tok}


def try_to_load(key: tuple[str, str], zip_bytes: Callable[[], bytes], label: str, source: str) -> None:
    """Load a newly chosen .zip once; an error is kept with its key, so it is shown until the file goes.

    The key is recorded only once the adapter has loaded, or its error is stored to be shown: a failure never
    leaves the file looking handled.
    """
    with st.spinner("Checking the adapter and loading it onto the base…"):
        try:
            st.session_state[LOADED] = load(key[0], zip_bytes(), label, source)
        except ValueError as err:  # the message names the file, field or tensor, its value and what is allowed
            st.session_state[ERROR] = (key, str(err))
            return
        except Exception as err:  # a bug: logged once with a reference; the learner keeps seeing it
            st.session_state[ERROR] = (key, log_unexpected(err, "loading the adapter"))
            return
    st.session_state[KEY] = key
    st.session_state.pop(ERROR, None)
    st.session_state.pop(GENERATED, None)  # those generations came from the previous adapter


# --- 1. the base and the adapter --------------------------------------------------------------------
st.header("1. Choose the base model and the adapter")
model_name = model_picker("base model", help="an adapter fits only a base with the same architecture; it means "
                                             "something only on the base it was trained on")
run = st.session_state.get(RUN)
trained_here = run is not None and run.status not in ("running", "paused")
options = ["upload a .zip", IN_SESSION] if trained_here else ["upload a .zip"]
source = st.radio("adapter", options, horizontal=True)
chosen = None  # (what identifies the .zip, how to get its bytes, its label, its name in messages)
if source == "upload a .zip":
    upload = upload_widget("adapter .zip (PEFT format)", "max_adapter_bytes", type=["zip"])
    if upload is not None:
        chosen = (hashlib.sha256(upload.getvalue()).hexdigest(), upload.getvalue, upload.name, "adapter upload")
else:  # zipped only when loaded: a new zip's timestamps differ, so the run and its step identify it
    chosen = (f"run {id(run)} at step {run.step}", lambda: lc.adapter_zip(run.model),
              f"trained in this session: r={run.lora_config.r}, {run.step} steps", IN_SESSION)

failed = None
if chosen is None:
    st.session_state.pop(ERROR, None)  # the failed file left the uploader: choosing it again checks it again
else:
    key = (model_name, chosen[0])
    error = st.session_state.get(ERROR)
    if st.session_state.get(KEY) != key and (error is None or error[0] != key):  # new: check and load it once
        try_to_load(key, *chosen[1:])
    error = st.session_state.get(ERROR)
    failed = error[1] if error is not None and error[0] == key else None
if isinstance(failed, Unexpected):
    draw_unexpected(failed)
elif failed is not None:
    st.error(as_text(failed), icon="⚠️")
loaded = st.session_state.get(LOADED)
if loaded is None:
    st.info("No adapter loaded yet. Train one on the **Live fine-tuning** page and download it, then upload the "
            ".zip here.")
    st.stop()
if failed is not None:
    st.caption(f"Still showing the adapter loaded before: **{loaded['label']}** on `{loaded['model_name']}`.")

# --- 2. what it is -----------------------------------------------------------------------------------
st.header("2. What the adapter is")
cfg, ledger = loaded["config"], loaded["ledger"]
st.caption(f"**{loaded['label']}** on `{loaded['model_name']}`")
m = st.columns(4)
m[0].metric("r", cfg.r)
m[1].metric("lora_alpha", f"{cfg.lora_alpha:g}")
m[2].metric("scaling", f"{cfg.scaling:.4g}", help="alpha / sqrt(r) with rsLoRA" if cfg.use_rslora else "alpha / r")
m[3].metric("adapted layers", len(loaded["report"]))
left, right = st.columns(2)
with left:
    st.markdown("**adapter_config.json**, as read")
    st.json(cfg.to_peft_dict())
right.plotly_chart(viz.ledger_bars(ledger), width="stretch")
st.code(ledger.peft_line, language=None)
st.dataframe(ledger.records(), hide_index=True)

# --- 3. the spectrum of ΔW ---------------------------------------------------------------------------
st.header("3. The spectrum of ΔW, layer by layer")
st.markdown("Each adapted layer adds ΔW = B·A·scaling, of rank at most r. Its singular values come from the "
            "factors (`lc.singular_values`), never from the full matrix. A few large values and a fast drop mean "
            "the update uses fewer directions than r allows.")
report = loaded["report"]
names = adapter_views.layer_spectra(report)["layers"]
shown = st.multiselect("layers", names, default=names[:4])
figures = adapter_views.layer_spectra(report, shown)
left, right = st.columns(2)
left.plotly_chart(viz.spectra(figures["spectra"], "ΔW spectrum per layer"), width="stretch")
right.plotly_chart(viz.layer_bars(figures["layers"], figures["relative"], "‖ΔW‖_F / ‖W‖_F per adapted layer",
                                  "relative size of the update"), width="stretch")
st.dataframe(adapter_views.spectrum_rows(report), hide_index=True)

# --- 4. what it does ---------------------------------------------------------------------------------
st.header("4. Base against adapted")
prompt = st.text_input("prompt", value=default_prompt())
new_tokens = st.slider("new tokens", 4, 64, 24)
if st.button("Generate both ways (greedy)"):
    with st.spinner("Generating…"):
        st.session_state[GENERATED] = last_good("adapters:generate", lambda: (prompt, *adapter_views.generate_both_ways(
            loaded["model"], loaded["tokenizer"], prompt, new_tokens)))
generated = st.session_state.get(GENERATED)
if generated:
    c1, c2 = st.columns(2)
    c1.markdown(f"**base model:** {generated[2]}")
    c2.markdown(f"**with the adapter:** {generated[1]}")
    st.caption(f"prompt: *{generated[0]}*")
