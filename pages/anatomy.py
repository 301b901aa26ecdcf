"""Anatomy: where a LoRA adapter attaches, what its dropout hits, what bias adds, how it starts.

Every number is measured live by lora_core.teach.anatomy: meta-device models for names and counts,
forward hooks for dropout, and a pretrained SmolLM2 weight (copied, never the cached model) for init.
"""

import streamlit as st

import lora_core as lc
from lora_core import viz
from lora_core.teach import anatomy, ledger_views
from pages.common import ALL_LINEAR, base_model, last_good, ledger, matched, meta_model, model_facts

GPT2, LLAMA = "distilgpt2", "SmolLM2-135M"   # shipped configs: shapes only
PRETRAINED = "smollm2-135m"                  # real weights for the init gallery (offline)
FALLBACK = "distilgpt2-random"               # real shapes, random weights, if SmolLM2 cannot load


@st.cache_resource(show_spinner=False, max_entries=64)
def tree_figure(name: str, cfg: lc.LoraConfig):
    model = meta_model(name)
    return viz.module_treemap(anatomy.block_tree(model, cfg), f"{name}: {type(model).__name__}, block 0")


@st.cache_data(show_spinner=False)
def target_options() -> list[str]:
    return ledger_views.target_options([meta_model(GPT2), meta_model(LLAMA)])


@st.cache_data(show_spinner=False)
def block_layers(arch: str, block: int) -> tuple[str, list[str]]:
    """(block prefix, layer names under it) of the layers all-linear wraps in one block."""
    names = matched(arch, lc.LoraConfig(target_modules=ALL_LINEAR))
    return ledger_views.block_layers(meta_model(arch), names, block)


@st.cache_data(show_spinner=False)
def heads_table() -> list[dict]:
    return anatomy.attention_heads()


@st.cache_data(show_spinner=False)
def regex_result(name: str) -> dict:
    return anatomy.regex_vs_all_linear(meta_model(name))


@st.cache_data(show_spinner=False)
def dropout_trace(p: float, train: bool, seed: int) -> dict:
    return anatomy.trace_dropout(p=p, train=train, seed=seed)


@st.cache_resource(show_spinner=False, max_entries=64)
def dropout_figure(p: float, train: bool, seed: int):
    return viz.dropout_masks(dropout_trace(p, train, seed))


@st.cache_data(show_spinner=False)
def bias_table(name: str, cfg: lc.LoraConfig) -> list[dict]:
    return anatomy.bias_mode_ledgers(name, cfg)


@st.cache_data(show_spinner=False)
def added(name: str, cfg: lc.LoraConfig) -> dict:
    return anatomy.added_not_selected(name, cfg)


@st.cache_resource(show_spinner="Loading SmolLM2-135M (pretrained, offline)…")
def init_source() -> tuple[str, str, str]:
    """(model to load, its shipped config, a note): SmolLM2 when it loads here, else random distilgpt2."""
    try:
        base_model(PRETRAINED)
        return PRETRAINED, LLAMA, "pretrained SmolLM2-135M-Instruct"
    except lc.ModelUnavailableError as err:
        return FALLBACK, GPT2, f"distilgpt2 shapes with random weights (SmolLM2 is not available: {err})"


@st.cache_data(show_spinner="Running four of PEFT's inits…")
def gallery(source: str, layer: str, r: int, alpha: float) -> dict:
    model, _ = base_model(source)  # read only: init_gallery works on a deep copy of the layer
    return anatomy.init_gallery(model.get_submodule(layer), r=r, lora_alpha=alpha)


@st.cache_resource(show_spinner=False, max_entries=32)
def gallery_figures(source: str, layer: str, r: int, alpha: float):
    g = gallery(source, layer, r, alpha)
    return viz.init_gallery_chart(g), viz.pissa_spectrum(g)


@st.cache_data(show_spinner=False)
def notations(in_features: int, out_features: int, r: int, alpha: float) -> dict:
    return anatomy.compare_notations(in_features, out_features, r, alpha)


st.title("Anatomy: targets, dropout, bias, init")
st.markdown("A LoRA layer is the frozen layer plus a side branch: `h = W x + (α/r)·B A dropout(x)`. "
            "This page opens it up. It shows which layers get a branch, which tensor the dropout "
            "zeroes, what `bias` adds to the count, and where each init starts.")

# --- 1. targets ---------------------------------------------------------------------------------------
st.header("1. Which layers get an adapter")
c1, c2, c3, c4 = st.columns([3, 2, 1, 1])
picked = c1.multiselect("target_modules", target_options(), default=["c_attn", "q_proj", "v_proj"],
                        help="PEFT's defaults: c_attn for GPT-2, q_proj and v_proj for Llama.")
regex = c2.text_input("…or a regex over full module names (used when set)", placeholder=r".*\.(c_fc|up_proj)")
r = c3.select_slider("r", options=[1, 2, 4, 8, 16, 32, 64], value=8)
alpha = c4.number_input("α", min_value=0.0, value=16.0, step=1.0)
targets, _ = ledger_views.resolve_targets(picked, regex)
state = last_good("anatomy", lambda: lc.LoraConfig(r=r, lora_alpha=alpha, target_modules=targets))
if state is None:
    st.stop()
cfg = state
r, alpha = cfg.r, cfg.lora_alpha  # the rest of the page follows the last valid settings, not a rejected input

heads = {row["model"]: row for row in heads_table()}
smol = heads[LLAMA]
left, right = st.columns(2)
for col, name, note in ((left, GPT2, "GPT-2 fuses q, k and v into one Conv1D, `attn.c_attn`, and names its MLP "
                         "`c_fc` / `c_proj`. Conv1D stores its weight as (in, out)."),
                        (right, LLAMA, "SmolLM2 (Llama architecture) keeps `q_proj`, `k_proj`, `v_proj`, `o_proj` "
                         f"apart. Its k and v are narrower ({smol['k_proj, v_proj out']} outputs against q's "
                         f"{smol['q_proj out']}): {smol['key/value heads']} key/value heads serve "
                         f"{smol['query heads']} query heads, grouped-query attention. It gates its MLP: "
                         "`gate_proj`, `up_proj`, `down_proj`, all nn.Linear.")):
    hits = matched(name, cfg)
    col.plotly_chart(tree_figure(name, cfg), width="stretch")
    col.caption(f"{note} Orange = wrapped. In the whole model this choice wraps **{len(hits)}** modules.")
with_gqa = [m for m, row in heads.items() if row["grouped-query attention"]]
without = [m for m, row in heads.items() if not row["grouped-query attention"]]
st.markdown(f"Grouped-query attention is a choice each model makes, not a Llama trait. In the shipped configs, "
            f"{', '.join(with_gqa)} use it; {', '.join(without)} {'does' if len(without) == 1 else 'do'} not: there "
            "k_proj and v_proj are as wide as q_proj, which changes what LoRA on k and v costs.")
st.table(heads_table())

# --- 2. seed 001's regex ------------------------------------------------------------------------------
st.header("2. A regex over `print(model)` is not a layer finder")
st.markdown(f"One seed document collects \"all linear layers\" with `re.findall(r'{anatomy.SEED_REGEX}', "
            "str(model))`. Here is that regex run on each model's printout, beside what "
            "`target_modules='all-linear'` actually wraps (every Linear and Conv1D except the output layer).")
g1, g2 = st.columns(2)
for col, name in ((g1, GPT2), (g2, LLAMA)):
    res = regex_result(name)
    col.markdown(f"**{name}**: the regex finds")
    col.code(repr(res["regex"]), language=None, wrap_lines=True)
    tied = "tied to the token embedding" if res["output_tied_to_embedding"] else "not tied"
    col.markdown(f"`all-linear` wraps {res['all_linear_modules']} modules and leaves out the output layer "
                 f"`{res['excluded_output_layer']}` ({tied}):")
    col.dataframe([{"module": k, "type": t, "count": n} for k, (t, n) in res["all_linear"].items()],
                  hide_index=True, width="stretch")
st.caption("On GPT-2 the projections print as `Conv1D(...)`, so the regex misses all of them and returns the one "
           "layer all-linear excludes. On Llama it finds the projections but also adds `lm_head`, the "
           "output layer PEFT leaves out.")

# --- 3. dropout ---------------------------------------------------------------------------------------
st.header("3. What lora_dropout zeroes")
d1, d2, d3 = st.columns(3)
p = d1.slider("lora_dropout p", 0.0, 0.9, 0.1, 0.05)
train = d2.radio("mode", ["train", "eval"], horizontal=True) == "train"
seed = d3.number_input("seed", min_value=0, value=0, step=1)
trace = dropout_trace(p, train, int(seed))
k = st.columns(6)
k[0].metric("zeros in x → W", f"{trace['base_input_zero_fraction']:.2%}", help="input of the frozen layer")
k[1].metric("zeros in dropout(x) → A", f"{trace['branch_input_zero_fraction']:.2%}", help="input of lora_A")
k[2].metric("zeros in A", f"{trace['A_zero_fraction']:.2%}")
k[3].metric("zeros in B", f"{trace['B_zero_fraction']:.2%}")
k[4].metric("A or B changed", "yes" if trace["A_changed"] or trace["B_changed"] else "no")
k[5].metric("survivors scaled by", f"{trace['kept_scale']:.4f}", help="1/(1−p) in train mode, 1 in eval")
st.plotly_chart(dropout_figure(p, train, int(seed)), width="stretch")
st.caption(f"Forward hooks on one LoRA layer ({trace['in_features']} inputs, r = {trace['r']}, "
           f"{trace['tokens']} tokens). Dropout acts on the copy of x that enters the branch. The frozen path "
           "sees x untouched, A and B keep every entry, and in eval mode nothing is dropped.")

# --- 4. bias, and what is added -----------------------------------------------------------------------
st.header("4. What `bias` adds, and what LoRA adds")
name = st.radio("model", [GPT2, LLAMA], horizontal=True)
tables = last_good(f"anatomy:bias:{name}", lambda: (bias_table(name, cfg), added(name, cfg)))
if tables is not None:
    rows, info = tables
    counts = {c: st.column_config.NumberColumn(format="localized") for c in ("trainable", "extra trainable",
                                                                             "all params")}
    st.dataframe(rows, hide_index=True, width="stretch",
                 column_config={**counts, "trainable%": st.column_config.NumberColumn(format="%.4f")})
    st.caption("'all' trains every bias in the model, LayerNorm's included; 'lora_only' trains only the biases "
               "of the wrapped layers. Llama's layers have no biases, so there all three modes agree.")
    a = st.columns(4)
    a[0].metric("base parameters", f"{info['base_total']:,}")
    a[1].metric("of them still trainable", f"{info['base_trainable']:,}", help="biases only, and only with bias≠none")
    a[2].metric("new LoRA parameters", f"{info['lora']:,}")
    a[3].metric("trainable", f"{info['trainable']:,}")
    st.markdown("LoRA does not pick out a subset of the parameters that matter. It freezes every old weight and "
                "adds new ones: each trainable parameter above is a fresh `lora_A`/`lora_B` entry (plus "
                "`modules_to_save` copies and, if asked, biases).")

# --- 5. init -------------------------------------------------------------------------------------------
st.header("5. Where each init starts")
source, arch, note = init_source()
i1, i2 = st.columns(2)
block = i1.slider("block", 0, model_facts(arch)["last_layer"], 0)
prefix, leaves = block_layers(arch, block)
leaf = i2.selectbox("layer", leaves)
result = last_good("anatomy:init", lambda: gallery(source, prefix + leaf, r, alpha))
if result is not None:
    chart, spectrum = gallery_figures(source, prefix + leaf, r, alpha)
    st.caption(f"Weight: `{prefix + leaf}` of {note}, shape {result['shape'][0]}×{result['shape'][1]}.")
    st.dataframe([{"init_lora_weights": row["init"], "‖A‖": row["A_norm"], "‖B‖": row["B_norm"],
                   "‖ΔW‖ at step 0": row["delta_norm"], "max |Δ output|": row["max_abs_output_change"],
                   "‖W now‖ / ‖W‖": f"{row['base_weight_norm']:.4g} / {row['W_norm']:.4g}",
                   "max |(W now + ΔW) − W|": row["max_abs_reconstruction_error"]} for row in result["rows"]],
                 hide_index=True, width="stretch")
    s1, s2 = st.columns(2)
    s1.plotly_chart(chart, width="stretch")
    s2.plotly_chart(spectrum, width="stretch")
    st.caption("Where A starts: the LoRA paper's text says a random Gaussian, but its reference code (loralib's "
               "`reset_parameters`) draws A Kaiming-uniform with a = √5, nn.Linear's default, and PEFT's `True` "
               "follows that code. PEFT's `gaussian` matches the paper's wording (a normal with std 1/r). "
               "Either way B = 0.")
    st.caption("True and gaussian start with B = 0: ΔW = 0 and the output is the base's exactly. False makes both "
               "factors random, so the model changes before any training. PiSSA puts W's top r singular "
               "directions into B·A and rewrites the frozen weight to the residual, so ΔW is large, the output "
               "is unchanged up to rounding, and W now + ΔW gives back W. The last column is how far the "
               "weight the layer effectively applies, W now + ΔW, is from the original W. OLoRA does the same "
               "with a QR instead of an SVD: B gets Q's first r (orthonormal) columns, A gets R's first r rows, "
               "and W becomes W − (α/r)·B·A. On GPT-2's Conv1D PEFT 0.21 takes that QR of the stored (in, out) "
               "weight, so its factors come out transposed; LoRA Lab takes it of W as (out, in).")

# --- 6. notation ---------------------------------------------------------------------------------------
st.header("6. Two ways to write it")
fused = ledger(GPT2, lc.LoraConfig(r=r, target_modules=["c_attn"])).rows[0]
n = notations(fused.in_features, fused.out_features, r, alpha)
n1, n2 = st.columns(2)
n1.markdown("**Seed 003:** `W(x) + A @ B @ x`")
n1.markdown(f"With PEFT's shapes on c_attn, A is {n['A_shape']} and B is {n['B_shape']}, so `A @ B @ x` "
            "cannot even be evaluated:")
n1.code(n["literal_error"] or "no error: the shapes happen to line up here", language=None, wrap_lines=True)
n1.markdown(f"With the letters swapped it runs, but misses the scale: the real branch is "
            f"**{n['branch_over_unscaled']:.4f}×** `B @ A @ x`.")
n2.markdown("**PEFT:** `W x + (α/r)·B A x`, B zero at the start")
n2.markdown(f"A {n['A_shape']} maps x {n['x_shape']} down to r numbers; B {n['B_shape']} maps them back up. "
            f"ΔW = (α/r)·B A has W's shape {n['delta_shape']}, and α/r = {n['scaling']:g}.")
n2.code(f"max |lora_branch(x) − (α/r)·B(A x)| = {n['peft_max_abs_diff']:.3g}", language=None)
st.caption("B·A approximates the *update* ΔW, not W. W itself stays frozen and whole (section 4 counts it).")
