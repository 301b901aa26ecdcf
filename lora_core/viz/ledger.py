"""Figures for parameter counts: one layer's W, A and B to scale; a ledger's rows."""

from __future__ import annotations

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from ..counting import Ledger
from .style import BLUE, GREY, ORANGE, PALETTE, layout


def weight_vs_adapter(in_features: int, out_features: int, r: int) -> go.Figure:
    """Frozen W (out × in) next to the trainable A (r × in) and B (out × r), to scale, log y."""
    names = [f"W  {out_features}×{in_features} (frozen)", f"A  {r}×{in_features}", f"B  {out_features}×{r}"]
    values = [in_features * out_features, r * in_features, out_features * r]
    fig = go.Figure(go.Bar(x=names, y=values, marker_color=[GREY, BLUE, ORANGE],
                           text=[f"{v:,}" for v in values], textposition="outside",
                           hovertemplate="%{x}<br>%{y:,} parameters<extra></extra>"))
    fig.update_yaxes(type="log", title="parameters (log scale)", dtick=1, range=[0, 7.3])
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


def rank_sweep_chart(points: list[dict], highlight: str | None = None) -> go.Figure:
    """Trainable parameters and their share of the model against r, one line per target set, log axes.

    `points` come from `anatomy.rank_sweep`: [{label, r, trainable, total, trainable%}]. The
    `highlight` label is drawn dashed and on top, so it shows even where it overlaps another set.
    """
    fig = make_subplots(rows=1, cols=2, horizontal_spacing=0.1,
                        subplot_titles=("trainable parameters", "share of all parameters"))
    labels = sorted(dict.fromkeys(p["label"] for p in points), key=lambda label: label == highlight)
    for label, color in zip(labels, PALETTE, strict=False):
        mine = [p for p in points if p["label"] == label]
        line = dict(color="#222222", dash="dash", width=3) if label == highlight else dict(color=color)
        hover = (f"{label}<br>r = %{{x}}<br>%{{customdata[0]:,}} trainable of %{{customdata[1]:,}}"
                 "<br>= %{customdata[2]:.4f}% of all parameters<extra></extra>")
        custom = [[p["trainable"], p["total"], p["trainable%"]] for p in mine]
        for col, key in ((1, "trainable"), (2, "trainable%")):
            fig.add_trace(go.Scatter(x=[p["r"] for p in mine], y=[p[key] for p in mine], name=label,
                                     legendgroup=label, showlegend=col == 1, mode="lines+markers",
                                     line=line, customdata=custom, hovertemplate=hover),
                          row=1, col=col)
    fig.update_xaxes(title="rank r (log scale)", type="log", tickvals=sorted({p["r"] for p in points}))
    fig.update_yaxes(title_text="parameters (log scale)", type="log", dtick=1, exponentformat="power", row=1, col=1)
    fig.update_yaxes(title_text="% of all parameters (log scale)", type="log", dtick=1, ticksuffix="%", row=1, col=2)
    fig = layout(fig, "What each target set costs as r grows (linear in r)", height=440,
                 legend=dict(orientation="h", y=-0.3))
    return fig.update_layout(margin=dict(t=80))
