"""Shared look for every LoRA Lab figure: one template, one palette, readable hovers."""

from __future__ import annotations

import plotly.graph_objects as go

BLUE, ORANGE, GREEN, RED, PURPLE, GREY = "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#9aa0a6"
PALETTE = [BLUE, ORANGE, GREEN, RED, PURPLE, "#8c564b", "#e377c2", "#17becf"]


def layout(fig: go.Figure, title: str, **kw) -> go.Figure:
    """Apply the house style: tight margins, full-length hover names.

    No plotly template is set: Streamlit draws with its own theme, and copying a template per
    figure cost ~40 ms a rerun. Notebooks get plotly's default look.
    """
    fig.update_layout(title=title, margin=dict(l=10, r=10, t=50, b=10),
                      hoverlabel=dict(namelength=-1), **kw)
    return fig
