"""Plotly figure builders shared by the app's pages and the lessons: one picture, one place.

Builders take numbers computed elsewhere in lora_core and return a `plotly.graph_objects.Figure`;
they compute nothing a user reads off the chart.
"""

from __future__ import annotations

import plotly.graph_objects as go

from .counting import Ledger

BLUE, ORANGE, GREY = "#1f77b4", "#ff7f0e", "#9aa0a6"


def _layout(fig: go.Figure, title: str, **kw) -> go.Figure:
    fig.update_layout(title=title, template="plotly_white", margin=dict(l=10, r=10, t=50, b=10),
                      hoverlabel=dict(namelength=-1), **kw)
    return fig


def weight_vs_adapter(in_features: int, out_features: int, r: int) -> go.Figure:
    """Frozen W (out × in) next to the trainable A (r × in) and B (out × r), to scale, log y."""
    names = [f"W  {out_features}×{in_features} (frozen)", f"A  {r}×{in_features}", f"B  {out_features}×{r}"]
    values = [in_features * out_features, r * in_features, out_features * r]
    fig = go.Figure(go.Bar(x=names, y=values, marker_color=[GREY, BLUE, ORANGE],
                           text=[f"{v:,}" for v in values], textposition="outside",
                           hovertemplate="%{x}<br>%{y:,} parameters<extra></extra>"))
    fig.update_yaxes(type="log", title="parameters (log scale)")
    return _layout(fig, f"One {in_features}→{out_features} layer at r={r}: "
                        f"{values[1] + values[2]:,} trainable vs {values[0]:,} frozen")


def ledger_bars(ledger: Ledger) -> go.Figure:
    """LoRA parameters per module kind, from a ledger."""
    fig = go.Figure(go.Bar(
        x=[row.module for row in ledger.rows], y=[row.lora_params for row in ledger.rows],
        customdata=[[row.count, row.in_features, row.out_features, row.lora_per_module] for row in ledger.rows],
        marker_color=BLUE,
        hovertemplate=("%{x}<br>%{customdata[0]} × r·(%{customdata[1]}+%{customdata[2]}) = "
                       "%{customdata[0]} × %{customdata[3]:,}<br>= %{y:,} parameters<extra></extra>")))
    fig.update_yaxes(title="LoRA parameters")
    fig.update_xaxes(title="module kind")
    return _layout(fig, ledger.peft_line)
