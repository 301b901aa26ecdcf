"""Plotly figure builders shared by the app's pages and the lessons: one picture, one place.

    from lora_core import viz
    fig = viz.weight_vs_adapter(768, 2304, r=8)

Builders take numbers computed elsewhere in lora_core and return a `plotly.graph_objects.Figure`;
they compute nothing a user reads off the chart. One submodule per topic; all are re-exported here.
"""

from .anatomy import dropout_masks, init_gallery_chart, module_treemap, pissa_spectrum
from .bench import step_time_bars, train_state_bars, wire_bars
from .interview import evidence_figure
from .ledger import ledger_bars, rank_sweep_chart, weight_vs_adapter
from .merging import dare_figure, ties_steps_figure
from .quant import codebook_levels, error_histograms, memory_bars, weight_histogram
from .replay import (
    amplification_bars,
    amplification_by_layer,
    phi_by_layer,
    rank_sweep,
    seed_heatmaps,
    subspace_heatmaps,
    targets_bars,
)
from .replay_tables import measured_rows, provenance_rows, quote_rows, reduction_rows
from .replay_tradeoffs import (
    attention_vs_all,
    full_delta_rank,
    intruder_curve,
    intruder_tradeoff,
    learn_forget,
    lr_sweep,
)
from .room import room_board
from .spectrum import curves, energy_curve, image_pair, layer_bars, scale_vs_rank, similarity_heatmap, spectra
from .style import PALETTE, layout

__all__ = [
    "PALETTE", "amplification_bars", "amplification_by_layer", "attention_vs_all", "codebook_levels", "curves",
    "dare_figure", "dropout_masks", "energy_curve", "error_histograms", "evidence_figure", "full_delta_rank",
    "image_pair", "init_gallery_chart", "intruder_curve", "intruder_tradeoff", "layer_bars", "layout",
    "learn_forget", "ledger_bars", "lr_sweep", "measured_rows", "memory_bars", "module_treemap", "phi_by_layer",
    "pissa_spectrum", "provenance_rows", "quote_rows", "rank_sweep", "rank_sweep_chart", "reduction_rows",
    "room_board", "scale_vs_rank", "seed_heatmaps", "similarity_heatmap", "spectra", "step_time_bars",
    "subspace_heatmaps", "targets_bars", "ties_steps_figure", "train_state_bars", "weight_histogram",
    "weight_vs_adapter", "wire_bars"
]
