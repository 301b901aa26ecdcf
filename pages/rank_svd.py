"""Rank and SVD: why a low-rank update is enough, and what ΔW's spectrum looks like.

Every number comes from lora_core.teach.low_rank (spectra, adapters on a real weight), the subspace replay
and lora_core.spectrum; this page picks inputs and draws.
"""

import streamlit as st

import lora_core as lc
from lora_core import viz
from lora_core.research import record, verdicts
from lora_core.teach import low_rank
from pages.common import TRAINED_ADAPTERS, base_model, last_good

st.title("Rank and SVD: why low rank works")
st.caption("LoRA, Hu et al. 2021 (arXiv 2106.09685), sections 4 and 7.")

MODEL = "smollm2-135m"


@st.cache_data(show_spinner=False)
def matrix(layer: int | None, proj: str | None) -> low_rank.MatrixSpectrum:
    """The demo picture (layer None), or a copy of one pretrained SmolLM2 weight (the cache is never touched)."""
    if layer is None:
        return low_rank.matrix_spectrum(lc.spectrum.demo_image())
    return low_rank.matrix_spectrum(low_rank.weight_copy(base_model(MODEL)[0], layer, proj))


@st.cache_data(show_spinner=False)
def approximation(layer: int | None, proj: str | None, k: int):
    return lc.spectrum.low_rank_approximation(matrix(layer, proj).matrix, k)


@st.cache_data(show_spinner=False)
def keep_top(layer: int | None, proj: str | None, k: int) -> dict:
    return lc.spectrum.rank_k_report(matrix(layer, proj).matrix, k)


@st.cache_data(show_spinner=False)
def adapter_spectra(layer: int, proj: str, r: int, alpha: float) -> dict:
    """A fresh and a random adapter on the real layer (the frozen weight is shared, not copied)."""
    return low_rank.adapter_spectra(matrix(layer, proj).matrix, r, alpha)


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
    proj = c2.selectbox("projection", low_rank.PROJECTIONS)
    name = f"layers.{layer}.{proj}"
with st.spinner("Loading SmolLM2-135M…"):
    study = matrix(layer, proj)
(m, n), max_k = study.shape, study.max_k
k = st.slider("k (singular values kept)", 1, max_k, min(8, max_k))
report = keep_top(layer, proj, k)
m1, m2, m3 = st.columns(3)
m1.metric("energy kept", f"{report['energy']:.2%}", help="Σ_{i≤k} σᵢ² / Σ σᵢ²")
m2.metric("relative error ‖W−W_k‖/‖W‖", f"{report['relative_error']:.3f}")
m3.metric("numbers stored", f"{report['stored']:,} of {report['full']:,}",
          help=f"k·(m+n) = {k}·({m}+{n}); {low_rank.stored_share(report):.1%} of m·n")
left, right = st.columns(2)
if source == "a picture":
    left.plotly_chart(viz.image_pair(study.matrix, approximation(layer, proj, k), k), width="stretch")
else:
    left.plotly_chart(viz.spectra({f"W = {name} ({m}×{n})": study.singular_values}, "Spectrum of W"),
                      width="stretch")
right.plotly_chart(viz.energy_curve(lc.spectrum.energy_profile(study.singular_values), k,
                                    f"Energy of {name} against k"), width="stretch")
if source != "a picture":
    st.info(f"A pretrained weight is **not** low rank: its top {k} values keep only {report['energy']:.1%} "
            "of its energy. LoRA does not compress W. It bets that the *change* ΔW a new task needs has "
            "low rank: the LoRA paper's intrinsic-rank hypothesis, which the research replays test on SmolLM2 "
            "(section 3, and the Research replays page).")

# --- 2. the spectrum of ΔW -----------------------------------------------------------------------
st.header("2. The spectrum of ΔW = B·A·scaling")
st.markdown("ΔW is a product through an r-dimensional bottleneck, so at most r of its singular values "
            "are non-zero. `lc.singular_values` finds them from the factors: a QR of B and of Aᵀ, "
            "then the SVD of an r×r core. It never forms ΔW.")
if source == "a picture":
    st.caption("This section uses the pretrained weight chosen above; pick it in section 1.")
    layer, proj = 0, low_rank.PROJECTIONS[0]
    name = f"layers.0.{proj}"
r = st.select_slider("adapter rank r", [1, 2, 4, 8, 16, 32, 64], value=8)
alpha = st.number_input("lora_alpha", value=16.0, min_value=0.0, step=1.0)

spectra = last_good("rank_svd:adapters", lambda: adapter_spectra(layer, proj, r, alpha))
if spectra:
    series = {f"W = {name}": matrix(layer, proj).singular_values, **spectra["nonzero"]}
    st.plotly_chart(viz.spectra(series, f"Spectrum of W beside ΔW (r = {r})"), width="stretch")
    st.dataframe(spectra["rows"], hide_index=True, width="stretch")
    st.caption("The fresh adapter's ΔW is exactly zero (B starts at zero), so it has no spectrum to draw: "
               "that is why training starts from the base model's behaviour.")

# --- 3. r = 8 against r = 64 on a real model: the subspace replay -----------------------------------
st.header("3. Do r = 8 and r = 64 find the same directions? Measured on SmolLM2")
st.markdown("Section 7.1 of the LoRA paper trains adapters of rank 8 and 64 on the same task and asks whether the "
            "larger one finds new directions. φ(i, j) measures how much of the top i right-singular directions of "
            "one adapter's A lie in the top j of the other's: 1 means contained, and two random subspaces give "
            "max(i, j)/n. The **Research replays** page trains both adapters on pretrained SmolLM2-135M-Instruct "
            "(a data-to-text task) and measures it; here is its result for block 15.")
subspace = last_good("rank_svd:subspace", lambda: record.shipped("subspace"))
if subspace is None:
    st.info("No shipped subspace replay in this copy: `python -m lora_core.replay run subspace --out "
            "results/replay` produces it.", icon=":material/info:")
else:
    st.plotly_chart(viz.subspace_heatmaps(subspace["results"]), width="stretch")
    phi = {proj: subspace["results"]["modules"][proj] for proj in ("q_proj", "v_proj")}
    m1, m2, m3 = st.columns(3)
    m1.metric("φ(1, 1), q", f"{phi['q_proj']['r8_vs_r64'][0][0]:.3f}")
    m2.metric("φ(1, 1), v", f"{phi['v_proj']['r8_vs_r64'][0][0]:.3f}")
    m3.metric("random subspaces, φ(1, 1)", f"{phi['q_proj']['baseline_r8_vs_r64'][0][0]:.4f}",
              help="max(i, j)/n for i = 1, j = 64 and n = 576 input features")
    v = verdicts.verdict(subspace)
    st.markdown(f"**Verdict against the paper's Figure 3: {v['verdict']}.** {v['ours']}.")
st.markdown("Whether a small r is *enough* for a task is the rank sweep's question, and whether a full fine-tune's "
            "update is itself low rank is the forgetting replay's: both are measured on SmolLM2 on the Research "
            "replays page, beside the papers' numbers. (The LoRA paper's intrinsic-rank hypothesis builds on "
            "Aghajanyan et al.'s intrinsic *dimension*, arXiv 2012.13255, which is a different quantity.)")
st.page_link("pages/replays.py", label="Research replays: all seven findings, re-measured",
             icon=":material/science:")

# --- 4. adapters trained on the Fine-tuning page -------------------------------------------------
st.header("4. Your trained adapters")
trained = st.session_state.get(TRAINED_ADAPTERS, {})
if not trained:
    st.markdown("Adapters you train on the **Fine-tuning** page in this session appear here. Train two, "
                "say r = 8 and r = 64 on the same targets, to measure φ between them on a real model.")
    st.page_link("pages/finetune.py", label="Go to Fine-tuning", icon=":material/model_training:")
else:
    names = list(trained)
    c1, c2 = st.columns(2)
    first = c1.selectbox("adapter", names, index=0)
    second = c2.selectbox("compare with", names, index=len(names) - 1)
    common = low_rank.shared_layers(trained[first], trained[second])
    if not common:
        st.warning(f"'{first}' and '{second}' adapt no layer in common: pick adapters with shared targets.")
    else:
        layer_name = st.selectbox("layer", common)
        compared = low_rank.compare_adapters(trained[first], trained[second], layer_name)
        one, two = compared["spectra"]
        left, right = st.columns(2)
        left.plotly_chart(viz.spectra({first: one, second: two}, f"ΔW spectrum of {layer_name}"), width="stretch")
        right.plotly_chart(viz.similarity_heatmap(compared["phi"], first, second), width="stretch")
        st.metric("φ over the top 1 direction", f"{compared['phi_top1']:.3f}")
