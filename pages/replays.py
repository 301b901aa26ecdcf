"""Research replays: what LoRA papers found, re-measured on SmolLM2-135M-Instruct, with a verdict for each.

Everything comes from lora_core.research: `record.shipped` (the full runs shipped in results/replay/, each with
its provenance), `verdicts.verdict` (the rule and its outcome) and `papers.quotes_for` (the papers' own numbers).
The live button runs the quick version in a child process (`research.live.LiveReplay`) that holds one of the
server's training slots while it runs.
"""

from pathlib import Path

import streamlit as st

import pages  # noqa: F401  (a page opened by its own link still runs through app.py)
from lora_core import viz
from lora_core.research import papers, record, verdicts
from lora_core.research.experiments import EXPERIMENTS
from lora_core.research.live import LiveReplay
from lora_core.settings_file import REPO_ROOT
from pages.common import (
    as_text,
    guarded_fragment,
    last_good,
    session_alive,
    session_id,
    show_unexpected,
    training_slots,
    without_paths,
)

LIVE = "replays:live"  # this session's one live replay: {"name", "job", "result", "error"}
BOXES = {verdicts.HELD: st.success, verdicts.SMALLER: st.warning, verdicts.NOT_HELD: st.error}

st.title("Research replays")
st.markdown(
    "Seven findings from four papers, re-measured here rather than quoted: the LoRA paper's (Hu et al. 2021) "
    "choice of weights, rank sweep, subspace similarity and amplification factor; intruder dimensions "
    "(Shuttleworth et al. 2024); *LoRA learns less and forgets less* (Biderman et al. 2024); and the learning "
    "rates of *LoRA Without Regret* (Thinking Machines 2025). Each replay fine-tunes the real pretrained "
    "**SmolLM2-135M-Instruct** on a generated E2E-style data-to-text task (restaurant attributes in, a sentence "
    "out), scores it like the LoRA paper's GPT-2 tables with **multi-reference BLEU** (sacrebleu) and held-out "
    "loss, and measures forgetting as the **perplexity of general English** text the task never shows.")
st.markdown(
    "Each tab puts the paper's numbers beside ours, then a verdict computed by a rule written before the full "
    "runs: **held**, **held in direction but smaller**, or **did not hold here**. A 135M model trained for a few "
    "dozen steps is not GPT-3 175B, so a smaller effect is an answer too. Rerun any replay with "
    "`python -m lora_core.replay run NAME` (`list` names them; `--quick` is the few-minute version, "
    "`--device cuda` uses a GPU).")


def results_folder() -> str:
    """Where the shipped results live, as a learner would type it from the repository root."""
    folder = Path(record.RESULTS_DIR)
    return str(folder.relative_to(REPO_ROOT)) if folder.is_relative_to(REPO_ROOT) else str(folder)


# --- the figures of each replay: one builder call per picture --------------------------------------------------
FIGURES = {
    "targets": (viz.targets_bars,),
    "rank": (viz.rank_sweep,),
    "subspace": (viz.subspace_heatmaps, viz.seed_heatmaps, viz.phi_by_layer),
    "amplification": (viz.amplification_bars, viz.amplification_by_layer),
    "intruders": (viz.intruder_curve,),  # then the λ explorer below
    "forgetting": (viz.learn_forget, viz.full_delta_rank),
    "learning_rate": (viz.lr_sweep, viz.attention_vs_all),
}


# What a reader of a figure must know to read it right.
NOTES = {
    "subspace": "Block 0 stands out in the by-block line for a reason that is not learning: both adapters draw their "
                "initial A from the same seeded stream, and block 0's q is drawn first, so A at r = 8 starts as the "
                "first 8 rows of A at r = 64 there (lesson 11 checks it). From block 1 on the two streams differ; "
                "the verdict reads block 15.",
    "amplification": "The amplification factor ‖ΔW‖_F / ‖UᵀWVᵀ‖_F grows with ‖ΔW‖_F, that is with how far "
                     "training moved the update: the paper's GPT-3 update had ‖ΔW‖_F = 6.91, ours a few dozen "
                     "steps' worth. The ratio of W's projection on ΔW's directions to its projection on random "
                     "directions does not depend on that size, so the verdict reads it too.",
    "intruders": "An intruder must rank among the top 10 directions of W + ΔW, so ΔW's largest singular values must "
                 "rival W's tenth. After a few dozen steps they may not: then nothing counts at ε = 0.5, and "
                 "shrinking intruders (λ below) changes nothing, which the sweep shows as a flat line. The counts "
                 "at looser thresholds show which way the runs lean.",
    "forgetting": "Both learning rates were fixed before the runs: 2e-3 for LoRA (the app's default) and 5e-5 for "
                  "full fine-tuning. How much a run forgets depends on how hard it pushes, so this comparison is "
                  "only as fair as those two rates; the learning-rate replay sweeps both. Biderman et al. trained "
                  "7B models for billions of tokens; this is tens of steps on 135M.",
}


def lambda_explorer(res: dict) -> None:
    """The intruder replay's λ sweep: pick a λ, see it on the trade-off and how many intruders it leaves."""
    points = res["reduction"]["points"]
    lambdas = sorted(p["lambda"] for p in points)
    lam = st.select_slider("λ: each intruder's singular value is multiplied by λ (1 keeps it, 0 removes it)",
                           lambdas, value=lambdas[-1], format_func=lambda v: f"{v:g}", key="replays:lambda")
    point = next(p for p in points if p["lambda"] == lam)
    m = st.columns(3)
    m[0].metric("intruders left (q and v, every block)", point["intruders"])
    m[1].metric("held-out loss", f"{point['test_loss']:.3f}")
    m[2].metric("English perplexity", f"{point['english_ppl']:.2f}")
    st.plotly_chart(viz.intruder_tradeoff(res, lam), width="stretch")
    st.dataframe(viz.reduction_rows(res), hide_index=True)


def show_verdict(result: dict) -> None:
    """The verdict word in a coloured box, then our numbers and the rule that turned them into the word."""
    v = verdicts.verdict(result)
    BOXES[v["verdict"]](v["verdict"])
    st.markdown(f"**Ours:** {as_text(v['ours'])}")
    st.caption(f"**Rule:** {as_text(v['rule'])}")


# --- the live quick replay: a child process holding one training slot ------------------------------------------
def live_key() -> str:
    return f"replay:{session_id()}"


@st.cache_resource(show_spinner=False)
def live_jobs() -> dict[str, LiveReplay]:
    """Every session's running child by session id, so that a closed tab's replay is stopped, not orphaned."""
    return {}


def stop_closed_tabs() -> None:
    for sid, job in list(live_jobs().items()):
        if not session_alive(sid):
            job.cancel()
            live_jobs().pop(sid, None)
            training_slots().release(f"replay:{sid}")


def end_live(entry: dict, **outcome) -> None:
    """The run is over (done, failed or cancelled): free the slot, stop the child, delete its folder."""
    training_slots().release(live_key())
    live_jobs().pop(session_id(), None)
    if entry["job"] is not None:
        entry["job"].cancel()
    entry.update(job=None, **outcome)


def cancel_live() -> None:
    end_live(st.session_state[LIVE])
    del st.session_state[LIVE]
    st.rerun()


@guarded_fragment("the live replay", run_every=2.0)
def poll(name: str) -> None:
    """Every 2 s: wait for a slot, start the child, show its progress, and take its result when it ends."""
    entry, slots = st.session_state[LIVE], training_slots()
    if entry["job"] is None:
        place = slots.request(live_key())
        if place:
            load = slots.snapshot()
            st.warning(f"Waiting for a training slot: you are number {place} in line ({load['running']} of "
                       f"{load['capacity']} slots busy). The replay starts by itself when a slot frees.")
            if st.button("Leave the queue", key="replays:leave"):
                cancel_live()
            return
        try:
            entry["job"] = LiveReplay.start(name)
        except (ValueError, OSError) as err:
            end_live(entry, error=f"The replay could not start: {as_text(without_paths(str(err)))}")
            st.rerun()
        live_jobs()[session_id()] = entry["job"]
    job = entry["job"]
    status = job.status()
    if status == "running":
        slots.request(live_key())  # the heartbeat that keeps this session's slot
        lines = job.progress()
        st.info(f"Your quick **{name}** replay is running in a process of its own: {len(lines)} fine-tunes "
                "finished so far. This part of the page refreshes every 2 s.", icon=":material/hourglass_top:")
        if lines:
            st.code("\n".join(lines[-8:]), language=None)
        if st.button("Cancel the replay", key="replays:cancel", icon=":material/stop:"):
            cancel_live()
        return
    if status == "done":
        end_live(entry, result=job.result())
    else:
        output = as_text(without_paths(job.error() or "(none)"))
        end_live(entry, error=f"The replay failed. Its last output:\n\n{output}")
    st.rerun()  # redraw the whole page: the buttons and the other tabs see that it ended


def live_outcome(live: dict, shipped: dict | None) -> None:
    """The live run's verdict and, where the shipped full run says otherwise, why that can happen."""
    steps, seeds = live["settings"].get("steps"), len(live["seeds"])
    st.markdown(f"**Your quick run** ({steps} steps, {seeds} seed{'s' * (seeds != 1)}, {live['seconds']:.0f} s):")
    show_verdict(live)
    if shipped is None:
        st.caption("There is no shipped full run to compare it with yet.")
        return
    differ = verdicts.disagreements(shipped, live)
    if not differ:
        st.success("Your quick run agrees with the shipped full run.", icon=":material/check:")
        return
    full_steps, full_seeds = shipped["settings"].get("steps"), len(shipped["seeds"])
    st.warning(" ".join(differ) + f"\n\nYour quick run disagrees with the shipped full run. A quick run trains "
               f"{steps} steps with {seeds} seed(s); the shipped one trained {full_steps} steps with {full_seeds} "
               "seeds. After fewer steps the adapters have moved less, and one seed gives no spread to tell a real "
               "difference from seed noise, so a verdict that rests on a small difference can flip. Trust the "
               "full run; the quick one shows the method.", icon=":material/compare_arrows:")


def live_section(name: str, shipped: dict | None) -> None:
    entry = st.session_state.get(LIVE)
    active = entry is not None and entry["result"] is None and entry["error"] is None
    if active and entry["name"] != name:
        st.caption(f"Your quick **{entry['name']}** replay is running (one live replay per session at a time): "
                   "wait for it, or cancel it in its tab, to run this one.")
        return
    if active:
        poll(name)
        return
    st.caption(f"The quick version: {name} at a reduced scale (fewer steps, one seed, fewer test inputs), in a "
               "process of its own. It takes a few minutes on a CPU and one of the server's training slots.")
    if st.button(f"Run the quick {name} replay", key=f"replays:start:{name}", icon=":material/play_arrow:"):
        st.session_state[LIVE] = {"name": name, "job": None, "result": None, "error": None}
        st.rerun()
    if entry is not None and entry["name"] == name:
        if entry["error"]:
            st.error(entry["error"])
        else:
            live_outcome(entry["result"], shipped)


# --- one tab per replay -------------------------------------------------------------------------------------------
def section(e) -> None:
    st.caption(f"Replays {e.paper}.")
    result = last_good(f"replays:{e.name}", lambda: record.shipped(e.name))
    st.subheader("What the paper found")
    quotes = papers.quotes_for(e.name)
    st.table(viz.quote_rows(quotes), hide_index=True)
    with st.expander("Where each quoted number was read"):
        for q in quotes:
            st.caption(f"**{q.where}** ({q.source}): {as_text(q.checked)}")
    st.subheader("What we measured")
    if result is None:
        st.info(f"No shipped result for **{e.name}** yet. Produce it from the repository root with "
                f"`python -m lora_core.replay run {e.name} --out {results_folder()}` (the full version; add "
                "`--device cuda` on a GPU), or run the quick version below.", icon=":material/info:")
    else:
        for build in FIGURES[e.name]:
            st.plotly_chart(build(result["results"]), width="stretch")
        if e.name in NOTES:
            st.caption(NOTES[e.name])
        st.dataframe(viz.measured_rows(result), hide_index=True)
        if e.name == "intruders":
            lambda_explorer(result["results"])
        st.subheader("Verdict")
        show_verdict(result)
        st.subheader("How this was made")
        st.dataframe(viz.provenance_rows(result), hide_index=True)
    st.subheader("Run the quick version yourself")
    live_section(e.name, result)


stop_closed_tabs()
for e, tab in zip(EXPERIMENTS, st.tabs([e.title for e in EXPERIMENTS]), strict=True):
    with tab:
        try:
            section(e)
        except Exception as err:  # a bug in one replay's drawing: the other tabs still draw
            show_unexpected(err, f"the {e.name} replay")
