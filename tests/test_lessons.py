"""The lessons are committed the way the README says: paired, in sync, without outputs, indexed.

Each lesson is `lessons/NN_name.ipynb` paired by jupytext with a py:percent `lessons/NN_name.py`
(the reviewed source; see jupytext.toml). Executing them is not done here: `make test` runs
`pytest --nbmake lessons` as its own step, with LORA_FAST=1, so that a lesson's failure shows up
under the lesson's own name.
"""

import json
import re
from itertools import zip_longest
from pathlib import Path

import jupytext
import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
LESSONS = ROOT / "lessons"
NOTEBOOKS = sorted(LESSONS.glob("[0-9][0-9]_*.ipynb"))
SCRIPTS = sorted(LESSONS.glob("[0-9][0-9]_*.py"))


def cells(notebook) -> list[tuple[str, str]]:
    """(cell type, source without trailing blank lines) for each cell: what a reader sees."""
    return [(c.cell_type, c.source.rstrip()) for c in notebook.cells]


def test_there_are_lessons_and_jupytext_pairs_them():
    assert NOTEBOOKS, "no lessons/NN_name.ipynb found"
    config = (ROOT / "jupytext.toml").read_text()
    assert re.search(r'^formats\s*=\s*"ipynb,py:percent"', config, re.M), \
        "jupytext.toml must pair ipynb with py:percent"


def test_every_lesson_file_has_its_pair():
    stems_nb = {p.stem for p in NOTEBOOKS}
    stems_py = {p.stem for p in SCRIPTS}
    assert stems_nb == stems_py, (f"unpaired lessons: notebooks without .py {sorted(stems_nb - stems_py)}, "
                                  f".py without notebook {sorted(stems_py - stems_nb)}; run `jupytext --sync`")


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_and_script_have_the_same_cells(notebook: Path):
    script = notebook.with_suffix(".py")
    assert script.exists(), f"{script.name} is missing"
    text = script.read_text()
    assert text.startswith("# ---\n# jupyter:") and "format_name: percent" in text.split("# ---", 2)[1], \
        f"{script.name} is not a jupytext py:percent file"
    from_ipynb = cells(nbformat.read(notebook, as_version=4))
    from_py = cells(jupytext.reads(text, fmt="py:percent"))
    if from_ipynb != from_py:
        first = next(i for i, (a, b) in enumerate(zip_longest(from_ipynb, from_py)) if a != b)
        pytest.fail(f"{notebook.name} and {script.name} differ at cell {first} ({len(from_ipynb)} and "
                    f"{len(from_py)} cells): run `jupytext --sync lessons/{script.name}`")


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_is_committed_without_outputs(notebook: Path):
    raw = json.loads(notebook.read_text())
    dirty = [i for i, c in enumerate(raw["cells"]) if c["cell_type"] == "code"
             and (c.get("outputs") or c.get("execution_count") is not None)]
    assert not dirty, (f"{notebook.name} has outputs or execution counts in cells {dirty}: "
                       f"clear them with `jupyter nbconvert --clear-output --inplace lessons/{notebook.name}`")


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_lesson_follows_the_house_conventions(notebook: Path):
    nb = nbformat.read(notebook, as_version=4)
    code = [c.source for c in nb.cells if c.cell_type == "code"]
    first = code[0]
    for shown in ("torch.__version__", "transformers.__version__", "peft.__version__", "describe_device"):
        assert shown in first, f"{notebook.name}: the first code cell must print {shown}"
    assert "HF_HUB_OFFLINE" in first, f"{notebook.name}: the first code cell must keep the lesson offline"
    assert "LORA_FAST" in first, f"{notebook.name}: the first code cell must read LORA_FAST"
    titles = [c.source for c in nb.cells if c.cell_type == "markdown" and "check yourself" in c.source.lower()]
    assert titles, f"{notebook.name}: end with a 'Check yourself' section"
    assert "assert" in code[-1], f"{notebook.name}: the last cell must compute and assert the answers"


def test_readme_indexes_every_lesson_in_order():
    readme = (LESSONS / "README.md").read_text()
    positions = []
    for notebook in NOTEBOOKS:
        assert notebook.name in readme, f"lessons/README.md does not list {notebook.name}"
        positions.append(readme.index(notebook.name))
    assert positions == sorted(positions), "lessons/README.md must list the lessons in teaching (file) order"
