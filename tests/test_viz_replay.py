"""The research replays' figure builders and tables (lora_core.viz.replay, replay_tradeoffs, replay_tables): each
builder draws the result it is given, one trace per series, and the tables show the result's own numbers.

The results are the shipped ones (results/replay/NAME.json, or the folder LORA_LAB_REPLAY_RESULTS names); a
replay not run yet is skipped with the command that makes it. No result is built by hand here.
"""

import os
from pathlib import Path

import pytest
from conftest import ROOT

from lora_core import viz
from lora_core.research import papers, record
from lora_core.research.experiments import NAMES

SOURCE = Path(os.environ.get("LORA_LAB_REPLAY_RESULTS", ROOT / "results" / "replay"))


def shipped(name: str) -> dict:
    result = record.shipped(name, SOURCE)
    if result is None:
        pytest.skip(f"no {name} result in {SOURCE}: run `python -m lora_core.replay run {name} --out results/replay`")
    return result


def test_targets_bars_draw_one_bar_per_configuration_with_its_seed_spread():
    res = shipped("targets")["results"]
    (bars,) = viz.targets_bars(res).data
    assert list(bars.x) == [row["label"] for row in res["configs"]]
    assert list(bars.y) == [row["test_loss"]["mean"] for row in res["configs"]]
    assert list(bars.error_y.array) == [row["test_loss"]["std"] for row in res["configs"]]


def test_rank_sweep_draws_loss_and_bleu_against_r():
    res = shipped("rank")["results"]
    fig = viz.rank_sweep(res)
    loss, bleu = fig.data
    assert list(loss.x) == [row["r"] for row in res["ranks"]] == list(bleu.x)
    assert list(bleu.y) == [row["bleu"]["mean"] for row in res["ranks"]]
    assert fig.layout.xaxis.type == "log"


def test_subspace_figures_draw_the_phi_grids_and_the_random_baseline():
    res = shipped("subspace")["results"]
    q = res["modules"]["q_proj"]
    heat = viz.subspace_heatmaps(res).data
    assert len(heat) == 3 and [list(row) for row in heat[0].z] == q["r8_vs_r64"]
    seeds = viz.seed_heatmaps(res, size=16).data
    assert len(seeds) == 2 and len(seeds[0].z) == min(16, len(q["seed_vs_seed_r64"]))
    layers = viz.phi_by_layer(res).data
    assert len(layers) == 3 and list(layers[0].y) == q["top1_by_layer"]
    assert layers[2].y[0] == q["baseline_r8_vs_r64"][0][0]


def test_amplification_figures_draw_three_projections_per_rank_and_each_factor_by_block():
    res = shipped("amplification")["results"]
    bars = viz.amplification_bars(res).data
    assert len(bars) == 3 and all(len(b.x) == len(res["ranks"]) for b in bars)
    assert list(bars[0].y) == [row["modules"]["q_proj"]["table7"]["proj_delta_dirs"] for row in res["ranks"]]
    assert len(viz.amplification_by_layer(res).data) == 2 * len(res["ranks"])


def test_intruder_figures_draw_one_curve_per_run_and_the_lambda_trade_off():
    res = shipped("intruders")["results"]
    assert len(viz.intruder_curve(res).data) == len(res["runs"])
    points = res["reduction"]["points"]
    plain = viz.intruder_tradeoff(res)
    assert len(plain.data) == 2 and list(plain.data[0].x) == [p["test_loss"] for p in points]
    marked = viz.intruder_tradeoff(res, highlight=points[-1]["lambda"])
    assert len(marked.data) == 3 and marked.data[2].x[0] == points[-1]["test_loss"]
    assert [row["intruders left"] for row in viz.reduction_rows(res)] == [p["intruders"] for p in points]


def test_forgetting_figures_draw_each_curve_the_base_and_every_projections_rank():
    res = shipped("forgetting")["results"]
    curves = viz.learn_forget(res).data
    assert len(curves) == len(res["curves"]) + 1
    first = next(iter(res["curves"].values()))["curve"]
    assert list(curves[0].y) == [p["english_ppl"] for p in first]
    assert len(viz.full_delta_rank(res).data) == len(res["full_delta_ranks"])


def test_learning_rate_figures_mark_each_sweeps_best_rate():
    res = shipped("learning_rate")["results"]
    best = [key for key in ("lora", "full") if res[key]["best_lr"] is not None]
    fig = viz.lr_sweep(res)
    assert len(fig.data) == 2 + len(best) and fig.layout.xaxis.type == "log"
    assert len(viz.attention_vs_all(res).data) == 1


@pytest.mark.parametrize("name", NAMES)
def test_measured_and_provenance_rows_show_the_results_own_numbers(name):
    result = shipped(name)
    rows = viz.measured_rows(result)
    assert rows and all(isinstance(row, dict) for row in rows)
    provenance = {row["what"]: row["value"] for row in viz.provenance_rows(result)}
    assert provenance["command"] == result["command"] and provenance["scale"] == result["scale"]
    assert provenance["commit"].startswith(str(result["commit"]))


def test_measured_rows_refuse_an_unknown_replay_naming_the_allowed_ones():
    with pytest.raises(ValueError, match="name='nope' is not allowed") as err:
        viz.measured_rows({"name": "nope", "results": {}})
    assert all(name in str(err.value) for name in NAMES)


def test_quote_rows_print_every_number_the_paper_gives():
    for name in NAMES:
        quotes = papers.quotes_for(name)
        rows = viz.quote_rows(quotes)
        assert len(rows) == len(quotes)
        for row, q in zip(rows, quotes, strict=True):
            for label, value in q.numbers.items():
                assert f"{label}: {value}" in row["numbers"]
            assert row["numbers"] or not q.numbers
