"""Rank and SVD: why a low-rank update is enough, and what ΔW's spectrum looks like."""

import streamlit as st
import torch
import torch.nn as nn

import lora_core as lc
from lora_core import viz
from pages.common import base_model, last_good

st.title("Rank and SVD: why low rank works")
st.caption("LoRA, Hu et al. 2021 (arXiv 2106.09685), sections 4 and 7.")

MODEL = "smollm2-135m"
PROJECTIONS = ["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
               "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj"]


@st.cache_data(show_spinner=False)
def matrix(layer: int | None, proj: str | None) -> torch.Tensor:
    """The demo picture (layer None), or a copy of one pretrained SmolLM2 weight (the cache is never touched)."""
    if layer is None:
        return lc.demo_image()
    model, _ = base_model(MODEL)
    return model.get_submodule(f"model.layers.{layer}.{proj}").weight.detach().float().clone()


@st.cache_data(show_spinner=False)
def spectrum(layer: int | None, proj: str | None) -> torch.Tensor:
    return torch.linalg.svdvals(matrix(layer, proj))


@st.cache_data(show_spinner=False)
def approximation(layer: int | None, proj: str | None, k: int) -> torch.Tensor:
    return lc.low_rank_approximation(matrix(layer, proj), k)


@st.cache_data(show_spinner=False)
def toy_adapters(r_small: int, r_large: int) -> dict[str, dict]:
    """Two adapters trained on the same toy problem (a rank-4 target), kept as plain tensors."""
    out = {}
    for r in (r_small, r_large):
        run = lc.train_toy(lc.ToyConfig(r=r, lora_alpha=2 * r, lr=2e-3, steps=300))
        out[f"r={r}"] = {"A": run.layer.lora_A.weight.detach().clone(), "delta": run.layer.delta_weight().detach(),
                         "sv": lc.singular_values(run.layer), "target_sv": torch.linalg.svdvals(run.target_delta)}
    return out


# --- 1. low-rank approximation -------------------------------------------------------------------
st.header("1. Keep the top k singular values")
st.markdown("Any matrix is a sum of rank-one pieces σᵢ·uᵢvᵢᵀ, largest first. Keeping the top k pieces "
            "gives the best rank-k copy there is (Eckart–Young). Stored as U_k·diag(S_k) and V_k, it "
            "takes k·(m+n) numbers: exactly what a rank-k LoRA pair B, A costs.")
source = st.radio("matrix", ["a pretrained weight of SmolLM2-135M", "a picture"], horizontal=True)
if source == "a picture":
    layer, proj, name = None, None, "picture"
else:
    c1, c2 = st.columns(2)
    layer = c1.slider("layer", 0, 29, 0)
    proj = c2.selectbox("projection", PROJECTIONS)
    name = f"layers.{layer}.{proj}"
with st.spinner("Loading SmolLM2-135M…"):
    W = matrix(layer, proj)
k = st.slider("k (singular values kept)", 1, min(W.shape), min(8, min(W.shape)))
report = lc.rank_k_report(W, k)
sv_w = spectrum(layer, proj)
m1, m2, m3 = st.columns(3)
m1.metric("energy kept", f"{report['energy']:.2%}", help="Σ_{i≤k} σᵢ² / Σ σᵢ²")
m2.metric("relative error ‖W−W_k‖/‖W‖", f"{report['relative_error']:.3f}")
m3.metric("numbers stored", f"{report['stored']:,} of {report['full']:,}",
          help=f"k·(m+n) = {k}·({W.shape[0]}+{W.shape[1]}); {report['stored'] / report['full']:.1%} of m·n")
left, right = st.columns(2)
if source == "a picture":
    left.plotly_chart(viz.image_pair(W, approximation(layer, proj, k), k), width="stretch")
else:
    left.plotly_chart(viz.spectra({f"W = {name} ({W.shape[0]}×{W.shape[1]})": sv_w}, "Spectrum of W"),
                      width="stretch")
right.plotly_chart(viz.energy_curve(lc.energy_profile(sv_w), k, f"Energy of {name} against k"), width="stretch")
if source != "a picture":
    st.info(f"A pretrained weight is **not** low rank: its top {k} values keep only {report['energy']:.1%} "
            "of its energy. LoRA does not compress W. It bets that the *change* ΔW a new task needs has "
            "low rank, which is what section 3 shows.")

# --- 2. the spectrum of ΔW -----------------------------------------------------------------------
st.header("2. The spectrum of ΔW = B·A·scaling")
st.markdown("ΔW is a product through an r-dimensional bottleneck, so at most r of its singular values "
            "are non-zero. `lc.singular_values` finds them from the factors: a QR of B and of Aᵀ, "
            "then the SVD of an r×r core. It never forms ΔW.")
if source == "a picture":
    st.caption("This section uses the pretrained weight chosen above; pick it in section 1.")
    layer, proj = 0, PROJECTIONS[0]
    name = f"layers.0.{proj}"
sv_layer = spectrum(layer, proj)
r = st.select_slider("adapter rank r", [1, 2, 4, 8, 16, 32, 64], value=8)
alpha = st.number_input("lora_alpha", value=16.0, min_value=0.0, step=1.0)


@st.cache_data(show_spinner=False)
def adapter_spectra(layer: int, proj: str, r: int, alpha: float) -> dict[str, dict]:
    """A fresh and a random adapter on the real layer (the frozen weight is shared, not copied)."""
    W_layer = matrix(layer, proj)
    out = {}
    for label, init in (("fresh adapter (init=True)", True), ("random adapter (init=False)", False)):
        base = nn.Linear(W_layer.shape[1], W_layer.shape[0], bias=False, device="meta")
        base.weight = nn.Parameter(W_layer, requires_grad=False)
        torch.manual_seed(0)
        out[label] = lc.spectrum_report(lc.LoraLinear(base, lc.LoraConfig(r=r, lora_alpha=alpha,
                                                                         init_lora_weights=init)))
    return out


reports = last_good("rank_svd:adapters", lambda: adapter_spectra(layer, proj, r, alpha))
if reports:
    series = {label: rep["singular_values"] for label, rep in reports.items()}
    rows = [{"adapter": label, "largest σ": rep["largest"], "numerical rank": rep["numerical_rank"],
             "effective rank": round(rep["effective_rank"], 2), "max |σ_factors − σ_full|": rep["max_abs_diff"],
             "factors (ms)": round(rep["factors_ms"], 3), "full SVD (ms)": round(rep["full_ms"], 3)}
            for label, rep in reports.items()]
    nonzero = {k_: v for k_, v in series.items() if float(v.max()) > 0}
    fig_series = {f"W = {name}": sv_layer, **nonzero}
    st.plotly_chart(viz.spectra(fig_series, f"Spectrum of W beside ΔW (r = {r})"), width="stretch")
    st.dataframe(rows, hide_index=True, width="stretch")
    st.caption("The fresh adapter's ΔW is exactly zero (B starts at zero), so it has no spectrum to draw: "
               "that is why training starts from the base model's behaviour.")

# --- 3. trained adapters: low intrinsic rank and subspace similarity -----------------------------
st.header("3. Trained adapters: same directions at r = 8 and r = 64")
st.markdown("Both adapters below are trained with Adam on the same toy task (`lc.toy`): a frozen "
            "128×128 layer must learn an update of rank 4 from data. Section 7 of the LoRA paper asks "
            "whether a larger r finds new directions. φ(i, j) measures how much of the top i directions "
            "of one adapter's A lie in the top j of the other's: 1 means contained, 0 means orthogonal.")
with st.spinner("Training two small adapters…"):
    pair = toy_adapters(8, 64)
a8, a64 = pair["r=8"], pair["r=64"]
phi = lc.subspace_similarity(a8["A"], a64["A"])
c1, c2 = st.columns(2)
c1.plotly_chart(viz.spectra({"target ΔW*": a8["target_sv"][:16], "trained r=8": a8["sv"],
                             "trained r=64": a64["sv"][:16]}, "Spectra after training (top 16)"),
                width="stretch")
c2.plotly_chart(viz.similarity_heatmap(phi, "r=8", "r=64"), width="stretch")
phi_delta = lc.subspace_similarity(a8["delta"], a64["delta"])
m1, m2, m3 = st.columns(3)
m1.metric("φ on A, top 1", f"{float(phi[0, 0]):.3f}", help="the paper's definition: right singular vectors of A")
m2.metric("φ on A, top 4", f"{float(phi[3, 3]):.3f}",
          help="random 4-dim subspaces of 128 dims give about 4/128 = 0.031")
m3.metric("φ on ΔW, top 4", f"{float(phi_delta[3, 3]):.3f}",
          help="the input directions ΔW actually uses; A also keeps its random init, which blurs φ on A")
st.caption("The target has rank 4, and both adapters recover its four singular values: the extra 56 "
           "directions of the r = 64 adapter stay near zero. A few directions carry the update, the "
           "intrinsic-rank claim of the LoRA paper, measured here.")

# --- 4. adapters trained on the Fine-tuning page -------------------------------------------------
st.header("4. Your trained adapters")
trained = st.session_state.get("trained_adapters", {})
if not trained:
    st.markdown("Adapters you train on the **Fine-tuning** page in this session appear here. Train two, "
                "say r = 8 and r = 64 on the same targets, to measure φ between them on a real model.")
    st.page_link("pages/finetune.py", label="Go to Fine-tuning", icon=":material/model_training:")
else:
    names = list(trained)
    c1, c2 = st.columns(2)
    first = c1.selectbox("adapter", names, index=0)
    second = c2.selectbox("compare with", names, index=len(names) - 1)
    common = [layer for layer in trained[first] if layer in trained[second]]
    if not common:
        st.warning(f"'{first}' and '{second}' adapt no layer in common: pick adapters with shared targets.")
    else:
        layer_name = st.selectbox("layer", common)
        one, two = trained[first][layer_name], trained[second][layer_name]
        left, right = st.columns(2)
        left.plotly_chart(viz.spectra({first: one["sv"], second: two["sv"]}, f"ΔW spectrum of {layer_name}"),
                          width="stretch")
        phi_trained = lc.subspace_similarity(one["A"], two["A"])
        right.plotly_chart(viz.similarity_heatmap(phi_trained, first, second), width="stretch")
        st.metric("φ over the top 1 direction", f"{float(phi_trained[0, 0]):.3f}")
