"""LoRA Lab: the entry point. Page config, the shared sidebar, and navigation over pages/.

Run it with `make app` (or `streamlit run app.py`). All numbers come from lora_core.
"""

import streamlit as st

import lora_core as lc
from pages.common import show_unexpected

st.set_page_config(page_title="LoRA Lab", page_icon=":material/science:", layout="wide")


@st.cache_data(ttl=60, show_spinner=False)
def _model_source() -> lc.ModelSource:
    return lc.source_info(lc.default_model_name())


@st.cache_data(show_spinner=False)
def _device() -> str:
    return lc.describe_device(lc.pick_device())


@st.cache_data(show_spinner=False)
def _example() -> lc.LedgerRow:
    return lc.count_lora_parameters("distilgpt2", lc.LoraConfig(r=8, lora_alpha=16, target_modules=["c_attn"])).rows[0]


def sidebar(pages: list) -> None:
    with st.sidebar:
        st.markdown("### LoRA Lab")
        for page in pages:
            st.page_link(page)
        st.divider()
        st.latex(r"h = W x + \tfrac{\alpha}{r}\, B A x")
        row = _example()
        st.caption(f"distilgpt2's `c_attn` at r = {row.r}: B is {row.out_features}×{row.r} and A is "
                   f"{row.r}×{row.in_features}, so {row.lora_per_module:,} numbers train beside a frozen W of "
                   f"{row.weight_params:,} ({100 * row.lora_per_module / row.weight_params:.2f}%).")
        st.caption(f"**Device:** {_device()}")
        src = _model_source()
        kind = "pretrained" if src.pretrained else "random weights, real shapes"
        status = "ready" if src.available else "not available"
        st.caption(f"**Model:** `{src.name}` ({kind}, {status}). {src.detail}")


pages = [
    st.Page("pages/home.py", title="Home: what LoRA is", icon=":material/home:", default=True),
    st.Page("pages/parameters.py", title="Parameters: the ledger", icon=":material/calculate:"),
    st.Page("pages/anatomy.py", title="Anatomy: targets, dropout, bias, init", icon=":material/biotech:"),
    st.Page("pages/rank_svd.py", title="Rank and SVD", icon=":material/ssid_chart:"),
    st.Page("pages/scaling.py", title="Scaling: α, r, rsLoRA", icon=":material/balance:"),
    st.Page("pages/finetune.py", title="Live fine-tuning", icon=":material/model_training:"),
    st.Page("pages/adapters.py", title="Load an adapter", icon=":material/upload_file:"),
    st.Page("pages/qlora.py", title="QLoRA and memory", icon=":material/memory:"),
    st.Page("pages/speed.py", title="Speed: LoRA against its floor", icon=":material/speed:"),
    st.Page("pages/interview.py", title="Interview prep", icon=":material/quiz:"),
    st.Page("pages/claims.py", title="Claims check", icon=":material/fact_check:"),
]
# Our own sidebar links (position="hidden"): with a pages/ folder beside app.py, Streamlit's automatic
# sidebar can briefly list the raw files on a server's first load; drawing the links ourselves avoids it.
navigation = st.navigation(pages, position="hidden")
sidebar(pages)
try:
    navigation.run()
except Exception as err:  # bad input is a ValueError shown inline by the page; this is a bug
    show_unexpected(err, f"the page '{navigation.title}'")
