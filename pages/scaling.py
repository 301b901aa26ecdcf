"""Scaling: α/r against rsLoRA's α/√r, what the scale does to training, and α as a learning rate.

Every number comes from lora_core.teach.scaling_runs (LoraConfig.scaling and real toy runs).
"""

import streamlit as st

from lora_core import viz
from lora_core.teach import scaling_runs
from pages.common import last_good

st.title("Scaling: α, r and rsLoRA")
st.caption("LoRA (arXiv 2106.09685) scales B·A by α/r; rsLoRA (Kalajdzievski 2023, arXiv 2312.03732) "
           "argues for α/√r so that learning does not stall as r grows.")

RANKS = [1, 2, 4, 8, 16, 32, 64, 128, 256]

# --- 1. the two rules ----------------------------------------------------------------------------
st.header("1. The scale as r varies")
c1, c2 = st.columns(2)
alpha = c1.number_input("lora_alpha α", value=16.0, min_value=0.0, step=1.0)
r_pick = c2.select_slider("your r", RANKS, value=64)
scales = last_good("scaling:rules", lambda: scaling_runs.scale_rules(alpha, RANKS, r_pick))
if scales:
    st.plotly_chart(viz.scale_vs_rank(RANKS, scales["curves"], (scales["r"], scales["picked"]), scales["alpha"]),
                    width="stretch")
    m1, m2 = st.columns(2)
    m1.metric(f"α/r at r={scales['r']}", f"{scales['picked']:g}",
              help="ΔW = B·A·scale: below 1 shrinks the update, above 1 amplifies it")
    m2.metric(f"α/√r at r={scales['r']}", f"{scales['picked_rs']:g}")
    recipe = scaling_runs.qlora_recipe()
    st.markdown(f"A common QLoRA recipe uses r = {recipe['r']} with α = {recipe['lora_alpha']}. Its scale is "
                f"α/r = **{recipe['scale']:g}**, so B·A is shrunk {recipe['shrink']:g}× before it is added to W. "
                f"With rsLoRA the same pair gives {recipe['scale_rs']:g}.")

# --- 2. real runs ---------------------------------------------------------------------------------
st.header("2. What the scale does to training")
st.markdown("Each curve is a real Adam run on `lc.toy`: a frozen 128×128 layer learns an update of "
            "rank 4 from mini-batches. α is the same for every r, so only the rule differs. Compare how "
            "far apart the ranks end up under each rule: under α/r the scale falls like 1/r and eats "
            "most of what the extra rank could add. The loss is the exact expected error ‖ΔW − ΔW*‖²/d.")
c1, c2, c3 = st.columns(3)
ranks = c1.multiselect("ranks", [1, 2, 4, 8, 16, 32, 64], default=[4, 16, 64])
lr = c2.select_slider("learning rate", [1e-4, 3e-4, 1e-3, 3e-3, 1e-2], value=1e-3)
steps = c3.slider("steps", 20, 300, 150, step=10)


@st.cache_data(show_spinner=False)
def run(r: int, alpha: float, rslora: bool, lr: float, steps: int) -> dict[str, list[float]]:
    return scaling_runs.toy_curves(r, alpha, rslora, lr, steps)


with st.spinner("Training small adapters…"):
    runs = last_good("scaling:runs", lambda: scaling_runs.rule_runs(ranks, alpha, lr, steps, train=run))
if runs:
    left, right = st.columns(2)
    for col, rs, label in ((left, False, "α/r"), (right, True, "α/√r (rsLoRA)")):
        col.plotly_chart(viz.curves(scaling_runs.loss_curves(runs, rs), f"Loss under {label}", "expected loss",
                                    log_y=True), width="stretch")
    norms, dashed = scaling_runs.norm_curves(runs)
    st.plotly_chart(viz.curves(norms, "‖ΔW‖_F during training", "‖ΔW‖_F", dashed=dashed), width="stretch")
    st.dataframe(scaling_runs.run_table(runs), hide_index=True)

# --- 3. α and the learning rate under Adam ---------------------------------------------------------
st.header("3. Under Adam, α acts like a learning rate")
st.markdown(
    "Adam's step on each parameter does not depend on the gradient's size, so multiplying α by k "
    "does not multiply the step on B and A; it multiplies their effect on ΔW. Run (α, lr) against "
    "(2α, lr/2): at the first step both give exactly ΔW = −scale·lr·sign(g)·A₀, so the curves start "
    "together, then drift as A starts to move. Rescale A's init too, and (2α, lr/√2, A₀/√2) retraces "
    "(α, lr) step for step: α carries no information that lr and the init scale do not.")


@st.cache_data(show_spinner=False)
def adam_pair() -> dict:
    return scaling_runs.adam_pair()


pair = adam_pair()
st.plotly_chart(viz.curves(pair["curves"], "(α, lr) against (2α, lr/2) and the exact equivalent", "expected loss",
                           dashed=pair["dashed"]), width="stretch")
st.dataframe(pair["table"], hide_index=True)
