"""Figures for parameter counts: one layer's W, A and B to scale; a ledger's rows."""

from __future__ import annotations

import plotly.graph_objects as go

from ..counting import Ledger
from .style import BLUE, GREY, ORANGE, layout


def weight_vs_adapter(in_features: int, out_features: int, r: int) -> go.Figure:
    """Frozen W (out × in) next to the trainable A (r × in) and B (out × r), to scale, log y."""
    names = [f"W  {out_features}×{in_features} (frozen)", f"A  {r}×{in_features}", f"B  {out_features}×{r}"]
    values = [in_features * out_features, r * in_features, out_features * r]
    fig = go.Figure(go.Bar(x=names, y=values, marker_color=[GREY, BLUE, ORANGE],
                           text=[f"{v:,}" for v in values], textposition="outside",
                           hovertemplate="%{x}<br>%{y:,} parameters<extra></extra>"))
    fig.update_yaxes(type="log", title="parameters (log scale)")
    return layout(fig, f"One {in_features}→{out_features} layer at r={r}: "
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
    return layout(fig, ledger.peft_line)
