"""Figures for a LoRA layer's anatomy: a block's module tree, dropout's zeros, the init modes."""

from __future__ import annotations

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from ..teach.anatomy import ModuleNode
from .style import BLUE, GREEN, GREY, ORANGE, PALETTE, RED, layout

# Unmatched modules are tinted by role; a module LoRA wraps is solid orange.
_ROLE_TINT = {"block": "#ffffff", "attention": "#c6dbef", "mlp": "#c7e9c0", "norm": "#e8e8e8", "other": "#eeeeee"}


def module_treemap(nodes: list[ModuleNode], title: str) -> go.Figure:
    """A transformer block as a treemap, area ∝ parameters, LoRA targets in orange (`anatomy.block_tree`)."""
    colors = [ORANGE if n.matched else _ROLE_TINT[n.role] for n in nodes]
    fig = go.Figure(go.Treemap(
        ids=[n.name for n in nodes], parents=[n.parent for n in nodes], values=[n.params for n in nodes],
        labels=[f"{n.label} ✚ LoRA" if n.matched else n.label for n in nodes], branchvalues="total",
        marker=dict(colors=colors, line=dict(color="#555555", width=1)),
        customdata=[[n.name, n.kind, n.shape or "–", "yes" if n.matched else "no"] for n in nodes],
        texttemplate="<b>%{label}</b><br>%{customdata[1]} %{customdata[2]}<br>%{value:,} params",
        hovertemplate=("%{customdata[0]}<br>%{customdata[1]}, in→out %{customdata[2]}<br>"
                       "%{value:,} parameters<br>LoRA here: %{customdata[3]}<extra></extra>"),
        tiling=dict(pad=2), root=dict(color="#ffffff")))
    return layout(fig, title, height=420)


def dropout_masks(trace: dict) -> go.Figure:
    """Where the zeros are after one forward (`anatomy.trace_dropout`): red cells are exact zeros."""
    panels = trace["panels"]
    titles = [f"{p['name']}<br>{p['zero_fraction']:.1%} zeros" for p in panels]
    fig = make_subplots(rows=1, cols=len(panels), subplot_titles=titles, horizontal_spacing=0.05,
                        column_widths=[len(p["mask"][0]) + 6 for p in panels])
    for col, p in enumerate(panels, start=1):
        fig.add_trace(go.Heatmap(
            z=p["mask"], zmin=0, zmax=1, showscale=False, colorscale=[[0, "#f2f2f2"], [1, RED]], xgap=1, ygap=1,
            hovertemplate=f"{p['name']}<br>row %{{y}}, col %{{x}}: zero = %{{z}}<extra></extra>"), row=1, col=col)
        fig.update_xaxes(title_text="column", row=1, col=col)
    fig.update_yaxes(autorange="reversed", title_text="row (token or rank)", col=1)
    fig.update_yaxes(autorange="reversed")
    mode = "train" if trace["train"] else "eval"
    fig = layout(fig, f"lora_dropout p={trace['p']:g} in {mode} mode: a corner of each tensor", height=400)
    return fig.update_layout(margin=dict(t=110))  # room for the title above the panel titles


def init_gallery_chart(gallery: dict) -> go.Figure:
    """‖ΔW‖ and the largest output change at step 0, per init mode (`anatomy.init_gallery`)."""
    rows = gallery["rows"]
    names = [str(r["mode"]) for r in rows]
    fig = make_subplots(rows=1, cols=2, horizontal_spacing=0.12,
                        subplot_titles=("‖ΔW‖_F", "max |output − base output|"))
    for col, key in ((1, "delta_norm"), (2, "max_abs_output_change")):
        values = [r[key] for r in rows]
        fig.add_trace(go.Bar(
            x=names, y=values, marker_color=[GREY, BLUE, RED, GREEN][: len(rows)], showlegend=False,
            text=[f"{v:.3g}" for v in values], textposition="outside", customdata=[[r["init"]] for r in rows],
            hovertemplate="%{customdata[0]}<br>%{y:.6g}<extra></extra>"), row=1, col=col)
        fig.update_xaxes(title_text="init_lora_weights", row=1, col=col)
    fig.update_yaxes(title_text="Frobenius norm", row=1, col=1)
    fig.update_yaxes(title_text="largest absolute difference", row=1, col=2)
    r, out_f, in_f = gallery["r"], *gallery["shape"]
    fig = layout(fig, f"Step 0 of four inits on one {out_f}×{in_f} weight, r={r}", height=400)
    return fig.update_layout(margin=dict(t=90))


def pissa_spectrum(gallery: dict) -> go.Figure:
    """Singular values of W and of PiSSA's residual: the top r move into the adapter."""
    fig = go.Figure()
    for (name, values), color in zip(gallery["singular_values"].items(), PALETTE, strict=False):
        fig.add_trace(go.Scatter(x=list(range(1, len(values) + 1)), y=values, name=name, mode="lines+markers",
                                 marker=dict(size=4), line=dict(color=color),
                                 hovertemplate=f"{name}<br>σ_%{{x}} = %{{y:.4g}}<extra></extra>"))
    fig.add_vline(x=gallery["r"] + 0.5, line=dict(color=GREY, dash="dot"), annotation_text=f"r = {gallery['r']}")
    fig.update_xaxes(title="index i (largest first)")
    fig.update_yaxes(title="singular value σ_i", rangemode="tozero")
    return layout(fig, "PiSSA moves W's top r singular directions into B·A", legend=dict(orientation="h", y=-0.25))
