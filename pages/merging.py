"""Merging studio: two adapters trained on two tasks over one frozen base, merged PEFT's eleven ways, and scored.

Every number comes from lora_core.teach.merging_studio (training, held-out scores, merges, the sweep, the mixed batch,
the one-adapter check against PEFT) and lora_core.teach.merging_steps (TIES and DARE step by step). This page collects
the inputs, keeps the studio in the session, and draws with lora_core.viz.
"""

import streamlit as st

import lora_core as lc
from lora_core import viz
from lora_core.config import MAX_LORA_ALPHA
from lora_core.teach import merging_steps, merging_studio
from lora_core.training import run_setup
from lora_core.viz import merging as merging_viz
from lora_core.weighted import COMBINATION_TYPES, PRUNING
from pages.common import (
    as_text,
    base_model,
    guarded_fragment,
    last_good,
    let_go_of_closed_tabs,
    model_picker,
    model_sources,
    session_id,
    settings,
    training_slots,
)

STUDIO, SWEEP, MIXED = "merging:studio", "merging:sweep", "merging:mixed"
TASK_1, TASK_2 = (merging_studio.TASKS[name] for name in merging_studio.ADAPTERS)
X_TITLE, Y_TITLE = f"task 1 ({TASK_1}): held-out loss", f"task 2 ({TASK_2}): held-out loss"
LOSS_FORMAT = {c: st.column_config.NumberColumn(format="%.4f") for c in
               (f"task 1 ({TASK_1}) loss", f"task 2 ({TASK_2}) loss", "mean")}

st.title("Merging studio")
st.markdown("Two LoRA adapters on one frozen base, each trained on its own task: **recsys** learns to recommend "
            "(*\"User likes cooking videos.\"* → *\"I recommend 'Pasta Tutorial'\"*), **e2e** learns to write a "
            "restaurant description from its attributes (an E2E-style data-to-text task). Can one adapter do both? "
            "`lc.add_weighted_adapter` builds a new adapter from the two in any of PEFT's eleven ways; here you "
            "choose the way and the weights, and every model is scored on both tasks' held-out pairs.")


@st.cache_data(show_spinner=False)
def module_names(model_name: str) -> list[str]:
    return lc.candidate_modules(base_model(model_name)[0])


@st.cache_data(show_spinner="Merging one adapter in lora_core and in PEFT…")
def one_adapter(r: int) -> dict:
    return merging_studio.one_adapter_check(r)


# --- 1. train ----------------------------------------------------------------------------------------------------
st.header("1. Two adapters, two tasks, one frozen base")
model_name = model_picker("base model")
st.caption(f"**In use:** {model_sources()[model_name].detail}")
with st.spinner(f"Loading {model_name}…"):
    candidates = module_names(model_name)
limits = settings()
with st.form("merging:train"):
    c1, c2, c3, c4 = st.columns(4)
    steps = c1.number_input("steps per adapter", value=min(20, limits.max_steps), min_value=1,
                            max_value=limits.max_steps)
    ranks = run_setup.rank_choices(limits)
    r = c2.select_slider("r (both adapters)", ranks, value=8 if 8 in ranks else ranks[-1])
    alpha = c3.number_input("lora_alpha", value=16.0, step=1.0, max_value=MAX_LORA_ALPHA)
    lr = c4.number_input("learning rate", value=2e-3, format="%.0e", step=1e-4)
    c1, c2 = st.columns([3, 1])
    targets = c1.multiselect("target_modules (both adapters: every combination type needs the same layers)",
                             candidates, default=run_setup.default_targets(candidates))
    heldout = c2.number_input("held-out pairs scored per task", value=24, min_value=1,
                              max_value=merging_studio.MAX_HELDOUT,
                              help="every score is the mean completion loss over this many held-out pairs")
    start = st.form_submit_button("Train both adapters", type="primary")

slot = f"merging:{session_id()}"  # this session's place in the server's training queue
let_go_of_closed_tabs()
if start:
    plan = merging_studio.StudioPlan(steps=int(steps), r=r, lora_alpha=alpha, lr=lr, target_modules=tuple(targets),
                                     heldout=int(heldout))
    with st.spinner("Copying the base and adding both adapters…"):
        studio = last_good("merging:start",
                           lambda: merging_studio.Studio.start(*base_model(model_name), plan, limits))
    if studio is not None and studio is not st.session_state.get(STUDIO):
        training_slots().release(slot)  # a new studio goes to the back of the queue
        st.session_state[STUDIO] = studio
        for key in (SWEEP, MIXED):
            st.session_state.pop(key, None)

studio: merging_studio.Studio | None = st.session_state.get(STUDIO)
if studio is None:
    st.info("No adapters yet in this session: press **Train both adapters**. Each adapter trains on its own task in "
            "turn, then the base and both adapters are scored on both held-out sets. With SmolLM2 and the defaults "
            "this took about five minutes on a busy 2-core CPU; fewer steps or held-out pairs are quicker.")
else:
    if studio.ready:
        training_slots().release(slot)

    @guarded_fragment("training the two adapters", run_every=None if studio.ready else 1.0)
    def training() -> None:
        let_go_of_closed_tabs()
        was_ready = studio.ready
        place = 0 if was_ready else training_slots().request(slot)
        if not was_ready and place == 0:
            studio.advance(seconds=1.0)
        if place:
            st.warning(f"Waiting for a training slot: you are number {place} in line.")
        view = studio.progress()
        st.progress(view["fraction"], text=view["phase"])
        m = st.columns(4)
        for i, name in enumerate(merging_studio.ADAPTERS):
            losses = view["losses"][name]
            m[2 * i].metric(f"{name}: step", f"{view['steps'][name]} / {studio.plan.steps}")
            m[2 * i + 1].metric(f"{name}: training loss", f"{losses[-1]:.3f}" if losses else "–",
                                help=f"nats per completion token on {merging_studio.TASKS[name]}")
        st.plotly_chart(viz.curves({f"{n} on {merging_studio.TASKS[n]}": view["losses"][n]
                                    for n in merging_studio.ADAPTERS},
                                   "Training loss, each adapter on its own task", "loss (nats/token)"),
                        width="stretch")
        for message in studio.messages:
            st.error(as_text(message))
        if not was_ready and studio.ready:
            training_slots().release(slot)
            st.rerun()  # redraw the merge sections with the scores

    training()

# --- 2. merge ----------------------------------------------------------------------------------------------------
st.header("2. Merge them, and score every model on both tasks")
ready = studio is not None and studio.ready
if not ready:
    st.info("Train the two adapters in section 1 first: the merge needs both.")
else:
    st.markdown("The new adapter is built from the two with `lc.add_weighted_adapter(model, ['recsys', 'e2e'], "
                "[w₁, w₂], ...)`. `linear` adds the factors (cross terms included), `cat` stacks them (exact, rank "
                "r₁+r₂), `svd` keeps the top r directions of w₁ΔW₁ + w₂ΔW₂; `ties`, `dare_*` and `magnitude_prune` "
                "first prune each task vector to the **density** kept (section 3 shows how). A negative weight "
                "subtracts an adapter.")
    c1, c2, c3, c4, c5 = st.columns([2, 2, 2, 2, 1])
    kind = c1.selectbox("combination_type", COMBINATION_TYPES, index=COMBINATION_TYPES.index("linear"))
    w1 = c2.slider("weight of recsys", *merging_studio.WEIGHT_RANGE, value=0.5, step=0.05)
    w2 = c3.slider("weight of e2e", *merging_studio.WEIGHT_RANGE, value=0.5, step=0.05)
    density = c4.slider("density (fraction kept)", 0.0, 1.0, 0.5, 0.05,
                        help=f"used by {', '.join(PRUNING)}; 0 keeps nothing and is refused")
    seed = c5.number_input("seed", value=0, min_value=0, help="draws DARE's masks")
    b1, b2, _ = st.columns([1, 2, 2])
    if b1.button("Merge and score", type="primary"):
        with st.spinner(f"Merging ({kind}) and scoring the merged adapter on both held-out sets…"):
            if last_good("merging:merge", lambda: merging_studio.merge_and_score(
                    studio, kind, [w1, w2], density, int(seed))) is not None:
                st.session_state.pop(MIXED, None)  # its rows ran the previous merge
    if b2.button(f"Sweep: score all {len(COMBINATION_TYPES)} types at these weights",
                 help="a merge and two held-out scores per type: with SmolLM2 on a CPU, a few minutes"):
        bar = st.progress(0.0, text="starting the sweep…")
        result = last_good("merging:sweep", lambda: merging_studio.sweep(
            studio, [w1, w2], density, int(seed),
            on_type=lambda i, k: bar.progress(i / len(COMBINATION_TYPES),
                                              text=f"{k}: merging and scoring ({i + 1} of {len(COMBINATION_TYPES)})")))
        bar.empty()
        if result is not None:
            st.session_state[SWEEP] = result
    view = merging_studio.scores_view(studio)
    sweep = st.session_state.get(SWEEP)
    points = view["points"] + (sweep["points"] if sweep else [])
    left, right = st.columns([3, 2])
    left.plotly_chart(merging_viz.task_losses_figure(points, X_TITLE, Y_TITLE), width="stretch")
    with right:
        st.dataframe(view["rows"], hide_index=True, column_config=LOSS_FORMAT)
        st.caption("Held-out loss: mean cross-entropy per completion token, in nats, on the first "
                   f"{studio.plan.heldout} held-out pairs of each task (lower is better). Each source should win its "
                   "own task; a good merge sits near both, at the lower left.")
        if studio.merged is None:
            st.caption("Press **Merge and score** to add a merged adapter to the table and the figure.")
    if sweep:
        st.subheader("Every combination type at the same weights")
        st.caption(f"Weights {sweep['weights'][0]:g} / {sweep['weights'][1]:g}, density {sweep['density']:g} for the "
                   f"pruning types. Lowest mean loss: **{sweep['best']}**. The purple crosses in the figure above.")
        st.dataframe(sweep["rows"], hide_index=True, column_config=LOSS_FORMAT)

# --- 3. TIES and DARE step by step -------------------------------------------------------------------------------
st.header("3. TIES and DARE, step by step on a small matrix")
st.markdown("Stand-ins for n adapters' ΔW: seeded 6×8 task tensors. **TIES** (arXiv 2306.01708) trims each to its "
            "largest values, elects one sign per entry, and averages only the values that agree with it. **DARE** "
            "(arXiv 2311.03099) drops each entry with probability 1 − p and divides the survivors by p, so the "
            "expected value is unchanged. Every number is `lora_core.combining`'s, equal to PEFT's `merge_utils`.")
c1, c2, c3 = st.columns(3)
n_adapters = c1.slider("adapters", 2, merging_steps.MAX_ADAPTERS, 3)
ties_density = c2.slider("TIES density", 0.0, 1.0, 0.5, 0.05, help="fraction of each task tensor kept by the trim")
steps_seed = c3.number_input("seed of the task tensors", value=0, min_value=0)
walk = last_good("merging:ties", lambda: merging_steps.ties_walkthrough(n_adapters, (6, 8), ties_density,
                                                                         seed=int(steps_seed)))
if walk is not None:
    m = st.columns(4)
    m[0].metric("sign conflicts before the trim", walk["steps"]["elect"]["conflicts_before_trim"])
    m[1].metric("after the trim", walk["steps"]["elect"]["conflicts"])
    m[2].metric("values overruled by the elected sign", walk["steps"]["merge"]["dropped_total"])
    m[3].metric("entries where TIES and the plain sum differ in sign", walk["summary"]["sign_flips_vs_sum"])
    st.plotly_chart(merging_viz.ties_steps_figure(walk), width="stretch")
c1, c2 = st.columns(2)
dare_density = c1.slider("DARE keep probability p", 0.0, 1.0, 0.3, 0.05)
draws = c2.slider("DARE draws averaged", 10, 2000, 200, 10)
drop = last_good("merging:dare", lambda: merging_steps.dare_walkthrough((6, 8), dare_density, int(steps_seed), draws))
if drop is not None:
    st.plotly_chart(merging_viz.dare_figure(drop), width="stretch")

# --- 4. one adapter at weight 1.0 --------------------------------------------------------------------------------
st.header("4. One adapter at weight 1.0: does the merge give it back?")
st.markdown("Merging a single adapter with weight 1.0 should change nothing. Here one adapter on a tiny GPT-2 is "
            "merged that way by `lc.add_weighted_adapter` and by PEFT's `add_weighted_adapter`, on the same weights, "
            "once without rsLoRA and once with it.")
r_check = st.select_slider("r of the adapter", [1, 2, 4, 8, 16, 32, 64], value=4)
check = last_good("merging:one", lambda: one_adapter(r_check))
if check is not None:
    ours, theirs = check["ours"][True], check["peft"].get(True)
    m = st.columns(4)
    ratio, dlogit = merging_studio.RATIO, merging_studio.DLOGIT
    m[0].metric(f"lora_core, rsLoRA: {ratio}", f"{ours[ratio]:.4f}")
    m[1].metric(f"lora_core, rsLoRA: {dlogit}", f"{ours[dlogit]:.1e}")
    if theirs is not None:
        m[2].metric(f"PEFT, rsLoRA: {ratio}", f"{theirs[ratio]:.4f}", help=f"√r = {check['sqrt_r']:.4g}")
        m[3].metric(f"PEFT, rsLoRA: {dlogit}", f"{theirs[dlogit]:.3g}")
    else:
        st.caption("PEFT is not installed here, so only lora_core's side is shown.")
    left, right = st.columns(2)
    left.plotly_chart(merging_viz.one_adapter_bars(check["rows"], check["sqrt_r"]), width="stretch")
    right.dataframe(check["rows"], hide_index=True)
    st.markdown(f"**Why they differ.** PEFT's merged adapter gets r' = r and lora_alpha = r', so its scaling should "
                "be r'/r' = 1, but its config is a copy of the first source's, `use_rslora` included. With rsLoRA "
                f"the scaling is α/√r = r/√r = √r, so the merged ΔW comes out √r = {check['sqrt_r']:.4g} times the "
                "source's (peft issue 3761). lora_core builds the new adapter's config with `use_rslora=False` and "
                "lora_alpha = r', scaling exactly 1, so one adapter at weight 1.0 comes back unchanged. Without "
                "rsLoRA the two agree.")

# --- 5. a mixed batch --------------------------------------------------------------------------------------------
st.header("5. One batch, four models: a mixed batch")
if not ready or studio.merged is None:
    st.info("Merge the two adapters in section 2 first: the batch has a row for the merged adapter.")
else:
    st.markdown("`with lc.mixed_batch(model, names):` runs each example of one batch through its own adapter "
                "(PEFT's `adapter_names=`; `__base__` is the base alone). Rows recsys, e2e, merged and base each get "
                "both prompts; greedy generation, then each row is checked against that model run on its own.")
    p1 = st.text_input(f"prompt 1 (a held-out {TASK_1} prompt)", value=studio.heldout("recsys")[0][0])
    p2 = st.text_input(f"prompt 2 (a held-out {TASK_2} prompt)", value=studio.heldout("e2e")[0][0])
    new_tokens = st.slider("new tokens", 4, 48, 16)
    if st.button("Run one mixed batch"):
        with st.spinner("Generating the mixed batch, then each model on its own…"):
            st.session_state[MIXED] = last_good("merging:mixed", lambda: merging_studio.mixed_generations(
                studio, [p1, p2], new_tokens))
    mixed = st.session_state.get(MIXED)
    if mixed:
        m = st.columns(2)
        m[0].metric("rows equal to their own single run", f"{mixed['same']} of {mixed['total']}",
                    help="the same greedy text from the mixed batch as from that model alone")
        m[1].metric("max |Δlogit|, mixed batch vs single runs", f"{mixed['max_abs_dlogit']:.1e}",
                    help="one forward over the prompts, every real token of every row")
        st.dataframe(mixed["rows"], hide_index=True)
