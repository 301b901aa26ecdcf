"""Figures for the interview answers and the claims check: one entry point for an Evidence's figure data.

`evidence_figure(spec)` turns the `figure` dict of a `teach.evidence.Evidence` into a plotly figure,
reusing the topic builders (dropout masks, codebooks, memory bars, curves, spectra) and adding two
plain ones here: overlaid histograms and labelled bars.
"""

from __future__ import annotations

import plotly.graph_objects as go
import torch

from .anatomy import dropout_masks
from .quant import codebook_levels, memory_bars
from .spectrum import curves, spectra
from .style import PALETTE, layout


def histograms(hists: dict[str, tuple[torch.Tensor, torch.Tensor]], title: str, x_title: str) -> go.Figure:
    """Several (bin edges, counts) histograms as outlines on one axis."""
    fig = go.Figure()
    for (name, (edges, counts)), color in zip(hists.items(), PALETTE, strict=False):
        centers = ((edges[1:] + edges[:-1]) / 2).tolist()
        fig.add_trace(go.Scatter(x=centers, y=counts.tolist(), mode="lines", name=name,
                                 line=dict(shape="hvh", color=color),
                                 hovertemplate=f"{name}<br>%{{x:.4f}}: %{{y:,.0f}}<extra></extra>"))
    fig.update_xaxes(title=x_title)
    fig.update_yaxes(title="count")
    return layout(fig, title, legend=dict(orientation="h", y=-0.25))


def bars(values: dict[str, float], title: str, y_title: str) -> go.Figure:
    """One bar per label, its value printed on top."""
    fig = go.Figure(go.Bar(x=list(values), y=list(values.values()), marker_color=PALETTE[: len(values)],
                           text=[f"{v:.3g}" for v in values.values()], textposition="outside",
                           hovertemplate="%{x}: %{y:.4g}<extra></extra>"))
    fig.update_yaxes(title=y_title)
    return layout(fig, title, showlegend=False)


def evidence_figure(spec: dict) -> go.Figure:
    """The figure an Evidence describes: spec["kind"] picks the builder, the other keys are its data."""
    kind = spec["kind"]
    if kind == "dropout":
        return dropout_masks(spec["trace"])
    if kind == "codebook":
        return codebook_levels(spec["books"], spec["density"])
    if kind == "memory":
        labels = {"full": "full fine-tuning", "lora": "LoRA", "qlora": "QLoRA"}
        return memory_bars({labels.get(k, k): v for k, v in spec["estimates"].items()})
    if kind == "curves":
        return curves(spec["series"], spec["title"], spec["y_title"], log_y=spec.get("log_y", False),
                      dashed=spec.get("dashed", ()))
    if kind == "spectra":
        return spectra(spec["series"], spec["title"])
    if kind == "histograms":
        return histograms(spec["hists"], spec["title"], spec["x_title"])
    if kind == "bars":
        return bars(spec["values"], spec["title"], spec["y_title"])
    raise ValueError(f"figure kind={kind!r} is not allowed: use dropout, codebook, memory, curves, spectra, "
                     "histograms or bars")
