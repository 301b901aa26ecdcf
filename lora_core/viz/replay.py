"""Figures for the research replays of the LoRA paper (Hu et al. 2021, arXiv 2106.09685): which weights to
adapt (Table 5), how much rank (Tables 6 and 18), subspace similarity φ (Figures 3 and 4) and the amplification
factor (Table 7). The other papers' replays are drawn by `replay_tradeoffs.py`.

Each builder takes the "results" part of a replay result (`lora_core.research.record`) and returns a figure;
the numbers were computed by `lora_core.research.experiments`, nothing here changes them.
"""

from __future__ import annotations

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from .style import BLUE, GREY, ORANGE, PALETTE, layout

LOSS = "held-out loss (nats per completion token)"


def _mean(spread: dict) -> float | None:
    return spread["mean"]


def _std(spread: dict) -> float:
    return spread["std"] or 0.0


def zoomed_range(values: list[float | None], errors: list[float]) -> list[float] | None:
    """A y range around the bars' tops, so differences of a few hundredths stay visible (the axis says so)."""
    shown = [(v, e) for v, e in zip(values, errors, strict=True) if v is not None]
    if not shown:
        return None
    low, high = min(v - e for v, e in shown), max(v + e for v, e in shown)
    pad = max(0.05 * (high - low), 0.01)
    return [max(0.0, low - 4 * pad), high + pad]


def targets_bars(results: dict) -> go.Figure:
    """Held-out loss per target set at one budget of trainable parameters, seed spread as error bars."""
    rows = results["configs"]
    y, err = [_mean(r["test_loss"]) for r in rows], [_std(r["test_loss"]) for r in rows]
    fig = go.Figure(go.Bar(
        x=[r["label"] for r in rows], y=y, error_y=dict(type="data", array=err), marker_color=BLUE,
        text=[f"r={r['r']}" for r in rows], textposition="inside",
        customdata=[[r["r"], r["trainable"], 100 * r["vs_budget"], r["test_loss"]["n"]] for r in rows],
        hovertemplate="%{x}, r=%{customdata[0]}<br>held-out loss %{y:.3f} ± %{error_y.array:.3f} "
                      "(%{customdata[3]} seeds)<br>%{customdata[1]:,} trainable (%{customdata[2]:+.1f}% of the "
                      "budget)<extra></extra>"))
    fig.update_layout(xaxis_title="adapted weights (each given the rank that fits the budget)",
                      yaxis_title=LOSS + ", axis zoomed", yaxis_range=zoomed_range(y, err))
    return layout(fig, f"Which weights to adapt with {results['budget']:,} trainable parameters (lower is better)")


def rank_sweep(results: dict) -> go.Figure:
    """Held-out loss (left axis) and multi-reference BLEU (right axis) against r, on a log₂ axis."""
    rows = results["ranks"]
    ranks = [r["r"] for r in rows]
    fig = make_subplots(specs=[[{"secondary_y": True}]])
    for key, name, color, right in (("test_loss", "held-out loss", BLUE, False), ("bleu", "BLEU", ORANGE, True)):
        fig.add_trace(go.Scatter(
            x=ranks, y=[_mean(r[key]) for r in rows], name=name, mode="lines+markers", marker_color=color,
            error_y=dict(type="data", array=[_std(r[key]) for r in rows]),
            customdata=[[r["trainable"], r[key]["n"]] for r in rows],
            hovertemplate="r=%{x}: " + name + " %{y:.3f} ± %{error_y.array:.3f} (%{customdata[1]} seeds)<br>"
                          "%{customdata[0]:,} trainable<extra></extra>"), secondary_y=right)
    fig.update_xaxes(type="log", tickvals=ranks, ticktext=[str(r) for r in ranks], title="rank r (log₂ scale)")
    fig.update_yaxes(title_text=LOSS, secondary_y=False)
    fig.update_yaxes(title_text="BLEU (0–100, several references per input)", secondary_y=True)
    targets = ", ".join(t.removesuffix("_proj") for t in results["targets"])
    return layout(fig, f"How much rank is enough: LoRA on {targets}, α = {results['lora_alpha']}",
                  legend=dict(orientation="h", y=1.02, x=1, xanchor="right", yanchor="bottom"))


def _phi_heatmap(grid: list[list[float]], first: bool) -> go.Heatmap:
    return go.Heatmap(z=grid, x=list(range(1, len(grid[0]) + 1)), y=list(range(1, len(grid) + 1)), zmin=0, zmax=1,
                      colorscale="Viridis", showscale=first, colorbar=dict(title="φ"),
                      hovertemplate="i=%{y}, j=%{x}: φ %{z:.3f}<extra></extra>")


def subspace_heatmaps(results: dict) -> go.Figure:
    """φ(A_r=8, A_r=64, i, j) for q and v of the middle block, and the same for two random matrices."""
    q, v = results["modules"]["q_proj"], results["modules"]["v_proj"]
    grids = (("q: r=8 against r=64", q["r8_vs_r64"]), ("v: r=8 against r=64", v["r8_vs_r64"]),
             ("two random Gaussian matrices (8 and 64 rows)", q["random_r8_vs_r64"]))
    fig = make_subplots(rows=3, cols=1, subplot_titles=[title for title, _ in grids], vertical_spacing=0.12)
    for k, (_, grid) in enumerate(grids):
        fig.add_trace(_phi_heatmap(grid, k == 0), row=k + 1, col=1)
        fig.update_yaxes(title_text="i (r=8)", autorange="reversed", row=k + 1, col=1)
    fig.update_xaxes(title_text="j (r=64)", row=3, col=1)
    layout(fig, f"Subspace similarity φ(i, j) of the A matrices, block {results['layer']}: "
                "1 = the same span, 0 = orthogonal")
    return fig.update_layout(height=580, margin_t=90)  # room for the subplot titles under the title


def seed_heatmaps(results: dict, size: int = 16) -> go.Figure:
    """φ between two r=64 adapters trained from different seeds, the top-left size × size corner, q and v."""
    mods = results["modules"]
    fig = make_subplots(rows=1, cols=2, subplot_titles=["q: seed 0 against seed 1", "v: seed 0 against seed 1"])
    for k, proj in enumerate(("q_proj", "v_proj")):
        grid = [row[:size] for row in mods[proj]["seed_vs_seed_r64"][:size]]
        fig.add_trace(_phi_heatmap(grid, k == 0), row=1, col=k + 1)
        fig.update_xaxes(title_text="j (seed 1)", row=1, col=k + 1)
        fig.update_yaxes(title_text="i (seed 0)", autorange="reversed", row=1, col=k + 1)
    layout(fig, f"Two seeds at r=64, block {results['layer']}: the first {size} directions of each")
    return fig.update_layout(margin_t=90)


def phi_by_layer(results: dict) -> go.Figure:
    """φ(1, 1) between the r=8 and r=64 adapters in every block, beside what two random subspaces give."""
    mods = results["modules"]
    n = len(mods["q_proj"]["top1_by_layer"])
    fig = go.Figure()
    for proj, color in (("q_proj", BLUE), ("v_proj", ORANGE)):
        fig.add_trace(go.Scatter(x=list(range(n)), y=mods[proj]["top1_by_layer"], mode="lines+markers",
                                 name=proj.removesuffix("_proj"), marker_color=color,
                                 hovertemplate="block %{x}: φ(1, 1) %{y:.3f}<extra></extra>"))
    baseline = mods["q_proj"]["baseline_r8_vs_r64"][0][0]
    fig.add_trace(go.Scatter(x=[0, n - 1], y=[baseline, baseline], mode="lines", name="random subspaces",
                             line=dict(color=GREY, dash="dash"),
                             hovertemplate="random: φ(1, 1) = %{y:.4f}<extra></extra>"))
    fig.add_vline(x=results["layer"], line_dash="dot", line_color=GREY)
    fig.update_layout(xaxis_title="block", yaxis_title="φ(1, 1), top direction of r=8 in r=64 (0–1)")
    return layout(fig, "Is the top direction shared in every block?")


def amplification_bars(results: dict, proj: str = "q_proj") -> go.Figure:
    """‖UᵀWV‖_F with U, V the top-r singular vectors of ΔW, of W itself, or of a random matrix (Table 7)."""
    rows = [(f"r={row['r']}", row["modules"][proj]["table7"]) for row in results["ranks"]]
    fig = go.Figure()
    for key, name, color in (("proj_delta_dirs", "ΔW's directions", ORANGE), ("proj_W_dirs", "W's own top directions",
                             BLUE), ("proj_random_dirs", "random directions", GREY)):
        fig.add_trace(go.Bar(
            x=[label for label, _ in rows], y=[t[key] for _, t in rows], name=name, marker_color=color,
            customdata=[[t["delta_norm"], t["factor"]] for _, t in rows],
            hovertemplate="%{x}, " + name + ": ‖UᵀWV‖_F %{y:.3f}<br>‖ΔW‖_F %{customdata[0]:.3f}, amplification "
                          "‖ΔW‖_F / ‖UᵀWV‖_F(ΔW's) %{customdata[1]:.2f}<extra></extra>"))
    fig.update_layout(barmode="group", xaxis_title="adapter rank", yaxis_type="log",
                      yaxis_title="‖UᵀWV‖_F (Frobenius norm, log scale)")
    return layout(fig, f"How much of W ({proj.removesuffix('_proj')}, block {results['layer']}) lies in each "
                       "set of directions")


def amplification_by_layer(results: dict) -> go.Figure:
    """The amplification factor ‖ΔW‖_F / ‖UᵀWV‖_F in every block, for q and v at each rank."""
    fig = go.Figure()
    k = 0
    for row in results["ranks"]:
        for proj in ("q_proj", "v_proj"):
            factors = row["modules"][proj]["factor_by_layer"]
            fig.add_trace(go.Scatter(x=list(range(len(factors))), y=factors, mode="lines+markers",
                                     name=f"{proj.removesuffix('_proj')}, r={row['r']}", marker_color=PALETTE[k],
                                     hovertemplate="block %{x}: factor %{y:.2f}<extra></extra>"))
            k += 1
    fig.add_hline(y=1, line_dash="dash", line_color=GREY)
    fig.update_layout(xaxis_title="block", yaxis_type="log",
                      yaxis_title="amplification factor (ratio of Frobenius norms, log scale)")
    return layout(fig, "Amplification factor by block (1 = ΔW adds no more than W already holds there)")
