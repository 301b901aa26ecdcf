"""Figures for rank and the SVD: spectra, energy, low-rank pictures, subspace similarity."""

from __future__ import annotations

from collections.abc import Sequence

import plotly.graph_objects as go
import torch
from plotly.subplots import make_subplots

from .style import BLUE, ORANGE, PALETTE, layout


def spectra(series: dict[str, torch.Tensor], title: str, log_y: bool = True) -> go.Figure:
    """σ_i against i for several named spectra (zeros are drawn at the axis floor on a log scale)."""
    fig = go.Figure()
    for (name, sv), color in zip(series.items(), PALETTE, strict=False):
        values = sv.detach().double().cpu().tolist()
        fig.add_trace(go.Scatter(x=list(range(1, len(values) + 1)), y=values, name=name, mode="lines+markers",
                                 marker=dict(size=4), line=dict(color=color),
                                 hovertemplate=f"{name}<br>σ_%{{x}} = %{{y:.4g}}<extra></extra>"))
    fig.update_xaxes(title="index i (largest first)")
    fig.update_yaxes(title="singular value σ_i", type="log" if log_y else "linear", exponentformat="power")
    return layout(fig, title, legend=dict(orientation="h", y=-0.25))


def energy_curve(cum: Sequence[float], k: int, title: str) -> go.Figure:
    """Cumulative share of ‖W‖_F² kept by the top k values (`spectrum.energy_profile`), k marked."""
    xs = list(range(1, len(cum) + 1))
    fig = go.Figure(go.Scatter(x=xs, y=cum, mode="lines", line=dict(color=BLUE), name="energy",
                               hovertemplate="top %{x}: %{y:.2%} of ‖W‖²<extra></extra>"))
    fig.add_trace(go.Scatter(x=[k], y=[cum[k - 1]], mode="markers", marker=dict(size=11, color=ORANGE),
                             name=f"k = {k}", hovertemplate="k = %{x}: %{y:.2%}<extra></extra>"))
    fig.update_xaxes(title="k (number of singular values kept)")
    fig.update_yaxes(title="energy captured", tickformat=".0%", range=[0, 1.02])
    return layout(fig, title, showlegend=False)


def image_pair(original: torch.Tensor, approx: torch.Tensor, k: int) -> go.Figure:
    """An image and its rank-k approximation, side by side, in grey."""
    fig = make_subplots(rows=1, cols=2, subplot_titles=("original", f"rank {k}"), horizontal_spacing=0.03)
    for col, img in ((1, original), (2, approx.clamp(0, 1))):
        # float32 numpy, not .tolist(): plotly stores it as one base64 string (4 B a pixel), not a JSON number
        # per pixel (~20 B), which kept lesson 04's notebook over 1 MB.
        fig.add_trace(go.Heatmap(z=img.detach().flip(0).float().cpu().numpy(), colorscale="gray", zmin=0, zmax=1,
                                 showscale=False, hovertemplate="row %{y}, col %{x}: %{z:.3f}<extra></extra>"),
                      row=1, col=col)
    fig.update_xaxes(visible=False)
    fig.update_yaxes(visible=False, scaleanchor="x")
    return layout(fig, f"Keeping {k} singular values of the picture")


def similarity_heatmap(phi: torch.Tensor, name1: str, name2: str) -> go.Figure:
    """φ(A1, A2, i, j) over the top i and j directions (LoRA paper, Figure 3 style)."""
    fig = go.Figure(go.Heatmap(
        z=phi.tolist(), x=list(range(1, phi.shape[1] + 1)), y=list(range(1, phi.shape[0] + 1)),
        colorscale="Viridis", zmin=0, zmax=1, colorbar=dict(title="φ"),
        hovertemplate=f"top %{{y}} of {name1}, top %{{x}} of {name2}: φ = %{{z:.3f}}<extra></extra>"))
    fig.update_xaxes(title=f"j: directions of {name2}")
    fig.update_yaxes(title=f"i: directions of {name1}", autorange="reversed")
    return layout(fig, f"Subspace similarity φ between {name1} and {name2}")


def curves(series: dict[str, Sequence[float]], title: str, y_title: str, log_y: bool = False,
           x_title: str = "training step", dashed: Sequence[str] = ()) -> go.Figure:
    """Named curves against step (loss, ‖ΔW‖, ...); names in `dashed` are drawn dashed."""
    fig = go.Figure()
    for (name, ys), color in zip(series.items(), PALETTE * 3, strict=False):
        fig.add_trace(go.Scatter(x=list(range(1, len(ys) + 1)), y=list(ys), name=name, mode="lines",
                                 line=dict(color=color, dash="dash" if name in dashed else "solid"),
                                 hovertemplate=f"{name}<br>step %{{x}}: %{{y:.4g}}<extra></extra>"))
    fig.update_xaxes(title=x_title)
    fig.update_yaxes(title=y_title, type="log" if log_y else "linear", exponentformat="power")
    return layout(fig, title, legend=dict(orientation="h", y=-0.25))


def scale_vs_rank(ranks: Sequence[int], rules: dict[str, Sequence[float]], highlight: tuple[int, float] | None,
                  alpha: float) -> go.Figure:
    """The LoRA scale against r for each rule, log-log, with one (r, scale) point marked."""
    fig = go.Figure()
    for (name, ys), color in zip(rules.items(), PALETTE, strict=False):
        fig.add_trace(go.Scatter(x=list(ranks), y=list(ys), name=name, mode="lines+markers", line=dict(color=color),
                                 hovertemplate=f"{name}<br>r = %{{x}}: scale %{{y:.4g}}<extra></extra>"))
    if highlight:
        r, s = highlight
        fig.add_trace(go.Scatter(x=[r], y=[s], mode="markers+text", marker=dict(size=13, color="black", symbol="x"),
                                 text=[f"r={r}: {s:g}"], textposition="top right", name="chosen",
                                 hovertemplate="r = %{x}: scale %{y:.4g}<extra></extra>"))
    fig.update_xaxes(title="rank r", type="log", tickvals=list(ranks))
    fig.update_yaxes(title="scale applied to B·A", type="log")
    return layout(fig, f"Scale against rank at α = {alpha:g}", legend=dict(orientation="h", y=-0.25))


def layer_bars(names: Sequence[str], values: Sequence[float], title: str, y_title: str) -> go.Figure:
    """One bar per layer (e.g. ‖ΔW‖/‖W‖), in model order."""
    fig = go.Figure(go.Bar(x=list(names), y=list(values), marker_color=BLUE,
                           hovertemplate="%{x}<br>%{y:.4g}<extra></extra>"))
    fig.update_xaxes(title="layer", showticklabels=len(names) <= 24)
    fig.update_yaxes(title=y_title)
    return layout(fig, title)
