"""Figures for the replays of three later papers, each a trade-off between learning the task and keeping the base:
intruder dimensions (Shuttleworth et al. 2024, arXiv 2410.21228), learns less and forgets less (Biderman et al.
2024, arXiv 2405.09673) and learning rates (Schulman and Thinking Machines 2025, "LoRA Without Regret").

Each builder takes the "results" part of a replay result (`lora_core.research.record`) and returns a figure.
"""

from __future__ import annotations

import plotly.graph_objects as go

from .replay import LOSS, zoomed_range
from .style import BLUE, GREEN, GREY, ORANGE, PALETTE, RED, layout

PPL = "perplexity of unrelated English (lower = less forgotten)"


def intruder_curve(results: dict) -> go.Figure:
    """Intruder dimensions among the top-k directions of q and v in every block, against the threshold ε."""
    fig = go.Figure()
    for k, (label, run) in enumerate(results["runs"].items()):
        counts = run["counts"]
        eps = sorted(next(iter(counts.values()))["by_epsilon"], key=float)
        fig.add_trace(go.Scatter(
            x=[float(e) for e in eps], y=[sum(c["by_epsilon"][e] for c in counts.values()) for e in eps],
            mode="lines+markers", name=label, marker_color=PALETTE[k],
            hovertemplate=label + ", ε = %{x}: %{y} intruders<extra></extra>"))
    fig.add_vline(x=results["threshold_epsilon"], line_dash="dot", line_color=GREY)
    matrices = 2 * results["layers"]
    fig.update_layout(xaxis_title="ε: a direction is an intruder if its best |cosine| with W's is below ε",
                      yaxis_title=f"intruders (top {results['top_k']} of each of {matrices} matrices)")
    return layout(fig, "Intruder dimensions against the threshold ε (q and v, every block)")


def intruder_tradeoff(results: dict, highlight: float | None = None) -> go.Figure:
    """Held-out loss against English perplexity as the intruders of the r=8 adapter are scaled by λ."""
    points, base = results["reduction"]["points"], results["base"]
    fig = go.Figure(go.Scatter(
        x=[p["test_loss"] for p in points], y=[p["english_ppl"] for p in points], mode="lines+markers+text",
        text=[f"λ={p['lambda']:g}" for p in points], textposition="top center", name="LoRA r=8, intruders × λ",
        marker_color=BLUE, customdata=[[p["lambda"], p["intruders"], p["bleu"]] for p in points],
        hovertemplate="λ = %{customdata[0]}: held-out loss %{x:.3f}, perplexity %{y:.2f}<br>%{customdata[1]} "
                      "intruders left, BLEU %{customdata[2]:.1f}<extra></extra>"))
    fig.add_trace(go.Scatter(x=[base["test_loss"]], y=[base["english_ppl"]], mode="markers", name="base model",
                             marker=dict(color=GREY, symbol="diamond", size=11),
                             hovertemplate="base: held-out loss %{x:.3f}, perplexity %{y:.2f}<extra></extra>"))
    chosen = [p for p in points if highlight is not None and p["lambda"] == highlight]
    if chosen:
        p = chosen[0]
        fig.add_trace(go.Scatter(x=[p["test_loss"]], y=[p["english_ppl"]], mode="markers", name=f"λ = {p['lambda']:g}",
                                 marker=dict(color=RED, size=16, symbol="circle-open", line=dict(width=3)),
                                 hovertemplate=f"λ = {p['lambda']:g}: {p['intruders']} intruders left<extra></extra>"))
    fig.update_layout(xaxis_title=LOSS, yaxis_title=PPL)
    return layout(fig, "Shrinking the intruders: what the task loses against what English gets back")


def learn_forget(results: dict) -> go.Figure:
    """The learning-forgetting curve: held-out loss (x) against English perplexity (y), one point per evaluation."""
    fig = go.Figure()
    for (label, run), color in zip(results["curves"].items(), (BLUE, ORANGE, GREEN), strict=False):
        curve = run["curve"]
        fig.add_trace(go.Scatter(
            x=[p["test_loss"] for p in curve], y=[p["english_ppl"] for p in curve], mode="lines+markers+text",
            text=[str(p["step"]) for p in curve], textposition="top center", name=label, marker_color=color,
            customdata=[[p["step"], p["bleu"]] for p in curve],
            hovertemplate=label + ", step %{customdata[0]}: held-out loss %{x:.3f}, perplexity %{y:.2f}, BLEU "
                          "%{customdata[1]:.1f}<extra></extra>"))
    base = results["base"]
    fig.add_trace(go.Scatter(x=[base["test_loss"]], y=[base["english_ppl"]], mode="markers", name="base model",
                             marker=dict(color=GREY, symbol="diamond", size=11),
                             hovertemplate="base: held-out loss %{x:.3f}, perplexity %{y:.2f}<extra></extra>"))
    fig.update_layout(xaxis_title=LOSS + " (learned: left)", yaxis_title=PPL + " (forgotten: up)")
    return layout(fig, "Learning against forgetting, step by step (labels: optimizer steps)")


def full_delta_rank(results: dict) -> go.Figure:
    """The rank that holds 90% of full fine-tuning's ‖ΔW‖_F² in every block, one line per projection."""
    fig = go.Figure()
    for k, (proj, ranks) in enumerate(results["full_delta_ranks"].items()):
        fig.add_trace(go.Scatter(
            x=list(range(len(ranks["rank_90"]))), y=ranks["rank_90"], mode="lines+markers",
            name=proj.removesuffix("_proj"), marker_color=PALETTE[k],
            hovertemplate=proj + ", block %{x}: rank %{y} of " + str(ranks["full_rank"]) + "<extra></extra>"))
    fig.add_hline(y=results["lora_r"], line_dash="dash", line_color=RED,
                  annotation_text=f"LoRA's r = {results['lora_r']}", annotation_position="bottom right")
    fig.update_layout(xaxis_title="block", yaxis_title="rank holding 90% of ‖ΔW‖_F² (number of directions)")
    return layout(fig, "How many directions full fine-tuning's update uses")


def lr_sweep(results: dict) -> go.Figure:
    """Held-out loss against the learning rate for LoRA and full fine-tuning, each sweep's best marked."""
    fig = go.Figure()
    for key, color in (("lora", BLUE), ("full", ORANGE)):
        sweep = results[key]
        points = sweep["points"]
        fig.add_trace(go.Scatter(
            x=[p["lr"] for p in points], y=[None if p["diverged"] else p["test_loss"] for p in points],
            mode="lines+markers", name=sweep["label"], marker_color=color,
            customdata=[[p["bleu"] if p["bleu"] is not None else float("nan")] for p in points],
            hovertemplate=sweep["label"] + ", lr %{x:.1e}: held-out loss %{y:.3f}, BLEU %{customdata[0]:.1f}"
                          "<extra></extra>"))
        best = next((p for p in points if p["lr"] == sweep["best_lr"]), None)
        if best is not None:
            fig.add_trace(go.Scatter(x=[best["lr"]], y=[best["test_loss"]], mode="markers",
                                     name=f"best {sweep['label']}: lr {best['lr']:.1e}",
                                     marker=dict(color=color, symbol="star", size=16, line=dict(width=1)),
                                     hovertemplate="best: lr %{x:.1e}, held-out loss %{y:.3f}<extra></extra>"))
    fig.update_layout(xaxis_type="log", xaxis_exponentformat="power", xaxis_title="learning rate (log scale)",
                      yaxis_title=LOSS)
    return layout(fig, "Each method's best learning rate (a diverged run leaves a gap)")


def attention_vs_all(results: dict) -> go.Figure:
    """Held-out loss of LoRA r=8 on the attention projections only against every linear layer."""
    rows = results["attention_vs_all"]
    labels = list(rows)
    y, err = [rows[k]["test_loss"]["mean"] for k in labels], [rows[k]["test_loss"]["std"] or 0.0 for k in labels]
    fig = go.Figure(go.Bar(
        x=labels, y=y, marker_color=[BLUE, GREEN][:len(labels)], error_y=dict(type="data", array=err),
        customdata=[[rows[k]["trainable"], rows[k]["test_loss"]["n"]] for k in labels],
        hovertemplate="%{x}: held-out loss %{y:.3f} ± %{error_y.array:.3f} (%{customdata[1]} seeds)<br>"
                      "%{customdata[0]:,} trainable<extra></extra>"))
    fig.update_layout(xaxis_title="LoRA r=8 on", yaxis_title=LOSS + ", axis zoomed", yaxis_range=zoomed_range(y, err))
    return layout(fig, "Attention only against all linear layers, at the same rank")
