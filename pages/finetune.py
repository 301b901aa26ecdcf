"""Live fine-tuning: train a real model with LoRA, watch it learn, then merge, compare and export.

The run is set up, checked and read by lora_core.training.run_setup; this page collects the form,
keeps the run in the session, and draws.
"""

import streamlit as st

import lora_core as lc
from lora_core import viz
from lora_core.config import MAX_LORA_ALPHA
from lora_core.serve import room
from lora_core.serve.board import MAX_NICKNAME
from lora_core.serve.runs import RELOAD_GRACE_SECONDS
from lora_core.teach import adapter_views, low_rank, merge_check
from lora_core.training import run_setup
from lora_core.training.live import LiveRun
from pages.common import (
    ALL_LINEAR,
    RUN,
    RUN_ID,
    SHARED,
    TRAINED_ADAPTERS,
    as_text,
    base_model,
    base_variant,
    guarded_fragment,
    last_good,
    let_go_of_closed_tabs,
    model_picker,
    model_sources,
    room_board,
    room_sweeps,
    run_registry,
    session_alive,
    session_id,
    settings,
    sweep_key,
    training_slots,
    upload_widget,
)

st.title("Live fine-tuning")
st.markdown("Pick a configuration, press **Start**, and watch a real pretrained model learn the "
            "recommendation task: *\"User likes cooking videos.\"* → *\"I recommend 'Pasta Tutorial'\"*. "
            "Only the completion tokens are learned (the prompt and the padding are masked out of the loss). "
            "Held-out prompts ask about interests that never occur in training.")


@st.cache_data(show_spinner=False)
def module_names(model_name: str) -> list[str]:
    model, _ = base_model(model_name)
    return lc.candidate_modules(model)


# --- 1. configuration ------------------------------------------------------------------------------
st.header("1. Configure")
model_name = model_picker("model")
sources = model_sources()
st.caption(f"**In use:** {sources[model_name].detail}")
if not sources["distilgpt2"].available:
    st.caption("distilgpt2 is not available offline here, so the default is SmolLM2-135M-Instruct, a real "
               "pretrained model shipped with the app. " + sources["distilgpt2"].detail.split(". To get it")[0] + ".")

with st.spinner(f"Loading {model_name}…"):
    candidates = module_names(model_name)

limits = settings()  # every limited input's maximum is the server's own limit
ranks = run_setup.rank_choices(limits)
# A teacher's sweep (Room page): this session's cell of it becomes the form's defaults.
preset = room.form_preset(last_good("finetune:sweep", lambda: room_sweeps().assign(sweep_key())), candidates, ranks)
if preset:
    st.info(as_text(preset["note"]), icon=":material/grid_on:")
with st.form("config"):
    c1, c2, c3, c4 = st.columns(4)
    r = c1.select_slider("r", ranks, value=preset.get("r", 8 if 8 in ranks else ranks[-1]))
    alpha = c2.number_input("lora_alpha", value=preset.get("lora_alpha", 16.0), step=1.0, max_value=MAX_LORA_ALPHA)
    dropout = c3.number_input("lora_dropout", value=0.0, step=0.05, format="%.2f")
    init = c4.selectbox("init_lora_weights", run_setup.INIT_CHOICES,
                        index=run_setup.INIT_CHOICES.index(preset.get("init_lora_weights", True)),
                        format_func=lambda v: {True: "True (Kaiming A, zero B)",
                                               False: "False (both random)"}.get(v, v))
    c1, c2, c3, c4 = st.columns(4)
    targets = c1.multiselect("target_modules", [*candidates, ALL_LINEAR],
                             default=preset.get("target_modules", run_setup.default_targets(candidates)))
    rslora = c2.toggle("use_rslora (α/√r)", value=preset.get("use_rslora", False))
    lr = c3.number_input("learning rate", value=preset.get("lr", 2e-3), format="%.0e", step=1e-4)
    steps = c4.number_input("steps", value=min(40, limits.max_steps), min_value=1, max_value=limits.max_steps,
                            step=10)
    c1, c2, c3, c4 = st.columns(4)
    batch = c1.number_input("batch size", value=min(8, limits.max_batch_size), min_value=1,
                            max_value=limits.max_batch_size)
    seq_len = c2.number_input("sequence length", value=min(64, limits.max_seq_len), min_value=8,
                              max_value=limits.max_seq_len, step=8)
    data_name = c3.selectbox("data", run_setup.DATA_CHOICES)
    precision = c1.selectbox("base precision", run_setup.PRECISIONS,
                             index=run_setup.PRECISIONS.index(preset.get("precision", "fp32")),
                             format_func=lambda p: {"nf4": "NF4 (QLoRA, from scratch)"}.get(p, p),
                             help="the frozen base's storage; LoRA factors always train in fp32")
    seed = c2.number_input("seed", value=preset.get("seed", 0), min_value=0, step=1,
                           help="A's init, the data order and dropout; a sweep's repeats of one cell differ by it")
    upload = upload_widget("prompt/completion JSONL", "max_upload_bytes", type=["jsonl"], where=c4,
                           help='one JSON object per line: {"prompt": "...", "completion": "..."}.')
    start = st.form_submit_button("Start training", type="primary")


def new_run() -> LiveRun:
    """Check everything first (limits, configs, the file), then load the base and start."""
    request = run_setup.RunRequest(model_name=model_name, precision=precision, r=r, lora_alpha=alpha,
                                   lora_dropout=dropout, init_lora_weights=init, target_modules=targets,
                                   use_rslora=rslora, lr=lr, steps=steps, batch_size=batch, seq_len=seq_len,
                                   data=data_name, seed=int(seed))
    plan = run_setup.plan_run(request, settings(), upload.getvalue() if upload is not None else None,
                              upload.name if upload is not None else "upload")
    return run_setup.start_run(plan, *base_variant(model_name, precision))


slots, runs, sid = training_slots(), run_registry(), session_id()
let_go_of_closed_tabs()
if start:
    if (old := st.session_state.get(RUN_ID)) is not None:
        slots.release(old)  # a new run goes to the back of the queue
        runs.forget(old)
    with st.spinner("Preparing the run: held-out BLEU, perplexity and samples before training…"):
        run = last_good("finetune:start", new_run)
    if run is not None and run is not st.session_state.get(RUN):
        run_id = last_good("finetune:register", lambda: runs.register(run, sid))
        if run_id is not None:
            st.session_state[RUN], st.session_state[RUN_ID] = run, run_id
            st.session_state.setdefault(TRAINED_ADAPTERS, {})

if RUN not in st.session_state and (wanted := st.query_params.get("run")):
    # a reload is a new session: the run's id in the URL finds the run again
    found = runs.claim(wanted, sid, session_alive, wait_seconds=3.0)
    if found is not None:
        st.session_state[RUN], st.session_state[RUN_ID] = found, wanted
        st.toast("Found your run again after the reload.", icon=":material/restore:")
    else:
        del st.query_params["run"]
        st.warning("The run in this page's link is no longer here: it ended more than "
                   f"{RELOAD_GRACE_SECONDS:.0f} s after its tab closed, the server restarted, or another open "
                   "tab is driving it. Start a new run below.")

run: LiveRun | None = st.session_state.get(RUN)
if run is None:
    st.info("No run yet in this session. The defaults train in about a minute on a laptop CPU.")
    st.stop()
run_id = st.session_state[RUN_ID]
st.query_params["run"] = run_id  # a reload of this tab comes back to this run

# --- 2. live training ----------------------------------------------------------------------------
st.header("2. Training")
# on_click runs before the page is drawn, so every button below shows the state after the click
b1, b2, b3, _ = st.columns([1, 1, 1, 4])
b1.button("Pause", disabled=run.status != "running", on_click=run.pause)
b2.button("Resume", disabled=run.status != "paused", on_click=run.resume)
b3.button("Stop", disabled=run.status not in ("running", "paused"), on_click=run.stop)
if run.status == "stopped" and not run.after:
    with st.spinner("Measuring the adapter after training…"):
        run.finish("stopped")
if run.status != "running":
    slots.release(run_id)


@guarded_fragment("live training", run_every=1.0 if run.status == "running" else None)
def live() -> None:
    let_go_of_closed_tabs()  # each tick: a closed tab's slot goes to the next in line at once
    was_running = run.status == "running"
    place = slots.request(run_id) if was_running else 0
    if was_running and place == 0:
        run.advance(seconds=1.0)
    if run.status != "running":
        slots.release(run_id)
    if place:
        load = slots.snapshot()
        st.warning(f"Waiting for a training slot: you are number {place} in line "
                   f"({load['running']} of {load['capacity']} slots busy). Pause or stop to leave the queue.")
    view = run_setup.live_view(run)
    m = st.columns(5)
    m[0].metric("step", f"{view['step']} / {view['steps']}")
    started = view["started"]
    m[1].metric("loss", f"{view['loss']:.3f}" if started else "–", help="nats per completion token")
    m[2].metric("tokens/s", f"{view['tokens_per_s']:.0f}" if started else "–")
    m[3].metric("mean ‖ΔW‖_F", f"{view['delta_norm']:.4f}" if started else "0")
    m[4].metric("trainable", f"{view['trainable']:,}", help=f"of {view['total']:,} ({view['trainable_percent']:.3f}%)")
    st.progress(view["progress"], text=f"status: {run.status}")
    if run.message:
        st.error(as_text(run.message))
        if run.status == "diverged":
            st.caption("The results below are the restored adapter's. To go on, lower the **learning rate** and "
                       "press **Start training** for a new run.")
    left, right = st.columns(2)
    left.plotly_chart(viz.curves({"training loss": view["loss_curve"]}, "Loss on the task", "loss (nats/token)"),
                      width="stretch")
    right.plotly_chart(viz.curves({"general English": view["ppl_curve"]},
                                  "Learn vs forget: perplexity of a fixed English text", "perplexity",
                                  x_title=f"probe (every {run.probe_every} steps)"), width="stretch")
    st.dataframe([{"held-out prompt": p, f"greedy at step {view['samples_step']}": s} for p, s in view["samples"]],
                 hide_index=True)
    if was_running and run.status != "running":
        st.rerun()  # the run ended (or was paused) inside the fragment: redraw the page's buttons and results


live()
if run.status in ("running", "paused"):
    st.stop()

# --- 3. results ------------------------------------------------------------------------------------
st.header("3. What it learned, and what it cost")
results = run_setup.results_view(run)
if results is not None:
    m = st.columns(4)
    m[0].metric("held-out BLEU (0–100)", f"{results['bleu']:.2f}", f"{results['bleu_change']:+.2f}",
                help=f"sacrebleu corpus BLEU on {results['n_prompts']} held-out prompts; "
                     "0.65 on a 0–1 scale is 65 here")
    m[1].metric("held-out loss", f"{results['heldout_loss']:.3f}", f"{results['heldout_loss_change']:+.3f}",
                delta_color="inverse")
    m[2].metric("perplexity, general English", f"{results['ppl_general']:.2f}",
                f"{results['ppl_general_change']:+.2f}", delta_color="inverse")
    m[3].metric(f"base weights ({results['base_precision']})", f"{results['base_mib']:,.0f} MiB",
                help="every frozen parameter and buffer at rest; NF4 keeps embeddings and lm_head in fp32")
    st.dataframe(results["table"], hide_index=True)

    st.subheader("Share it with the room")
    shared = st.session_state.setdefault(SHARED, {})
    mine = shared.get(run_id)
    if run.status not in room.SHAREABLE:
        st.caption(f"A {run.status} run is not shared: only a run that is done or stopped.")
    elif mine is None:
        with st.form("share"):
            nickname = st.text_input("nickname", max_chars=MAX_NICKNAME,
                                     help="shown on the Room page beside this run's settings and results; nothing "
                                          "else about you is stored, and you can withdraw it")
            share = st.form_submit_button("Share my result")
        if share:
            try:
                entry, key = room.share_run(room_board(), run, run_id, nickname)
            except ValueError as err:
                st.error(as_text(err), icon="⚠️")
            else:
                shared[run_id] = {"id": entry.id, "key": key, "nickname": entry.nickname}
                st.rerun()
    else:
        st.success("On the room's board (the **Room** page), as:", icon=":material/groups:")
        st.text(mine["nickname"])  # as typed, never markup
        if st.button("Withdraw my result"):
            try:
                room.withdraw_run(room_board(), mine["id"], mine["key"])  # False: the teacher cleared it already
            except ValueError as err:
                st.error(as_text(err), icon="⚠️")  # still on the board: the key stays, to try again
            else:
                del shared[run_id]
                st.rerun()

report = lc.spectrum.adapter_report(run.model)
# The run's own base, not the selectbox: that one may have changed, or been reset by a page switch.
st.session_state.setdefault(TRAINED_ADAPTERS, {})[run_setup.adapter_label(run, model_name)] = \
    low_rank.adapter_directions(report)
figures = adapter_views.layer_spectra(report)
left, right = st.columns(2)
left.plotly_chart(viz.spectra(figures["spectra"], f"ΔW spectrum per layer (first {adapter_views.FIRST_LAYERS} "
                              "adapted layers)"), width="stretch")
right.plotly_chart(viz.layer_bars(figures["layers"], figures["relative"], "‖ΔW‖_F / ‖W‖_F per adapted layer",
                                  "relative size of the update"), width="stretch")

# --- 4. merge, toggle, export ---------------------------------------------------------------------
st.header("4. Merge, compare, export")
if st.button("Merge check: merged against unmerged"):
    with st.spinner("Merging (out of place), generating both ways, unmerging…"):
        st.session_state["finetune:merge"] = last_good(
            "finetune:merge", lambda: merge_check.merge_report(run.model, run.tokenizer, run.sample_prompts))
merge = st.session_state.get("finetune:merge")
if merge:
    m = st.columns(3)
    m[0].metric("max |Δlogit| merged vs unmerged", f"{merge['max_abs_dlogit']:.2e}")
    m[1].metric("tokens/s unmerged", f"{merge['unmerged_tokens_per_s']:.1f}")
    m[2].metric("tokens/s merged", f"{merge['merged_tokens_per_s']:.1f}")
    st.caption("Merging folds B·A·scale into W, so the merged layer is one matmul: the extra branch is gone. "
               f"Same greedy generations both ways: **{merge['same_generations']}**.")

prompt = st.text_input("Try a prompt with the adapter on and off", value=run.sample_prompts[0])
if st.button("Generate both ways"):
    result = last_good("finetune:toggle", lambda: adapter_views.generate_both_ways(run.model, run.tokenizer, prompt))
    if result:
        c1, c2 = st.columns(2)
        c1.markdown(f"**adapter on:** {result[0]}")
        c2.markdown(f"**adapter off (base model):** {result[1]}")

st.download_button("Download the adapter (PEFT format, .zip)", data=lc.adapter_zip(run.model),
                   file_name=run_setup.download_name(run, model_name), mime="application/zip")
st.code(run_setup.export_snippet(run, model_name), language="python")
