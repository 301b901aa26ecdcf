"""Figures for QLoRA: 4-bit codebooks against the normal density, real weights and their
rounding errors, and training memory stacked by component (QLoRA, arXiv 2305.14314)."""

from __future__ import annotations

import plotly.graph_objects as go
import torch
from plotly.subplots import make_subplots

from ..quant.memory import COMPONENTS, GIB, MemoryEstimate
from .style import BLUE, GREEN, GREY, ORANGE, PALETTE, PURPLE, RED, layout

COMPONENT_COLORS = dict(zip(COMPONENTS, (BLUE, PURPLE, ORANGE, RED, GREEN), strict=True))


def _level_strip(fig: go.Figure, books: dict[str, torch.Tensor], row: int) -> None:
    """One row of markers per codebook: where its levels sit on [-1, 1]."""
    for i, (name, levels) in enumerate(books.items()):
        values = levels.tolist()
        fig.add_trace(go.Scatter(
            x=values, y=[name] * len(values), mode="markers", name=name, marker=dict(size=9, color=PALETTE[i]),
            customdata=list(range(len(values))),
            hovertemplate=f"{name}<br>code %{{customdata}}: %{{x:.6f}}<extra></extra>"), row=row, col=1)
    fig.update_yaxes(autorange="reversed", row=row, col=1)


def codebook_levels(books: dict[str, torch.Tensor], density: tuple[torch.Tensor, torch.Tensor]) -> go.Figure:
    """The normal density NF4 is built for, with each codebook's 16 levels underneath."""
    fig = make_subplots(rows=2, cols=1, shared_xaxes=True, row_heights=[0.55, 0.45], vertical_spacing=0.06)
    x, pdf = density
    fig.add_trace(go.Scatter(x=x.tolist(), y=pdf.tolist(), mode="lines", fill="tozeroy", name="N(0, 1) density",
                             line=dict(color=GREY), hovertemplate="x=%{x:.3f}<br>density %{y:.3f}<extra></extra>"),
                  row=1, col=1)
    first = next(iter(books))
    for level in books[first].tolist():  # the first codebook's levels, drawn across the density
        fig.add_vline(x=level, line=dict(color=PALETTE[0], width=1, dash="dot"), row=1, col=1)
    _level_strip(fig, books, row=2)
    fig.update_yaxes(title="density", row=1, col=1)
    fig.update_xaxes(title="level (block absmax = 1)", range=[-1.05, 1.05], row=2, col=1)
    return layout(fig, f"{first} levels (dotted) follow the normal density; uniform and log grids do not",
                  showlegend=False, height=460)


def weight_histogram(edges: torch.Tensor, counts: torch.Tensor, books: dict[str, torch.Tensor],
                     title: str) -> go.Figure:
    """Histogram of weights divided by their block absmax, with every codebook's levels beneath."""
    fig = make_subplots(rows=2, cols=1, shared_xaxes=True, row_heights=[0.65, 0.35], vertical_spacing=0.06)
    centers = ((edges[1:] + edges[:-1]) / 2).tolist()
    fig.add_trace(go.Bar(x=centers, y=counts.tolist(), marker_color=GREY, name="weights",
                         hovertemplate="w / absmax ≈ %{x:.3f}<br>%{y:,.0f} weights<extra></extra>"), row=1, col=1)
    fig.update_layout(bargap=0)
    _level_strip(fig, books, row=2)
    fig.update_yaxes(title="weights", row=1, col=1)
    fig.update_xaxes(title="w / block absmax", range=[-1.05, 1.05], row=2, col=1)
    return layout(fig, title, showlegend=False, height=420)


def error_histograms(hists: dict[str, tuple[torch.Tensor, torch.Tensor]]) -> go.Figure:
    """How far the round trip moves each weight, one outline per codebook (log y)."""
    fig = go.Figure()
    for i, (name, (edges, counts)) in enumerate(hists.items()):
        centers = ((edges[1:] + edges[:-1]) / 2).tolist()
        fig.add_trace(go.Scatter(x=centers, y=counts.tolist(), mode="lines", line=dict(shape="hvh", color=PALETTE[i]),
                                 name=name, hovertemplate=f"{name}<br>error ≈ %{{x:.4f}}<br>%{{y:,.0f}} weights"
                                                          "<extra></extra>"))
    fig.update_yaxes(type="log", title="weights (log scale)")
    fig.update_xaxes(title="ŵ − w")
    return layout(fig, "Rounding error per weight: a narrower peak is better", height=360)


def memory_bars(estimates: dict[str, MemoryEstimate]) -> go.Figure:
    """Training memory stacked by component (GiB), one bar per label, with each formula on hover."""
    labels = list(estimates)
    fig = go.Figure()
    for component in COMPONENTS:
        fig.add_trace(go.Bar(
            x=labels, y=[e.breakdown()[component] / GIB for e in estimates.values()], name=component,
            marker_color=COMPONENT_COLORS[component],
            customdata=[e.formulas[component] for e in estimates.values()],
            hovertemplate=f"{component}: %{{y:.2f}} GiB<br>%{{customdata}}<extra>%{{x}}</extra>"))
    fig.add_trace(go.Scatter(x=labels, y=[e.total / GIB for e in estimates.values()], mode="text",
                             text=[f"{e.total / GIB:.1f} GiB" for e in estimates.values()], textposition="top center",
                             showlegend=False, hoverinfo="skip"))
    fig.update_layout(barmode="stack")
    fig.update_yaxes(title="GiB")
    return layout(fig, "Training memory by component", height=440)
