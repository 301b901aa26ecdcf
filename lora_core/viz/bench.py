"""Figures for the speed benchmark (`lora_core.bench`): step time against the frozen floor, and the
training state (gradients + AdamW moments) each variant holds. Builders only draw the rows they get."""

from __future__ import annotations

from collections.abc import Sequence

import plotly.graph_objects as go

from .style import BLUE, GREEN, GREY, ORANGE, RED, layout

VARIANT_COLORS = {"frozen": GREY, "ours": BLUE, "peft": ORANGE, "full": RED}


def step_time_bars(rows: Sequence[dict], title: str, unit: str = "ms per step") -> go.Figure:
    """Horizontal bars of step time per case, labelled with × the frozen floor; a dotted line at the floor.

    `rows` are `lc.bench.case_rows(result)` (or any dicts with case, variant, ms, and vs_floor or vs_frozen).
    """
    rows = list(rows)[::-1]  # plotly draws the first category at the bottom; keep the table's order
    ratios = [r.get("vs_floor") or r.get("vs_frozen") for r in rows]
    fig = go.Figure(go.Bar(
        y=[r["case"] for r in rows], x=[r["ms"] for r in rows], orientation="h",
        marker_color=[VARIANT_COLORS.get(r["variant"], GREEN) for r in rows],
        text=[f"{x:.2f}× floor" if x else "" for x in ratios], textposition="outside",
        hovertemplate="%{y}<br>%{x:.1f} " + unit + "<br>%{text}<extra></extra>", cliponaxis=False))
    floor = next((r["ms"] for r in rows if r["variant"] == "frozen"), None)
    if floor is not None:
        fig.add_vline(x=floor, line=dict(color=GREY, dash="dot"), annotation_text="frozen",
                      annotation_position="top")
    fig.update_xaxes(title=unit, rangemode="tozero")
    return layout(fig, title, showlegend=False, height=max(260, 34 * len(rows) + 110))


def train_state_bars(rows: Sequence[dict], title: str) -> go.Figure:
    """Gradients and AdamW moments per case, stacked, in MiB on a log axis (full FT is ~500× LoRA)."""
    rows = [r for r in rows if r["variant"] != "frozen"][::-1]
    fig = go.Figure()
    for key, name, color in (("grad_mib", "gradients", BLUE), ("state_mib", "AdamW moments (m, v)", GREEN)):
        fig.add_trace(go.Bar(y=[r["case"] for r in rows], x=[r[key] for r in rows], orientation="h", name=name,
                             marker_color=color, hovertemplate="%{y}<br>" + name + ": %{x:,.2f} MiB<extra></extra>"))
    fig.update_xaxes(title="MiB held during training (log)", type="log")
    return layout(fig, title, barmode="group", height=max(260, 46 * len(rows) + 110),
                  legend=dict(orientation="h", y=-0.25))


def wire_bars(rows: Sequence[dict], title: str) -> go.Figure:
    """MB all-reduced per step per case on a log axis (full fine-tuning sends hundreds of times LoRA's)."""
    rows = list(rows)[::-1]
    fig = go.Figure(go.Bar(
        y=[r["case"] for r in rows], x=[r["MB all-reduced per step"] for r in rows], orientation="h",
        marker_color=[RED if r["case"].startswith("full") else BLUE for r in rows],
        text=[f"{r['MB all-reduced per step']:,.2f} MB" for r in rows], textposition="outside", cliponaxis=False,
        hovertemplate="%{y}<br>%{x:,.3f} MB per step<extra></extra>"))
    fig.update_xaxes(title="MB of gradients all-reduced per optimizer step (log)", type="log")
    return layout(fig, title, showlegend=False, height=max(240, 40 * len(rows) + 110))
