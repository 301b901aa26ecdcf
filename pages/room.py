"""The Room: the runs a workshop's learners shared, on one board that updates live, as a table and as any metric
against any knob; a teacher's sweep hands each learner a cell, and the board fills the paper's figure.

The board, the sweep and the exports are lora_core.serve.board, .sweep and .room; this page reads and draws.
"""

import streamlit as st

from lora_core import viz
from lora_core.serve import room
from lora_core.serve.board import KNOBS, METRICS
from lora_core.serve.sweep import KNOBS as SWEEP_KNOBS
from lora_core.serve.sweep import SWEEPS
from pages.common import (
    SHARED,
    as_text,
    client_address,
    guarded_fragment,
    room_board,
    room_sweeps,
    teacher_gate,
)

TEACHER = "room:teacher"  # this session typed the right token
# How the table rounds each measured column for display (the exports keep every digit).
SHOWN = {"train_loss": "%.3f", "heldout_loss": "%.3f", "bleu": "%.2f", "ppl_general": "%.2f", "tokens_per_s": "%.0f",
         "wall_s": "%.1f", "lr": "%.0e"}

st.title("Room: the workshop's board")
st.markdown("Every learner trains alone on **Live fine-tuning**; here the room's runs add up to one experiment. "
            "When a run finishes, its learner can share it under a nickname, and it lands on this board within "
            "seconds: pick a metric and a knob to see the room's results against it, with **your own runs in "
            "orange** and each configuration's mean and spread (min to max over its runs and seeds). When the "
            "teacher starts a **sweep**, everyone who opens Live fine-tuning gets the next cell of it in turn as "
            "their preset, so the board fills the figure, with the shipped replay and the paper beside it.")

board, sweeps = room_board(), room_sweeps()
running = sweeps.current()
c1, c2 = st.columns(2)
metric = c1.selectbox("metric", METRICS, index=METRICS.index("heldout_loss"),
                      format_func=lambda m: room.METRIC_TITLES[m][0])
knob = c2.selectbox("against", KNOBS, index=KNOBS.index(running["knob"] if running else "r"),
                    format_func=lambda k: room.KNOB_TITLES[k])


@guarded_fragment("the room's board", run_every=2.0)
def live_board() -> None:
    """Redrawn every 2 s from the files on disk: new results appear without a reload."""
    entries, sweep = board.entries(), sweeps.current()
    own = {mine["id"] for mine in st.session_state.get(SHARED, {}).values()}
    counts, m = room.board_summary(entries, own), st.columns(3)
    m[0].metric("results on the board", f"{counts['results']}", help=f"at most {board.max_results} (max_board_results)")
    m[1].metric("nicknames", f"{counts['nicknames']}")
    m[2].metric("yours", f"{counts['yours']}")
    if sweep is not None:
        st.info(f"Sweep **{as_text(sweep['name'])}** is running: {room.KNOB_TITLES[sweep['knob']]} over "
                f"{as_text(', '.join(map(str, sweep['values'])))}. Each learner who opens Live fine-tuning gets "
                "the cell handed out least so far (a cell's repeats get seeds 0, 1, 2, …).", icon=":material/grid_on:")
        st.dataframe(room.sweep_cells(sweep, entries), hide_index=True)
    if not entries:
        st.info("No results on the board yet. Train a run on **Live fine-tuning**, then press **Share my result** "
                "under its results.")
        return
    order = sweep["values"] if sweep is not None and sweep["knob"] == knob else None
    data = room.plot_data(entries, knob, metric, own, order=order)
    ref = room.reference(knob, metric)
    st.plotly_chart(viz.room_board(data, ref), width="stretch")
    if ref is not None:
        st.caption(f"**{ref['replay']['label'][0].upper()}{ref['replay']['label'][1:]}** "
                   f"(`{ref['replay']['command']}`). "
                   "Its task and budget differ from the room's runs: compare the shape, not the level.")
        st.markdown("\n".join(f"- {finding}" for finding in ref["findings"]))
    else:
        st.caption(f"No shipped replay measured {room.METRIC_TITLES[metric][0]} against {room.KNOB_TITLES[knob]}: "
                   "the replays and the paper appear beside the board for r and for the target modules.")
    st.dataframe(room.board_rows(entries, own), hide_index=True,
                 column_config={k: st.column_config.NumberColumn(format=f) for k, f in SHOWN.items()})


live_board()

# --- the teacher's controls -------------------------------------------------------------------------------------
st.header("Teacher")
gate = teacher_gate()
if not gate.enabled:
    st.caption("Teacher controls are off on this server. To start sweeps, clear the board and export it, set "
               "`teacher_token` in the `[room]` section of lora_lab.toml, or start the server with "
               "`LORA_LAB_TEACHER_TOKEN=… make app`.")
    st.stop()
if not st.session_state.get(TEACHER):
    with st.form("teacher"):
        typed = st.text_input("teacher token", type="password")
        unlock = st.form_submit_button("Unlock the teacher's controls")
    if unlock:
        try:
            gate.check(typed, client=client_address())
        except ValueError as err:
            st.error(as_text(err), icon="⚠️")
        else:
            st.session_state[TEACHER] = True
            st.rerun()
    st.stop()

st.caption("Unlocked in this browser session.")
with st.form("sweep"):
    c1, c2, c3 = st.columns([2, 1, 2])
    choice = c1.selectbox("sweep", [*SWEEPS, "your own"],
                          format_func=lambda n: f"{n}: {room.KNOB_TITLES[SWEEPS[n][0]]} over "
                                                f"{', '.join(map(str, SWEEPS[n][1]))}" if n in SWEEPS else n)
    own_knob = c2.selectbox("your own: knob", SWEEP_KNOBS, format_func=lambda k: room.KNOB_TITLES[k])
    own_values = c3.text_input("your own: values", placeholder="4, 16   or   q_proj,v_proj; all-linear")
    start = st.form_submit_button("Start this sweep", type="primary",
                                  help="replaces a running sweep: each learner gets a cell of the new one the "
                                       "next time Live fine-tuning runs for them")
if start:
    try:
        if choice in SWEEPS:
            sweeps.start(choice)
        else:
            sweeps.start(f"{own_knob} sweep", knob=own_knob, values=room.parse_values(own_knob, own_values))
    except ValueError as err:
        st.error(as_text(err), icon="⚠️")
    else:
        st.rerun()

c1, c2, c3, c4 = st.columns(4)
end = c1.button("End the sweep", disabled=sweeps.current() is None)
sure = c2.checkbox("yes, clear it")
clear = c2.button("Clear the board", disabled=not sure, help="takes every result off the board and the disk; "
                  "export it first")
if end or clear:
    try:
        if end:
            sweeps.end()
            done = "Ended the sweep."
        else:
            done = f"Cleared {board.clear()} results."
    except ValueError as err:  # a board folder this server cannot write: the message names board_dir
        st.error(as_text(err), icon="⚠️")
    else:
        st.toast(done)
        st.rerun()
c3.download_button("Export CSV", data=room.export_csv(board), file_name="lora-lab-room.csv", mime="text/csv")
c4.download_button("Export JSON", data=room.export_json(board, sweeps.current()), file_name="lora-lab-room.json",
                   mime="application/json")
if st.button("Lock the teacher's controls"):
    del st.session_state[TEACHER]
    st.rerun()
