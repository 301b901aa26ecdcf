"""Scaling: α/r against rsLoRA's α/√r, what the scale does to training, and α as a learning rate."""

import streamlit as st

import lora_core as lc
from lora_core import viz
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


def rules() -> dict:
    return {"curves": {"α/r (LoRA, PEFT default)": [lc.LoraConfig(r=r, lora_alpha=alpha).scaling for r in RANKS],
                       "α/√r (use_rslora=True)": [lc.LoraConfig(r=r, lora_alpha=alpha, use_rslora=True).scaling
                                                  for r in RANKS]},
            "picked": lc.LoraConfig(r=r_pick, lora_alpha=alpha).scaling,
            "picked_rs": lc.LoraConfig(r=r_pick, lora_alpha=alpha, use_rslora=True).scaling,
            "alpha": alpha, "r": r_pick}


scales = last_good("scaling:rules", rules)
if scales:
    st.plotly_chart(viz.scale_vs_rank(RANKS, scales["curves"], (scales["r"], scales["picked"]), scales["alpha"]),
                    width="stretch")
    m1, m2 = st.columns(2)
    m1.metric(f"α/r at r={scales['r']}", f"{scales['picked']:g}",
              help="ΔW = B·A·scale: below 1 shrinks the update, above 1 amplifies it")
    m2.metric(f"α/√r at r={scales['r']}", f"{scales['picked_rs']:g}")
    seed = lc.LoraConfig(r=64, lora_alpha=16)
    st.markdown(f"A common QLoRA recipe uses r = 64 with α = 16. Its scale is α/r = **{seed.scaling:g}**, "
                f"so B·A is shrunk {1 / seed.scaling:g}× before it is added to W. With rsLoRA the same "
                f"pair gives {lc.LoraConfig(r=64, lora_alpha=16, use_rslora=True).scaling:g}.")

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
    out = lc.train_toy(lc.ToyConfig(r=r, lora_alpha=alpha, use_rslora=rslora, lr=lr, steps=steps))
    return {"loss": out.losses, "norm": out.delta_norms, "scale": out.layer.scaling,
            "initial": lc.initial_loss(out.config)}


def all_runs() -> dict[tuple[int, bool], dict[str, list[float]]]:
    if not ranks:
        raise ValueError("ranks=[] is not allowed: pick at least one rank to train")
    return {(r, rs): run(r, alpha, rs, lr, steps) for rs in (False, True) for r in sorted(ranks)}


with st.spinner("Training small adapters…"):
    runs = last_good("scaling:runs", all_runs)
if runs:
    left, right = st.columns(2)
    for col, rs, label in ((left, False, "α/r"), (right, True, "α/√r (rsLoRA)")):
        col.plotly_chart(viz.curves({f"r={r}": v["loss"] for (r, flag), v in runs.items() if flag == rs},
                                    f"Loss under {label}", "expected loss", log_y=True), width="stretch")
    st.plotly_chart(viz.curves({f"r={r}, {'α/√r' if rs else 'α/r'}": v["norm"] for (r, rs), v in runs.items()},
                               "‖ΔW‖_F during training", "‖ΔW‖_F",
                               dashed=[f"r={r}, α/√r" for r in ranks]), width="stretch")
    st.dataframe([{"r": r, "rule": "α/√r" if rs else "α/r", "scale": v["scale"],
                   "final loss": v["loss"][-1], "loss left (%)": 100 * v["loss"][-1] / v["initial"],
                   "final ‖ΔW‖_F": v["norm"][-1]} for (r, rs), v in runs.items()], hide_index=True)

# --- 3. α and the learning rate under Adam ---------------------------------------------------------
st.header("3. Under Adam, α acts like a learning rate")
st.markdown(
    "Adam's step on each parameter does not depend on the gradient's size, so multiplying α by k "
    "does not multiply the step on B and A; it multiplies their effect on ΔW. Run (α, lr) against "
    "(2α, lr/2): at the first step both give exactly ΔW = −scale·lr·sign(g)·A₀, so the curves start "
    "together, then drift as A starts to move. Rescale A's init too, and (2α, lr/√2, A₀/√2) retraces "
    "(α, lr) step for step: α carries no information that lr and the init scale do not.")
base_cfg = lc.ToyConfig(r=8, lora_alpha=16, lr=1e-3, steps=80)


@st.cache_data(show_spinner=False)
def adam_pair() -> dict[str, list[float]]:
    half = lc.ToyConfig(**{**base_cfg.__dict__, "lora_alpha": 32.0, "lr": 5e-4})
    return {"(α=16, lr=1e-3)": lc.train_toy(base_cfg).losses,
            "(α=32, lr=5e-4)": lc.train_toy(half).losses,
            "(α=32, lr=7.07e-4, A₀/√2)": lc.train_toy(lc.adam_equivalent(base_cfg, 2.0)).losses}


curves = adam_pair()
st.plotly_chart(viz.curves(curves, "(α, lr) against (2α, lr/2) and the exact equivalent", "expected loss",
                           dashed=["(α=32, lr=7.07e-4, A₀/√2)"]), width="stretch")
names = list(curves)
st.dataframe([{"step": s, **{n: curves[n][s - 1] for n in names}} for s in (1, 5, 20, 80)], hide_index=True)
