"""Home: LoRA in one picture, with live shapes and counts for the chosen r and α."""

import streamlit as st

import lora_core as lc
import pages  # noqa: F401  (a page opened by its own link still runs through app.py)
from lora_core import viz

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
    st.error(str(err))
    st.stop()


@st.cache_data(show_spinner=False)
def ledger(r: int, alpha: float, rslora: bool) -> lc.Ledger:
    return lc.count_lora_parameters("distilgpt2", lc.LoraConfig(r=r, lora_alpha=alpha, target_modules=["c_attn"],
                                                                use_rslora=rslora))


book = ledger(r, alpha, rslora)
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
for path, label in [
    ("pages/parameters.py", "**Parameters**: the ledger for any model, r and target set, checked against PEFT"),
    ("pages/anatomy.py", "**Anatomy**: which layers get LoRA, where dropout acts, bias modes, init variants"),
    ("pages/rank_svd.py", "**Rank and SVD**: why a low-rank update is enough, ΔW's spectrum, subspace similarity"),
    ("pages/scaling.py", "**Scaling**: α/r against rsLoRA's α/√r, and α as a learning rate under Adam"),
    ("pages/finetune.py", "**Live fine-tuning**: train SmolLM2 or distilgpt2 with LoRA, then merge and export"),
    ("pages/qlora.py", "**QLoRA and memory**: NF4 from scratch and what a training step costs"),
    ("pages/interview.py", "**Interview prep**: randomised questions whose answers lora_core computes"),
    ("pages/claims.py", "**Claims check**: what the usual LoRA write-ups get right and wrong, with evidence"),
]:
    st.page_link(path, label=label)
