"""Figures and tables for the Variants study (lora_core.research.variants): DoRA's magnitude-direction scatter
(arXiv 2402.09353, Figure 2), LoRA+ and LoRA-FA learning curves, OLoRA and PiSSA at step 0 and after, and the cost.

Each builder takes a part of a study result (or a live check) and returns a figure or table rows; every number was
computed by lora_core.research, nothing here changes it.
"""

from __future__ import annotations

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from .replay import LOSS
from .style import GREY, PALETTE, layout

SYMBOLS = ("circle", "square", "diamond", "cross", "triangle-up", "x", "star", "hexagon", "pentagon", "triangle-down",
           "circle-open", "square-open")
MIB = 2**20
DM, DD = "ΔM: mean |change of a row's norm|", "ΔD: mean (1 − cos) of each row with its start"


def _number(value: float | None, fmt: str = "+.2f") -> str:
    return "n/a" if value is None else format(value, fmt)


def _scatter(fig: go.Figure, points: list[dict], fitted: dict, col: int, legend: bool, max_layer: int) -> None:
    """One method's points: colour is the layer, the symbol the checkpoint; the least-squares line over them."""
    steps = sorted({p["step"] for p in points})
    for k, step in enumerate(steps):
        pts = [p for p in points if p["step"] == step]
        fig.add_trace(go.Scatter(
            x=[p["dD"] for p in pts], y=[p["dM"] for p in pts], mode="markers", name=f"step {step}",
            legendgroup=f"step {step}", showlegend=legend,
            marker=dict(symbol=SYMBOLS[k % len(SYMBOLS)], size=8, color=[p["layer"] for p in pts],
                        coloraxis="coloraxis", line=dict(width=0.5, color="white")),
            customdata=[[p["module"], p["step"]] for p in pts],
            hovertemplate="%{customdata[0]}, step %{customdata[1]}<br>ΔD %{x:.3g}, ΔM %{y:.3g}<extra></extra>"),
            row=1, col=col)
    if fitted.get("slope") is not None:
        xs = [min(p["dD"] for p in points), max(p["dD"] for p in points)]
        fig.add_trace(go.Scatter(x=xs, y=[fitted["intercept"] + fitted["slope"] * x for x in xs], mode="lines",
                                 line=dict(color=GREY, dash="dash"), name="least-squares line", showlegend=legend,
                                 legendgroup="fit", hoverinfo="skip"), row=1, col=col)
    fig.update_coloraxes(colorscale="Viridis", cmin=0, cmax=max(max_layer, 1), colorbar_title="layer")


def decomposition_scatter(part: dict, proj: str | None = None) -> go.Figure:
    """ΔM against ΔD for full fine-tuning, LoRA and DoRA: one point per matrix and checkpoint (DoRA's Figure 2)."""
    proj = proj or part["headline"]
    methods = part["methods"]
    titles = []
    for m in methods:
        f = part["fits"][m][proj]
        titles.append(f"{part['runs'][m]['label'].split(',')[0]}: r = {_number(f['correlation'])}, "
                      f"slope {_number(f['slope'], '.3g')}")
    fig = make_subplots(rows=1, cols=len(methods), subplot_titles=titles, horizontal_spacing=0.07)
    points = {m: [p for p in part["runs"][m]["points"] if p["proj"] == proj] for m in methods}
    top = max((p["layer"] for pts in points.values() for p in pts), default=0)
    for col, m in enumerate(methods, start=1):
        _scatter(fig, points[m], part["fits"][m][proj], col, col == 1, top)
        fig.update_xaxes(title_text="ΔD", row=1, col=col)
    fig.update_yaxes(title_text="ΔM", row=1, col=1)
    fig.update_layout(height=430, legend=dict(orientation="h", y=-0.2))
    return layout(fig, f"Magnitude against direction, {proj} of every layer at every checkpoint "
                       "(each panel its own axes, as in the paper)")


def decomposition_rows(part: dict, paper: dict) -> list[dict]:
    """Per method: our correlation and slope per projection and pooled, the number of points, the paper's value."""
    quoted = {"full": "full fine-tuning", "lora": "LoRA", "dora": "DoRA"}
    rows = []
    for m in part["methods"]:
        row = {"method": part["runs"][m]["label"]}
        for proj in [*part["projections"], "all"]:
            f = part["fits"][m][proj]
            row[f"r ({proj})"] = _number(f["correlation"])
            row[f"slope ({proj})"] = _number(f["slope"], ".3g")
        row["points (headline)"] = part["fits"][m][part["headline"]]["n"]
        key = next((k for k in paper["numbers"] if k.endswith(quoted[m])), None)
        row["paper's r (query)"] = _number(paper["numbers"][key]) if key else "n/a"
        rows.append(row)
    return rows


def checkpoint_rows(part: dict) -> list[dict]:
    """The correlation across layers within each checkpoint: the same question with training time held fixed."""
    proj = part["headline"]
    rows = []
    for m in part["methods"]:
        row = {"method": part["runs"][m]["label"]}
        for f in part["fits"][m][proj]["by_step"]:
            row[f"step {f['step']}"] = _number(f["correlation"])
        rows.append(row)
    return rows


def loss_curves(runs: list[dict], title: str) -> go.Figure:
    """Training loss at every step (left) and held-out loss at every checkpoint (right), one colour per run."""
    fig = make_subplots(rows=1, cols=2, subplot_titles=("training loss (each step's batch)", "held-out loss"))
    for k, run in enumerate(runs):
        color = PALETTE[k % len(PALETTE)]
        steps = list(range(1, len(run["train_loss"]) + 1))
        hover = "step %{x}: %{y:.3f}<extra>%{fullData.name}</extra>"
        fig.add_trace(go.Scatter(x=steps, y=run["train_loss"], mode="lines", name=run["label"],
                                 legendgroup=run["label"], line=dict(color=color), hovertemplate=hover), row=1, col=1)
        fig.add_trace(go.Scatter(x=[p["step"] for p in run["held_out"]], y=[p["loss"] for p in run["held_out"]],
                                 mode="lines+markers", name=run["label"], legendgroup=run["label"], showlegend=False,
                                 line=dict(color=color), hovertemplate=hover), row=1, col=2)
    fig.update_xaxes(title_text="optimizer step")
    fig.update_yaxes(title_text="nats per completion token", row=1, col=1)
    fig.update_yaxes(title_text=LOSS, row=1, col=2)
    fig.update_layout(height=420, legend=dict(orientation="h", y=-0.25))
    return layout(fig, title)


def comparison_rows(part: dict, lora_seeds: dict) -> list[dict]:
    """Each variant's final held-out loss against plain LoRA's, with LoRA's seed spread and what the gap reads as."""
    spread = lora_seeds["final_loss"]
    rows = [{"run": part["lora"]["label"], "trainable": part["lora"]["trainable"],
             "held-out loss, start": f"{part['lora']['held_out'][0]['loss']:.3f}",
             "held-out loss, end": f"{spread['mean']:.3f} ± {spread['std'] or 0:.3f} ({spread['n']} seed(s))",
             "vs LoRA": "", "reading": "the yardstick"}]
    for row in part["rows"]:
        rows.append({"run": row["label"], "trainable": row["trainable"],
                     "held-out loss, start": f"{row['start_loss']:.3f}",
                     "held-out loss, end": f"{row['final_loss']:.3f}",
                     "vs LoRA": f"{row['vs_lora']:+.3f}",
                     "reading": row["reading"] + (f" (diverged: {row['diverged']})" if row["diverged"] else "")})
    return rows


def step0_rows(step0: list[dict]) -> list[dict]:
    """Where each init starts: the model's largest logit change, the start error, ‖ΔW‖ and what the init took from W."""
    return [{"init": s["label"], "max |Δ logit| vs the base": f"{s['max_logit_change']:.2e}",
             "max |W_res + ΔW − W|": f"{s['max_start_error']:.2e}", "mean ‖ΔW‖_F": f"{s['mean_delta_norm']:.3f}",
             "mean ‖W − W_res‖_F": f"{s['mean_taken_from_w']:.3f}", "mean ‖W‖_F": f"{s['mean_w_norm']:.3f}"}
            for s in step0]


def cost_bars(cost: dict) -> go.Figure:
    """Step time over LoRA's (left) and the counted bytes of one step (right), per variant."""
    rows = cost["rows"]
    labels = [r["label"].split(",")[0] for r in rows]
    fig = make_subplots(rows=1, cols=2, subplot_titles=("step time ÷ LoRA's (median, interleaved)",
                                                        "bytes one step holds besides the frozen weights (MiB)"))
    fig.add_trace(go.Bar(x=labels, y=[r["vs_lora"] for r in rows], marker_color=PALETTE[0], showlegend=False,
                         text=[f"{r['ms']:.0f} ms" for r in rows], textposition="outside",
                         hovertemplate="%{x}: %{y:.2f}× LoRA<extra></extra>"), row=1, col=1)
    for k, (key, name) in enumerate((("gradients_bytes", "gradients"), ("optimizer_bytes", "optimizer states"),
                                     ("activations_bytes", "activations saved for backward"))):
        fig.add_trace(go.Bar(x=labels, y=[r[key] / MIB for r in rows], name=name, marker_color=PALETTE[k + 1],
                             hovertemplate="%{x}: %{y:,.1f} MiB<extra>" + name + "</extra>"), row=1, col=2)
    fig.update_layout(barmode="stack", height=420, legend=dict(orientation="h", y=-0.25))
    fig.update_yaxes(title_text="× LoRA", row=1, col=1)
    fig.update_yaxes(title_text="MiB", row=1, col=2)
    return layout(fig, "What each variant costs per training step, measured here")


def cost_rows(cost: dict) -> list[dict]:
    return [{"variant": r["label"], "ms / step": round(r["ms"], 1), "× LoRA": round(r["vs_lora"], 3),
             "trainable": r["trainable"], "gradients MiB": round(r["gradients_bytes"] / MIB, 2),
             "optimizer MiB": round(r["optimizer_bytes"] / MIB, 2),
             "activations MiB": round(r["activations_bytes"] / MIB, 1),
             "activations × LoRA": round(r["activations_vs_lora"], 3) if r["activations_vs_lora"] is not None else None}
            for r in cost["rows"]]


def bench_rows(bench: dict) -> list[dict]:
    """The benchmark's rows for DoRA and two adapters (its own model and shapes), as it wrote them."""
    return [{"case": r["case"], "ms / step": None if r["ms"] is None else round(r["ms"], 1),
             "× frozen": ", ".join(f"{mode} {v:.3f}" for mode, v in (r["vs_frozen"] or {}).items()),
             "trainable": r["trainable"],
             "optimizer MiB": None if r["optimizer_bytes"] is None else round(r["optimizer_bytes"] / MIB, 2),
             "activations MiB": None if r["activations_bytes"] is None else round(r["activations_bytes"] / MIB, 1)}
            for r in bench["rows"]]


def paper_rows(papers: list[dict]) -> list[dict]:
    return [{"method": p["method"], "where": p["where"], "setting": p["setting"],
             "numbers": "; ".join(f"{k}: {v}" for k, v in p["numbers"].items()) or "(in words)",
             "finding": p["finding"]} for p in papers]


def live_scatter(live: dict) -> go.Figure:
    """The live run's ΔM against ΔD: every adapted matrix after every step, colour the layer, symbol the step."""
    points = live["run"]["points"]
    fitted = live["fits"]["all"]
    fig = make_subplots(rows=1, cols=1)
    _scatter(fig, points, fitted, 1, True, max((p["layer"] for p in points), default=0))
    fig.update_layout(xaxis_title=DD, yaxis_title=DM, height=420, legend=dict(orientation="h", y=-0.25))
    return layout(fig, f"{live['label']}: ΔM against ΔD after each step (r = {_number(fitted['correlation'])} over "
                       f"{fitted['n']} points)")
