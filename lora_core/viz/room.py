"""The Room page's figure: the room's results against one knob, each learner's own runs highlighted, the spread of
each configuration shown, and the shipped replay and the paper's table in panels beside it."""

from __future__ import annotations

import html

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from .style import BLUE, GREY, ORANGE, PALETTE, RED, layout


def _axis_x(values: list, categorical: bool) -> list:
    """A categorical knob's values as text (a category axis), a numeric knob's as numbers."""
    return [str(v) for v in values] if categorical else list(values)


def room_board(data: dict, ref: dict | None = None) -> go.Figure:
    """Left: every shared result (grey; yours orange, larger) and each configuration's mean with a min–max bar.
    Middle and right, when given: the shipped replay's mean with its seeds' range, and the paper's numbers.
    Nicknames are escaped: plotly reads a few HTML tags in hover text, and a nickname is shown as typed."""
    panels = ["this room"]
    if ref is not None:
        panels.append("shipped replay")
        if ref.get("paper"):
            panels.append("the paper")
    fig = make_subplots(rows=1, cols=len(panels), subplot_titles=panels, horizontal_spacing=0.08)
    order = data["x_order"]
    categorical = any(isinstance(v, (str, bool)) for v in order)
    configs = list(dict.fromkeys(g["config"] for g in data["groups"]))
    for i, config in enumerate(configs):
        groups = [g for g in data["groups"] if g["config"] == config]
        xs = _axis_x([g["x"] for g in groups], categorical)
        fig.add_trace(go.Scatter(
            x=xs, y=[g["mean"] for g in groups], mode="lines+markers" if len(configs) == 1 else "markers",
            name=f"mean: {config}", marker=dict(size=11, symbol="diamond", color=PALETTE[i % len(PALETTE)]),
            error_y=dict(type="data", symmetric=False, array=[g["max"] - g["mean"] for g in groups],
                         arrayminus=[g["mean"] - g["min"] for g in groups], thickness=1.5, width=6),
            customdata=[[g["n"], g["min"], g["max"]] for g in groups],
            hovertemplate="%{x}: mean %{y:.4g} over %{customdata[0]} runs (min %{customdata[1]:.4g}, "
                          "max %{customdata[2]:.4g})<extra>" + config + "</extra>"), row=1, col=1)
    for own, colour, size, name in ((False, GREY, 7, "a learner's run"), (True, ORANGE, 13, "your run")):
        points = [p for p in data["points"] if p["own"] is own]
        if points:
            fig.add_trace(go.Scatter(
                x=_axis_x([p["x"] for p in points], categorical), y=[p["y"] for p in points], mode="markers", name=name,
                marker=dict(size=size, color=colour, line=dict(width=1, color="white")),
                text=[f"{html.escape(p['nickname'])} (seed {p['seed']}; {p['config']})" for p in points],
                hovertemplate="%{text}<br>%{x}: %{y:.4g}<extra></extra>"), row=1, col=1)
    if ref is not None:
        replay = ref["replay"]
        xs = _axis_x(replay["x"], categorical)
        fig.add_trace(go.Scatter(
            x=xs, y=replay["mean"], mode="lines+markers", name=replay["label"], marker=dict(color=BLUE),
            error_y=dict(type="data", symmetric=False,
                         array=[h - m for h, m in zip(replay["max"], replay["mean"], strict=True)],
                         arrayminus=[m - lo for m, lo in zip(replay["mean"], replay["min"], strict=True)])),
            row=1, col=2)
        if ref.get("paper"):
            paper = ref["paper"]
            fig.add_trace(go.Scatter(x=paper["x"], y=paper["y"], mode="lines+markers", name=paper["label"],
                                     marker=dict(color=RED)), row=1, col=3)
            fig.update_yaxes(title_text=paper["unit"], row=1, col=3)
    for col in range(1, len(panels) + 1):
        if data["log_x"]:
            fig.update_xaxes(type="log", dtick=0.30102999566, row=1, col=col)  # one tick per doubling
        elif categorical and col == 1:  # the board's own order (a sweep's, when one runs)
            fig.update_xaxes(type="category", categoryorder="array", categoryarray=_axis_x(order, True), row=1, col=1)
        elif categorical:
            fig.update_xaxes(type="category", row=1, col=col)
        fig.update_xaxes(title_text=data["x_title"], row=1, col=col)
    fig.update_yaxes(title_text=data["y_title"], row=1, col=1)
    better = "lower is better" if data["lower_is_better"] else "higher is better"
    return layout(fig, f"{data['y_title']} against {data['x_title']} ({better})", height=430,
                  legend=dict(orientation="h", y=-0.25))
