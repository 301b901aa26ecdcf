"""Re-execute the lessons in place, so that the committed notebooks carry their outputs.

A learner who opens a lesson on GitHub sees its printed numbers and its pictures without running it
(plotly figures carry a PNG beside the interactive figure; see lora_core/teach/figure_images.py).
For each notebook: bring the .ipynb in step with its .py (jupytext --sync), run it top to bottom in a
fresh kernel from lessons/ (full runs: LORA_FAST is unset unless --fast), write it back with its
outputs, and sync the pair again (the .py keeps no outputs). A lesson that raises is not written.

    .venv/bin/python lessons/execute.py                        # every lesson (what `make lessons` runs)
    .venv/bin/python lessons/execute.py lessons/02_*.ipynb     # some of them

tests/test_lessons.py checks what this leaves: every code cell executed in order, no error, each
notebook under MAX_BYTES, and each plotly figure with its PNG.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import nbformat
from jupytext.cli import jupytext
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError

LESSONS = Path(__file__).resolve().parent
MAX_BYTES = 1_000_000          # a committed notebook stays under ~1 MB (tests/test_lessons.py pins it)
CELL_TIMEOUT_S = 1800          # full runs: the longest cell (a real fine-tune on the CPU) takes minutes
PLOTLY = "application/vnd.plotly.v1+json"


def sync(notebook: Path) -> None:
    """jupytext --sync: the newer of the pair updates the other; outputs stay in the .ipynb only."""
    jupytext(["--sync", "--quiet", str(notebook)])


def figures(nb: nbformat.NotebookNode) -> tuple[int, int]:
    """(plotly figures, of which with a PNG) among the notebook's outputs."""
    bundles = [out.get("data", {}) for cell in nb.cells if cell.cell_type == "code" for out in cell.outputs]
    plots = [data for data in bundles if PLOTLY in data]
    return len(plots), sum("image/png" in data for data in plots)


def execute(notebook: Path) -> bool:
    """Run one lesson in place; print its time, size and figures; return whether it ran without error."""
    sync(notebook)
    nb = nbformat.read(notebook, as_version=4)
    start = time.perf_counter()
    # record_timing=False: no per-cell timestamps in the file, so a re-run changes only what it shows;
    # coalesce_streams: one stdout block per cell, as Jupyter shows it.
    client = NotebookClient(nb, timeout=CELL_TIMEOUT_S, kernel_name="python3", record_timing=False,
                            coalesce_streams=True, resources={"metadata": {"path": str(notebook.parent)}})
    try:
        client.execute()
    except CellExecutionError as err:
        print(f"{notebook.name}: FAILED after {time.perf_counter() - start:.0f} s, not written\n{err}")
        return False
    seconds = time.perf_counter() - start
    nbformat.write(nb, notebook)
    sync(notebook)
    size = notebook.stat().st_size
    plots, pngs = figures(nb)
    flag = "" if size < MAX_BYTES else f"  OVER {MAX_BYTES / 1e6:.0f} MB"
    print(f"{notebook.name}: {seconds:.0f} s, {size / 1e3:.0f} kB, {plots} figures, {pngs} with PNG{flag}",
          flush=True)
    return True


def main(argv: list[str] | None = None) -> int:
    """Execute the lessons named (default: all, in order); exit 1 when any failed."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("notebooks", nargs="*", type=Path, help="default: lessons/NN_*.ipynb")
    parser.add_argument("--fast", action="store_true", help="LORA_FAST=1: fewer steps (what CI runs)")
    args = parser.parse_args(argv)
    notebooks = [p.resolve() for p in args.notebooks] or sorted(LESSONS.glob("[0-9][0-9]_*.ipynb"))
    # The kernel inherits this environment: offline unless the caller opened the Hub, full runs unless --fast.
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    if args.fast:
        os.environ["LORA_FAST"] = "1"
    else:
        os.environ.pop("LORA_FAST", None)
    failed = [nb.name for nb in notebooks if not execute(nb)]
    if failed:
        print(f"failed: {', '.join(failed)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
