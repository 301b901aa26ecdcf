"""LoRA Lab: the entry point. Page config, the shared sidebar, and navigation over pages/.

Run it with `make app` (or `streamlit run app.py`). All numbers come from lora_core.
"""

import streamlit as st

import lora_core as lc

st.set_page_config(page_title="LoRA Lab", page_icon=":material/science:", layout="wide")


@st.cache_data(ttl=60, show_spinner=False)
def _model_source() -> lc.ModelSource:
    return lc.source_info(lc.default_model_name())


@st.cache_data(show_spinner=False)
def _device() -> str:
    return lc.describe_device(lc.pick_device())


def sidebar() -> None:
    with st.sidebar:
        st.markdown("### LoRA Lab")
        st.latex(r"h = W x + \tfrac{\alpha}{r}\, B A x")
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
    st.Page("pages/qlora.py", title="QLoRA and memory", icon=":material/memory:"),
]
sidebar()
st.navigation(pages).run()
