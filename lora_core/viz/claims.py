"""Figures the claims check needs beyond viz.interview's kinds: curves against the rank r.

`claims_figure(spec)` draws spec["kind"] == "by_rank" here and hands every other kind to
`viz.interview.evidence_figure`, so a page draws any Evidence figure through one call.
"""

from __future__ import annotations

from collections.abc import Sequence

import plotly.graph_objects as go

from .interview import evidence_figure
from .style import PALETTE, layout


def by_rank(ranks: Sequence[int], series: dict[str, Sequence[float]], title: str, y_title: str,
            dashed: Sequence[str] = ()) -> go.Figure:
    """Named curves against r, log-log (a scale and an update size side by side); names in `dashed` dashed."""
    fig = go.Figure()
    for (name, ys), color in zip(series.items(), PALETTE * 3, strict=False):
        fig.add_trace(go.Scatter(x=list(ranks), y=list(ys), name=name, mode="lines+markers",
                                 line=dict(color=color, dash="dash" if name in dashed else "solid"),
                                 hovertemplate=f"{name}<br>r = %{{x}}: %{{y:.4g}}<extra></extra>"))
    fig.update_xaxes(title="rank r", type="log", tickvals=list(ranks))
    fig.update_yaxes(title=y_title, type="log", exponentformat="power")
    return layout(fig, title, legend=dict(orientation="h", y=-0.25))


def claims_figure(spec: dict) -> go.Figure:
    """The figure an Evidence describes, with the claims check's extra kind ("by_rank")."""
    if spec["kind"] == "by_rank":
        return by_rank(spec["ranks"], spec["series"], spec["title"], spec["y_title"], spec.get("dashed", ()))
    return evidence_figure(spec)
