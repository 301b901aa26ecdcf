"""LoRA Lab: the entry point. Page config, the shared sidebar, and navigation over pages/.

Run it with `make app` (or `streamlit run app.py`). All numbers come from lora_core; the list of pages
is pages.common.PAGES, which Home's links read too.
"""

import streamlit as st

import lora_core as lc
from lora_core.teach.anatomy import percent_of_weight
from pages.common import navigation_pages, show_unexpected

st.set_page_config(page_title="LoRA Lab", page_icon=":material/science:", layout="wide")


@st.cache_data(ttl=60, show_spinner=False)
def _model_source() -> lc.models.ModelSource:
    return lc.models.source_info(lc.models.default_model_name())


@st.cache_data(show_spinner=False)
def _device() -> str:
    return lc.describe_device(lc.pick_device())


@st.cache_data(show_spinner=False)
def _example() -> lc.counting.LedgerRow:
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
                   f"{row.weight_params:,} ({percent_of_weight(row):.2f}%).")
        st.caption(f"**Device:** {_device()}")
        src = _model_source()
        kind = "pretrained" if src.pretrained else "random weights, real shapes"
        status = "ready" if src.available else "not available"
        st.caption(f"**Model:** `{src.name}` ({kind}, {status}). {src.detail}")


pages = navigation_pages()
# Our own sidebar links (position="hidden"): with a pages/ folder beside app.py, Streamlit's automatic
# sidebar can briefly list the raw files on a server's first load; drawing the links ourselves avoids it.
navigation = st.navigation(pages, position="hidden")
sidebar(pages)
try:
    navigation.run()
except Exception as err:  # bad input is a ValueError shown inline by the page; this is a bug
    show_unexpected(err, f"the page '{navigation.title}'")
