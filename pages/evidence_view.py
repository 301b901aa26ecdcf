"""Draw an `evidence.Evidence`: metrics, a table, a code snippet, a figure and where it came from.

Shared by the Interview prep and Claims check pages. No math: every value arrives computed.
"""

from __future__ import annotations

from collections.abc import Callable

import streamlit as st

from lora_core.teach.evidence import Evidence
from lora_core.viz.claims import claims_figure

MAX_METRICS_PER_ROW = 4


@st.cache_resource(show_spinner=False, max_entries=128)
def _figure(key: str, _build: Callable[[], dict]):
    """The plotly figure for an evidence figure spec, built once per `key` (read-only afterwards)."""
    return claims_figure(_build())


def show_evidence(ev: Evidence | None, key: str, figure_key: str) -> None:
    """Render `ev`. `key` names its elements on this page; `figure_key` names its figure for every session,
    so it must change whenever the evidence's numbers do."""
    if ev is None:
        return
    items = list(ev.metrics.items())
    for start in range(0, len(items), MAX_METRICS_PER_ROW):
        row = items[start:start + MAX_METRICS_PER_ROW]
        for col, (label, value) in zip(st.columns(MAX_METRICS_PER_ROW), row, strict=False):
            col.metric(label, value)
    if ev.code:
        st.code(ev.code, language="python" if "\n" in ev.code else None, wrap_lines=True)
    if ev.table:
        st.dataframe(ev.table, hide_index=True, width="stretch")
    if ev.figure is not None:
        st.plotly_chart(_figure(figure_key, lambda: ev.figure), width="stretch", key=f"fig:{key}")
    if ev.note:
        st.caption(f"Source: {ev.note}")
