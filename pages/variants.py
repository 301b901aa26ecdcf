"""Variants: DoRA, LoRA+, LoRA-FA, OLoRA and PiSSA measured on SmolLM2-135M-Instruct; a verdict on DoRA's Figure 2.

Everything comes from lora_core.research.variants: `shipped()` (the study shipped in results/variants/, with its
provenance), `verdict()` (the rule and its outcome), `PAPERS` (the papers' own words and numbers),
`bench_variant_rows()` (the benchmark's DoRA rows, when it has them) and `live_check()` (a short live run of one
variant). Figures and tables are lora_core.viz.variants.
"""

import streamlit as st

import pages  # noqa: F401  (a page opened by its own link still runs through app.py)
from lora_core import viz
from lora_core.research import variants, verdicts
from lora_core.research.variants_runs import LABELS
from lora_core.viz import variants as figures
from pages.common import as_text, base_model, last_good, model_picker, show_unexpected

LIVE = "variants:live"  # this session's last live check
BOXES = {verdicts.HELD: st.success, verdicts.SMALLER: st.warning, verdicts.NOT_HELD: st.error}

st.title("Variants: DoRA, LoRA+, LoRA-FA, OLoRA")
st.markdown(
    "Five changes to plain LoRA, each trained here on the same task, data order, seed and number of steps as the "
    "research replays (the pretrained **SmolLM2-135M-Instruct** on the E2E-style data-to-text task, LoRA on q and v "
    "at r = 8, α = 16, lr 2e-3; full fine-tuning at 5e-5):\n"
    "- **DoRA** splits each weight row into a magnitude and a direction and trains the magnitude on its own;\n"
    "- **LoRA+** gives B a learning rate 16 times A's;\n"
    "- **LoRA-FA** freezes A, so no layer keeps its input for A's gradient;\n"
    "- **OLoRA** and **PiSSA** start A and B from W's QR or SVD and train against the residual W − scale·B·A.")
st.table(figures.paper_rows(list(variants.PAPERS)), hide_index=True)
with st.expander("Where each quoted number was read"):
    for paper in variants.PAPERS:
        st.caption(f"**{paper['method']}** ({paper['source']}): {as_text(paper['checked'])}")


def show_verdict(result: dict) -> None:
    v = variants.verdict(result)
    BOXES[v["verdict"]](v["verdict"])
    st.markdown(f"**Ours:** {as_text(v['ours'])}")
    st.caption(f"**Rule:** {as_text(v['rule'])}")


def draw_study(result: dict) -> None:
    res, settings = result["results"], result["settings"]
    st.caption(f"The shipped **{result['scale']}** study: {settings['steps']} steps of batch {settings['batch_size']} "
               f"per run, checkpoints every {settings['checkpoint_every']} steps, held-out loss on "
               f"{settings['test_loss_pairs']} test pairs. How it was made is at the bottom of the page.")

    st.header("1. Magnitude against direction (DoRA's Figure 2)")
    part = res["decomposition"]
    st.markdown(
        "For every adapted matrix at every checkpoint, as the model computes with it (LoRA and DoRA merged): "
        "**ΔM** is the mean change of a row's norm against the pretrained W, **ΔD** the mean of 1 − cos between "
        "each row and its start (rows of torch's (out, in) weight are the paper's columns). The paper found a "
        "**negative** correlation between them for full fine-tuning and DoRA, a **positive** one for LoRA.")
    proj = st.radio("matrices", part["projections"], horizontal=True, key="variants:proj",
                    help="The paper's Figure 2 shows the query matrices; its Figure 7 the value matrices.")
    st.plotly_chart(figures.decomposition_scatter(part, proj), width="stretch")
    st.dataframe(figures.decomposition_rows(part, variants.PAPERS[0]), hide_index=True)
    st.markdown("Within one checkpoint (training time held fixed), the correlation across layers:")
    st.dataframe(figures.checkpoint_rows(part), hide_index=True)
    st.subheader("Verdict")
    show_verdict(result)

    st.header("2. LoRA+ and LoRA-FA against plain LoRA")
    opt = res["optimizers"]
    st.markdown(
        f"Same steps, data and seed. LoRA+ runs twice at ratio 16: with A at LoRA's rate (B 16× faster) and with B "
        f"at LoRA's rate (A 16× slower). LoRA-FA runs at LoRA's rate and at {settings['lorafa_lrs'][-1]:g}, the rate "
        "of PEFT's LoRA-FA example (Llama-3-8B, which says LoRA-FA may converge slower and needs an lr search). "
        "LoRA's spread over seeds is the yardstick for a difference.")
    st.plotly_chart(figures.loss_curves([opt["lora"], *opt["runs"]], "LoRA+, LoRA-FA and LoRA: the same budget"),
                    width="stretch")
    st.dataframe(figures.comparison_rows(opt, res["lora_seeds"]), hide_index=True)

    st.header("3. OLoRA and PiSSA against the default init")
    init = res["inits"]
    st.markdown("At step 0 every init must leave the model where the base was: the default because B = 0, OLoRA and "
                "PiSSA because they subtract what they take from W (the residual W_res = W − scale·B·A).")
    st.dataframe(figures.step0_rows(init["step0"]), hide_index=True)
    st.plotly_chart(figures.loss_curves([init["lora"], *init["runs"]], "OLoRA, PiSSA and the default init"),
                    width="stretch")
    st.dataframe(figures.comparison_rows(init, res["lora_seeds"]), hide_index=True)

    st.header("4. What each variant costs")
    st.caption(as_text(res["cost"]["source"]) + f"; batch {res['cost']['batch_size']} × {res['cost']['seq_len']} "
               f"tokens, {settings['threads']} thread(s).")
    st.plotly_chart(figures.cost_bars(res["cost"]), width="stretch")
    st.dataframe(figures.cost_rows(res["cost"]), hide_index=True)
    st.caption("OLoRA, PiSSA and LoRA+ compute exactly what LoRA computes (only the starting factors or the "
               "learning rates differ), so how far their step time sits from 1.00× is the timing noise of this run. "
               "LoRA-FA keeps no copy of each adapted layer's input for A's gradient; DoRA keeps more.")


def draw_bench() -> None:
    bench = last_good("variants:bench", variants.bench_variant_rows)
    if bench is None:
        st.caption("The benchmark's own DoRA rows appear here once results/bench/cpu_variants.json holds them "
                   "(`python -m lora_core.bench` with DoRA among its adapters).")
        return
    st.markdown(f"The benchmark's own rows for DoRA and two adapters, on its model ({bench['model']}, "
                f"{bench['device']}; made by `{bench['command']}`):")
    st.dataframe(figures.bench_rows(bench), hide_index=True)


# --- the shipped study ---------------------------------------------------------------------------------------------
result = last_good("variants:shipped", variants.shipped)
if result is None:
    st.info(f"No shipped study yet. Produce it from the repository root with `{variants.study_command()}` (the full "
            f"version: {variants.planned_runs(variants.FULL)} fine-tunes of {variants.FULL.steps} steps on SmolLM2 "
            "and the cost measurement, tens of minutes on a CPU; add `--device cuda` on a GPU), or check the code with "
            f"`{variants.study_command(quick=True)}` ({variants.QUICK.steps} steps per fine-tune). The live part below "
            "works without it.", icon=":material/info:")
else:
    try:
        draw_study(result)
    except Exception as err:  # a bug in drawing the study: the live part below still draws
        show_unexpected(err, "the Variants study")
draw_bench()
if result is not None:
    st.subheader("How this was made")
    st.dataframe(viz.provenance_rows(result), hide_index=True)


# --- live ----------------------------------------------------------------------------------------------------------
@st.cache_data(show_spinner=False, max_entries=32)
def live_run(name: str, method: str, steps: int) -> dict:
    base, tokenizer = base_model(name)
    return variants.live_check(base, tokenizer, method, steps)


st.header("Try a variant live")
st.markdown("A few steps of batch 4 on the task, here and now: first whether the variant starts exactly at the base "
            "model, then ΔM and ΔD of every adapted matrix after each step. A handful of steps is far too few for "
            "the paper's pattern; watch how both numbers start to grow.")
c1, c2, c3 = st.columns(3)
name = model_picker("model", where=c1)
method = c2.selectbox("variant", variants.LIVE_METHODS, format_func=LABELS.get, key="variants:method")
steps = c3.slider("steps", 1, 8, 3, key="variants:steps")
if st.button("Run it", key="variants:run", icon=":material/play_arrow:"):
    with st.spinner(f"Training {LABELS[method]} for {steps} steps…"):
        checked = last_good("variants:live", lambda: live_run(name, method, int(steps)))
    if checked is not None:
        st.session_state[LIVE] = checked
live = st.session_state.get(LIVE)
if live is not None:
    s0 = live["step0"]
    m = st.columns(4)
    m[0].metric("max |Δ logit| at step 0", f"{s0['max_logit_change']:.1e}",
                help="against the base model on 8 test inputs: 0 up to rounding means it starts where the base was")
    m[1].metric("max |W_res + ΔW − W| at step 0", f"{s0['max_start_error']:.1e}")
    m[2].metric("mean ‖ΔW‖_F at step 0", f"{s0['mean_delta_norm']:.3f}")
    run = live["run"]
    m[3].metric("held-out loss", f"{run['final_loss']:.3f}", f"{run['final_loss'] - run['held_out'][0]['loss']:+.3f}",
                delta_color="inverse", help=f"on 8 test pairs, after {run['steps']} steps")
    st.plotly_chart(figures.live_scatter(live), width="stretch")
    st.caption(f"{live['label']} on {live['matrices']} adapted matrices, lr 2e-3, {run['seconds']:.1f} s.")
