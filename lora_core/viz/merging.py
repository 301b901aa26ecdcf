"""Figures for merging adapters step by step: TIES's trim, sign election and disjoint merge (arXiv 2306.01708),
and DARE's drop and rescale (arXiv 2311.03099); and the Merging studio's results: two tasks' held-out losses per
model, and one adapter merged at weight 1.0 in lora_core and in PEFT (peft issue 3761).

Each builder takes a walkthrough from `lora_core.teach.merging_steps` and draws its matrices as heatmaps on one
diverging scale centred at 0 (blue positive, red negative, white zero), the same range on every panel whose
values compare, so a value reads as the same colour wherever it appears. An entry a step set to exactly 0
(trimmed, overruled, dropped) is left out of the heatmap and shows the grey background: zero, not small.
"""

from __future__ import annotations

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from .style import BLUE, GREY, ORANGE, PURPLE, RED, layout

DIVERGING = "RdBu"  # red below 0, white at 0, blue above
ZEROED = "#bdbdbd"  # the plot background, seen where a step left an exact 0
SIGN_COLOURS = [[0, "#f4a582"], [1, "#92c5de"]]  # RdBu's light ends: the sign panel is labelled, not shaded


def _range(*grids: list) -> float:
    """The largest |value| over nested lists of numbers: ±range is the shared colour range (1 if all are 0)."""
    def flat(x):
        return [v for row in x for v in flat(row)] if isinstance(x, list) else [abs(x)]
    return max((v for g in grids for v in flat(g)), default=0.0) or 1.0


def _gaps(z: list) -> list:
    """The matrix with its exact zeros as None: plotly leaves those cells empty (the background shows)."""
    return [_gaps(row) if isinstance(row, list) else (None if row == 0 else row) for row in z]


def _heatmap(z: list, limit: float, name: str, show_scale: bool = False, fmt: str = ".3f") -> go.Heatmap:
    return go.Heatmap(z=z, zmin=-limit, zmax=limit, zmid=0, colorscale=DIVERGING, showscale=show_scale,
                      colorbar=dict(title="value", len=0.6), xgap=1, ygap=1, name=name,
                      hovertemplate=f"{name}<br>row %{{y}}, col %{{x}}: %{{z:{fmt}}}<extra></extra>")


def _matrix_axes(fig: go.Figure) -> None:
    # row 0 on top, as the matrix is written; no grid lines over the grey of zeroed cells
    fig.update_yaxes(autorange="reversed", showticklabels=False, showgrid=False, zeroline=False)
    fig.update_xaxes(showticklabels=False, showgrid=False, zeroline=False)


def ties_steps_figure(walk: dict) -> go.Figure:
    """One row per adapter (task tensor -> trimmed -> the values that agree with the elected sign, weighted),
    then a last row: the elected sign, TIES's merged matrix and the plain weighted sum (`ties_walkthrough`)."""
    n, (rows, cols) = walk["n_adapters"], walk["shape"]
    trim, elect, merge = walk["steps"]["trim"], walk["steps"]["elect"], walk["steps"]["merge"]
    limit = _range(walk["task_tensors"], walk["agreeing"], walk["merged"], walk["plain_sum"])
    entries, titles = walk["summary"]["entries"], []
    for i in range(n):
        titles += [f"adapter {i + 1}: task tensor τ{i + 1}", f"1. trim: {trim['kept'][i]} of {entries} kept",
                   f"3. agreeing, × w={walk['weights'][i]:g}: {merge['dropped'][i]} overruled"]
    titles += [f"2. elected sign: {elect['conflicts']} conflicts", f"3. TIES merge: {merge['empty']} empty",
               f"plain Σ wᵢ·τᵢ: max |TIES − Σ| {walk['summary']['max_abs_difference']:.3g}"]
    fig = make_subplots(rows=n + 1, cols=3, subplot_titles=titles, horizontal_spacing=0.04,
                        vertical_spacing=0.25 / (n + 1))
    for i in range(n):
        fig.add_trace(_heatmap(walk["task_tensors"][i], limit, f"τ{i + 1}", show_scale=i == 0), row=i + 1, col=1)
        fig.add_trace(_heatmap(_gaps(walk["trimmed"][i]), limit, f"τ{i + 1} trimmed"), row=i + 1, col=2)
        fig.add_trace(_heatmap(_gaps(walk["agreeing"][i]), limit, f"w{i + 1}·τ{i + 1}, agreeing"), row=i + 1, col=3)
    fig.add_trace(go.Heatmap(
        z=walk["sign"], zmin=-1, zmax=1, colorscale=SIGN_COLOURS, showscale=False, xgap=1, ygap=1,
        text=[["+" if s > 0 else "−" for s in row] for row in walk["sign"]], texttemplate="%{text}",
        name="elected sign", hovertemplate="elected sign<br>row %{y}, col %{x}: %{z:+d}<extra></extra>"),
        row=n + 1, col=1)
    fig.add_trace(_heatmap(_gaps(walk["merged"]), limit, "TIES merge"), row=n + 1, col=2)
    fig.add_trace(_heatmap(walk["plain_sum"], limit, "plain weighted sum"), row=n + 1, col=3)
    _matrix_axes(fig)
    fig.update_annotations(font_size=12)
    title = (f"TIES on {n} adapters ({rows}×{cols}), density {walk['density']:g}, sign by "
             f"{walk['majority_sign_method']}<br>trim → elect sign → disjoint merge (grey = 0)")
    fig = layout(fig, title, height=150 * (n + 1) + 120, plot_bgcolor=ZEROED)
    return fig.update_layout(margin=dict(t=110))  # room for the two-line title above the panel titles


def dare_figure(walk: dict) -> go.Figure:
    """τ, one DARE draw (dropped, survivors × 1/p), and the mean over many draws, which comes back to τ
    (`dare_walkthrough`)."""
    p, draws = walk["density"], walk["draws"]
    limit = _range(walk["original"], walk["dropped"], walk["mean"])
    titles = ["task tensor τ",
              f"one draw: {walk['zeroed']} dropped,<br>the rest × 1/p = {walk['rescale']:.3g}",
              f"mean of {draws} draws: max |mean − τ|<br>{walk['max_abs_error']:.3g} "
              f"(expected scale {walk['expected_error_scale']:.3g})"]
    fig = make_subplots(rows=1, cols=3, subplot_titles=titles, horizontal_spacing=0.04)
    fig.add_trace(_heatmap(walk["original"], limit, "τ", show_scale=True), row=1, col=1)
    fig.add_trace(_heatmap(_gaps(walk["dropped"]), limit, "dropped and rescaled"), row=1, col=2)
    fig.add_trace(_heatmap(walk["mean"], limit, f"mean over {draws} draws"), row=1, col=3)
    _matrix_axes(fig)
    fig.update_annotations(font_size=12)
    rows, cols = walk["shape"]
    title = f"DARE on one {rows}×{cols} task tensor, keep p = {p:g}: drop, rescale by 1/p (grey = 0)"
    fig = layout(fig, title, height=350, plot_bgcolor=ZEROED)
    return fig.update_layout(margin=dict(t=110))  # room for the two-line panel titles


# --- the Merging studio ------------------------------------------------------------------------------------------
# role -> (colour, marker symbol, size): the base, the two sources, the merge, and each type of a sweep
ROLE_MARKERS = {"base": (GREY, "circle", 14), "merged": (RED, "star", 18), "sweep": (PURPLE, "x", 10)}
SOURCE_COLOURS = (BLUE, ORANGE)
RATIO = "‖ΔW'‖ / ‖ΔW‖"  # the column merging_studio.one_adapter_check writes: the merge's size over its source's


def _points(group: list[dict], name: str, colour: str, symbol: str, size: int, x_title: str,
            y_title: str, labelled: bool = True) -> go.Scatter:
    return go.Scatter(x=[p["x"] for p in group], y=[p["y"] for p in group], text=[p["name"] for p in group],
                      mode="markers+text" if labelled else "markers", textposition="top center", name=name,
                      marker=dict(color=colour, symbol=symbol, size=size),
                      hovertemplate="%{text}<br>" + f"{x_title}: %{{x:.4f}}<br>{y_title}: %{{y:.4f}}<extra></extra>")


def task_losses_figure(points: list[dict], x_title: str, y_title: str,
                       title: str = "Held-out loss on both tasks (lower-left is better)") -> go.Figure:
    """One marker per model at (task-1 loss, task-2 loss): `points` are {"name", "role", "x", "y"} with role
    "base", "source", "merged" or "sweep" (`merging_studio.merge_and_score` / `sweep`). Dotted lines at the base's
    losses: a model left of the vertical one does better than the base on task 1, below the horizontal one on task 2.
    """
    fig = go.Figure()
    sweep = [p for p in points if p["role"] == "sweep"]
    if sweep:  # drawn first, under the named models; unlabelled (they crowd): the hover and the table name them
        fig.add_trace(_points(sweep, "every combination type", *ROLE_MARKERS["sweep"], x_title, y_title, False))
    sources = [p for p in points if p["role"] == "source"]
    for p, colour in zip(sources, SOURCE_COLOURS * len(sources), strict=False):
        fig.add_trace(_points([p], p["name"], colour, "diamond", 14, x_title, y_title))
    for role in ("base", "merged"):
        for p in (p for p in points if p["role"] == role):
            fig.add_trace(_points([p], p["name"], *ROLE_MARKERS[role], x_title, y_title))
            if role == "base":
                fig.add_vline(x=p["x"], line=dict(color=GREY, dash="dot"))
                fig.add_hline(y=p["y"], line=dict(color=GREY, dash="dot"))
    fig.update_xaxes(title=x_title)
    fig.update_yaxes(title=y_title)
    return layout(fig, title, height=460, legend=dict(orientation="h", y=-0.2))


def one_adapter_bars(rows: list[dict], sqrt_r: float) -> go.Figure:
    """‖ΔW'‖/‖ΔW‖ of one adapter merged at weight 1.0, rsLoRA off and on, one bar per library
    (`merging_studio.one_adapter_check`): 1 is the source unchanged; PEFT's rsLoRA copy sits at √r."""
    fig = go.Figure()
    for library, colour in (("lora_core", BLUE), ("PEFT", ORANGE)):
        mine = [row for row in rows if row["library"] == library]
        if mine:
            fig.add_trace(go.Bar(x=[f"rsLoRA {row['rsLoRA']}" for row in mine], y=[row[RATIO] for row in mine],
                                 name=library, marker_color=colour, texttemplate="%{y:.4g}", textposition="outside",
                                 hovertemplate=f"{library}, %{{x}}: {RATIO} = %{{y:.6g}}<extra></extra>"))
    fig.add_hline(y=1.0, line=dict(color=GREY, dash="dash"))
    fig.add_hline(y=sqrt_r, line=dict(color=RED, dash="dot"))
    fig.update_yaxes(title="‖ΔW'‖ / ‖ΔW‖ (merged over source)", rangemode="tozero")
    title = f"One adapter merged with weight 1.0<br><sup>dashed: 1, the source unchanged; dotted: √r = {sqrt_r:.4g}"
    return layout(fig, title + "</sup>", barmode="group", height=380)
