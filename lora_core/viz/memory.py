"""Figures for training memory measured beside the estimate: one bar pair per component, the sites
whose saved tensors make up the activations, and the activations with and without checkpointing.

The numbers come from lora_core.quant.measure (`compare`, `MeasuredMemory.saved_by_site`) and
lora_core.quant.checkpointing; nothing is computed here that a learner reads off the chart.
"""

from __future__ import annotations

import plotly.graph_objects as go

from .style import BLUE, GREY, ORANGE, layout


def measured_vs_estimated(rows: list[dict]) -> go.Figure:
    """Grouped bars, MB per component: the measured step beside the estimator's formula (measure.compare rows)."""
    parts = [r for r in rows if r["component"] != "total"]
    names = [r["component"] for r in parts]
    fig = go.Figure()
    for key, color in (("measured MB", BLUE), ("estimated MB", GREY)):
        fig.add_trace(go.Bar(
            x=names, y=[r[key] for r in parts], name=key.removesuffix(" MB"), marker_color=color,
            customdata=[r["ratio"] for r in parts],
            hovertemplate="%{x}<br>" + key + ": %{y:.2f}<br>measured / estimated %{customdata:.2f}<extra></extra>"))
    fig.update_layout(barmode="group", yaxis_title="MB (10⁶ bytes)", legend=dict(orientation="h", y=1.02, x=1,
                                                                                  xanchor="right", yanchor="bottom"))
    return layout(fig, "One training step: bytes counted beside bytes estimated")


def saved_sites(rows: list[dict]) -> go.Figure:
    """Horizontal bars: the saved activations grouped by the module class and function that saved them."""
    via = [", " + r["via"] if r["via"] != "autograd" else "" for r in rows]
    labels = [f"{r['module kind']} · {r['function'] or '-'} ({r['dtype']}{v})" for r, v in zip(rows, via, strict=True)]
    fig = go.Figure(go.Bar(
        x=[r["MB"] for r in rows][::-1], y=labels[::-1], orientation="h", marker_color=ORANGE,
        customdata=[[r["tensors"], r["share"]] for r in rows][::-1],
        hovertemplate="%{y}<br>%{x:.2f} MB in %{customdata[0]} tensors (%{customdata[1]:.0%})<extra></extra>"))
    fig.update_layout(xaxis_title="MB saved for backward", height=120 + 28 * len(rows))
    return layout(fig, "Who saved the activations (deduplicated by storage)")


def checkpointing_bars(rows: list[dict]) -> go.Figure:
    """Activations kept without and with gradient checkpointing, the checkpoint inputs shown apart."""
    x = ["off" if not r["gradient checkpointing"] else "on" for r in rows]
    kept = [r["of which checkpoint inputs MB"] for r in rows]
    rest = [r["activations MB"] - k for r, k in zip(rows, kept, strict=True)]
    fig = go.Figure([
        go.Bar(x=x, y=rest, name="saved by autograd", marker_color=ORANGE,
               hovertemplate="checkpointing %{x}: %{y:.2f} MB saved by autograd<extra></extra>"),
        go.Bar(x=x, y=kept, name="kept as checkpoint inputs", marker_color=BLUE,
               hovertemplate="checkpointing %{x}: %{y:.2f} MB of layer inputs<extra></extra>")])
    fig.update_layout(barmode="stack", xaxis_title="gradient checkpointing", yaxis_title="activations, MB")
    return layout(fig, "What checkpointing keeps, measured")
