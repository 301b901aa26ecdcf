"""Plotly figure builders shared by the app's pages and the lessons: one picture, one place.

    from lora_core import viz
    fig = viz.weight_vs_adapter(768, 2304, r=8)

Builders take numbers computed elsewhere in lora_core and return a `plotly.graph_objects.Figure`;
they compute nothing a user reads off the chart. One submodule per topic; all are re-exported here.
"""

from .ledger import ledger_bars, weight_vs_adapter
from .style import PALETTE, layout

__all__ = ["PALETTE", "layout", "ledger_bars", "weight_vs_adapter"]
