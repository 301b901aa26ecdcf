"""Parameters: the ledger. What LoRA adds for a model, a rank and a set of targets, checked against PEFT.

Every number comes from lora_core's ledger (built on the meta device, so even a 7B config counts in
milliseconds); the "Verify with PEFT" button asks PEFT itself for the same count on the same shapes.
"""

import pandas as pd
import streamlit as st

import lora_core as lc
from lora_core import viz
from lora_core.teach import anatomy, ledger_views, peft_reference
from pages.common import ALL_LINEAR, last_good, ledger, matched, model_facts


@st.cache_resource(show_spinner=False, max_entries=32)
def sweep_figure(name: str, sets: tuple[tuple[str, lc.LoraConfig], ...]):
    """The r-sweep chart; it depends on neither r nor α, so moving r reuses it (read-only)."""
    points = anatomy.rank_sweep(name, dict(sets), ledger_views.RANKS)
    return viz.rank_sweep_chart(points, highlight="your choice")


@st.cache_resource(show_spinner=False)
def adapter_figure(in_features: int, out_features: int, r: int):
    return viz.weight_vs_adapter(in_features, out_features, r)


@st.cache_data(show_spinner="Building PEFT's model on the meta device…")
def peft_count(name: str, cfg: lc.LoraConfig) -> tuple[int, int]:
    return peft_reference.peft_reference_count(name, cfg)


@st.cache_data(show_spinner=False)
def seed_000() -> tuple[dict, dict]:
    return ledger_views.seed_000_claim(), ledger_views.seed_000_shapes()


st.title("Parameters: the ledger")
st.markdown(
    "A LoRA pair on a layer with `in` inputs and `out` outputs adds **A** (r × in) and **B** (out × r): "
    "r·(in + out) numbers, against in·out in the frozen weight. The ledger below adds this up over every "
    "module your choice wraps, the way PEFT's `print_trainable_parameters` does. Its total counts the "
    "adapter too, and a weight tied between two modules only once."
)

# --- inputs -----------------------------------------------------------------------------------------
names = lc.models.available_configs()
c1, c2, c3, c4 = st.columns([2, 2, 1, 1])
model = c1.selectbox("model (shapes only, no weights)", names, index=names.index("distilgpt2"))
facts = model_facts(model)
r = c2.select_slider("rank r", options=ledger_views.RANKS, value=8)
alpha = c3.number_input("lora_alpha α", min_value=0.0, value=16.0, step=1.0)
bias = c4.selectbox("bias", ["none", "all", "lora_only"])

t1, t2 = st.columns([3, 2])
picked = t1.multiselect("target_modules", [ALL_LINEAR, *facts["candidates"]],
                        default=facts["default_targets"], key=f"targets:{model}",
                        help="A name matches every module whose full name ends with it, e.g. c_proj hits "
                             "attn.c_proj and mlp.c_proj.")
regex = t2.text_input("…or a regex over full module names (used when set)", key=f"regex:{model}",
                      placeholder=r".*\.attn\.c_proj")
l1, l2 = st.columns(2)
layers = l1.multiselect("layers_to_transform (empty = every layer)", list(range(facts["layers"])),
                        key=f"layers:{model}", help="Applies to a list of names, not to a regex (as in PEFT).")
saved = l2.multiselect("modules_to_save (trained in full, as a copy)", facts["candidates"], key=f"saved:{model}")

targets, note = ledger_views.resolve_targets(picked, regex)
if note:
    st.caption(note)


def build() -> tuple[str, lc.LoraConfig, lc.Ledger, list[str]]:
    cfg = lc.LoraConfig(r=r, lora_alpha=alpha, target_modules=targets, bias=bias,
                        layers_to_transform=layers or None, modules_to_save=saved or None)
    return model, cfg, ledger(model, cfg), matched(model, cfg)


state = last_good("parameters", build)
if state is None:
    st.stop()
model, cfg, book, wrapped = state

# --- what matched ------------------------------------------------------------------------------------
st.markdown(f"**`target_modules={cfg.target_modules!r}` wraps {len(wrapped)} modules of `{model}`** "
            f"(scaling α/r = {cfg.scaling:g}).")
with st.expander(f"The {len(wrapped)} matched modules"):
    st.code("\n".join(wrapped), language=None)

# --- the ledger ---------------------------------------------------------------------------------------
st.header("The ledger")
st.dataframe(pd.DataFrame(ledger_views.ledger_table(book)), hide_index=True, width="stretch",
             column_config={c: st.column_config.NumberColumn(format="localized")
                            for c in ("count", "r·(in+out)", "LoRA params")})
m = st.columns(5)
m[0].metric("LoRA factors", f"{book.lora_params:,}", help="Σ count · r·(in+out)")
m[1].metric("other trainable", f"{book.other_trainable:,}", help="biases (bias='all'/'lora_only') and "
            "modules_to_save copies")
m[2].metric("trainable", f"{book.trainable:,}")
m[3].metric("all params", f"{book.total:,}", help=f"the base's {book.base_total:,} plus everything LoRA added")
m[4].metric("trainable %", f"{book.trainable_percent:.4f}")
st.caption("PEFT's line for the same configuration, computed by lora_core:")
st.code(book.peft_line, language=None)

# --- verify with PEFT -----------------------------------------------------------------------------------
if st.button("Verify with PEFT", help="Builds the same model on the meta device and calls peft.get_peft_model"):
    check = last_good("parameters:peft", lambda: (model, cfg, peft_count(model, cfg)))
    st.session_state["parameters:peft_check"] = check
check = st.session_state.get("parameters:peft_check")
if check is not None and check[:2] == (model, cfg):
    theirs = lc.peft_line(*check[2])
    v1, v2 = st.columns(2)
    v1.caption("lora_core")
    v1.code(book.peft_line, language=None)
    v2.caption("PEFT `get_peft_model(...).get_nb_trainable_parameters()`")
    v2.code(theirs, language=None)
    if theirs == book.peft_line:
        st.success("Identical: same trainable count, same total.")
    else:
        st.error("lora_core and PEFT disagree on this configuration.")

# --- charts ---------------------------------------------------------------------------------------------
st.header("How the count grows with r")
# r and α are normalised away so that moving r keeps this (slow to draw) figure cached.
st.plotly_chart(sweep_figure(model, ledger_views.sweep_configs(cfg, facts["model_type"])), width="stretch")
st.caption(f"Your r = {cfg.r} sits on the 'your choice' line: {book.trainable:,} trainable, "
           f"{book.trainable_percent:.4f}% of {book.total:,}. Hover for exact numbers.")

# --- seed 000 --------------------------------------------------------------------------------------------
st.header("A worked example, and a wrong one")
claim, shapes = seed_000()
square, fused = shapes["square"], shapes["fused"]
st.markdown(
    f"A seed document counts LoRA on a square {square.in_features}×{square.out_features} matrix at "
    f"r = {square.r}: {square.r}·({square.in_features}+{square.out_features}) = **{square.lora_per_module:,}**, "
    f"{shapes['square_percent']:.2f}% of its {square.weight_params:,} weights. That is right, and "
    f"distilgpt2's attention output `attn.c_proj` is such a matrix. But `c_attn` is not square: it maps "
    f"{fused.in_features} → {fused.out_features} (q, k and v side by side), so it costs "
    f"**{fused.lora_per_module:,}** per block."
)
w1, w2 = st.columns(2)
w1.plotly_chart(adapter_figure(square.in_features, square.out_features, square.r), width="stretch")
w2.plotly_chart(adapter_figure(fused.in_features, fused.out_features, fused.r), width="stretch")

st.markdown(f"The same document then says r = 8 on `c_attn` trains about **{claim['claimed']:,}** parameters, "
            f"{claim['claimed_percent_text']} of the model. The ledger says:")
k = st.columns(4)
k[0].metric("claimed", f"{claim['claimed']:,}", help=f"{claim['claimed_percent_of_total']:.4f}% of all params")
k[1].metric("computed by the ledger", f"{claim['trainable']:,}",
            delta=f"×{claim['ratio']:g} the claim", delta_color="off")
k[2].metric("per c_attn", f"{claim['per_module']:,}", help=f"in all {claim['modules']} blocks")
k[3].metric("trainable %", f"{claim['trainable_percent']:.4f}")
lines = [f"- {claim['modules']} blocks × {claim['per_module']:,} = **{claim['trainable']:,}**: one c_attn per block, "
         f"every block."]
if claim["reproduced_with_first_layers"] is not None:
    lines.append(f"- The claimed {claim['claimed']:,} is {claim['implied_modules']:g} × {claim['per_module']:,}: "
                 f"c_attn in only {claim['implied_modules']:g} of the {claim['modules']} blocks "
                 f"(`layers_to_transform` = the first {claim['implied_modules']:g} gives "
                 f"{claim['reproduced_with_first_layers']:,}). Nothing in the seed's config does that.")
else:
    lines.append(f"- The claimed {claim['claimed']:,} is {claim['implied_modules']:.2f} c_attn modules' worth: "
                 "no whole number of blocks gives it.")
lines.append(f"- PEFT's denominator is {claim['total']:,}: the base's {claim['base_total']:,} **plus** the "
             f"adapter, so the share is {claim['trainable_percent']:.4f}%, not {claim['claimed_percent_text']}.")
st.markdown("\n".join(lines))
