"""Home: LoRA in one picture, with live shapes and counts for the chosen r and α."""

import streamlit as st

import lora_core as lc
import pages  # noqa: F401  (a page opened by its own link still runs through app.py)
from lora_core import viz
from pages.common import HOME, PAGES, as_text, ledger

st.title("LoRA Lab")
st.markdown(
    "LoRA freezes a pretrained weight **W** and learns a low-rank update beside it: "
    "**A** (r × in) maps the input down to r numbers, **B** (out × r) maps them back up, "
    "and their product is scaled by α/r. Only A and B train. B starts at zero, so the "
    "adapted model starts exactly where the base model was."
)

left, right = st.columns([1, 2])
with left:
    r = st.select_slider("rank r", options=[1, 2, 4, 8, 16, 32, 64, 128, 256], value=8)
    alpha = st.number_input("lora_alpha α", min_value=0.0, value=16.0, step=1.0)
    rslora = st.toggle("rsLoRA scaling (α/√r)", value=False)

try:
    cfg = lc.LoraConfig(r=r, lora_alpha=alpha, target_modules=["c_attn"], use_rslora=rslora)
except ValueError as err:
    st.error(as_text(err))
    st.stop()

book = ledger("distilgpt2", cfg)
(row,) = book.rows
with left:
    st.metric("scaling", f"{cfg.scaling:g}", help="α/r, or α/√r with rsLoRA")
    st.metric("LoRA parameters per c_attn", f"{row.lora_per_module:,}",
              help=f"r·(in+out) = {r}·({row.in_features}+{row.out_features})")
    st.metric(f"distilgpt2, c_attn in all {row.count} blocks", f"{book.trainable:,}")
with right:
    st.plotly_chart(viz.weight_vs_adapter(row.in_features, row.out_features, r), width="stretch")
st.markdown("PEFT's `print_trainable_parameters()` for this setup, computed by `lora_core` on distilgpt2's "
            "real shapes (the total includes the adapter):")
st.code(book.peft_line, language=None)

st.subheader("Where to go next, in teaching order")
for entry in PAGES:
    if entry.path != HOME:
        st.page_link(entry.path, label=entry.blurb, icon=entry.icon)
