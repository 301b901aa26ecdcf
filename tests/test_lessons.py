"""The lessons are committed the way the README says: paired, in sync, without outputs, indexed.

Each lesson is `lessons/NN_name.ipynb` paired by jupytext with a py:percent `lessons/NN_name.py`
(the reviewed source; see jupytext.toml). Executing them is not done here: `make test` runs
`pytest --nbmake lessons` as its own step, with LORA_FAST=1, so that a lesson's failure shows up
under the lesson's own name.

Lessons `import lora_core` as an installed package (`pip install -e .`, done by `make setup`; pinned in
test_packaging.py) and start with one shared setup call, `FAST = setup(...)` from lora_core/teach/lesson.py,
tested here too.
"""

import ast
import json
import os
import re
from importlib.metadata import version
from itertools import zip_longest
from pathlib import Path

import huggingface_hub.constants
import jupytext
import nbformat
import peft
import pytest
import torch
import transformers

import lora_core as lc
from lora_core.teach import lesson

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


def calls_the_shared_setup(source: str) -> bool:
    """True when `source` imports lesson.setup from lora_core and assigns `FAST = setup(...)`."""
    tree = ast.parse(source)
    imported = any(isinstance(node, ast.ImportFrom) and node.module == "lora_core.teach.lesson"
                   and any(alias.name == "setup" and alias.asname is None for alias in node.names)
                   for node in tree.body)
    assigned = any(isinstance(node, ast.Assign) and [ast.unparse(t) for t in node.targets] == ["FAST"]
                   and isinstance(node.value, ast.Call) and ast.unparse(node.value.func) == "setup"
                   for node in tree.body)
    return imported and assigned


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_lesson_follows_the_house_conventions(notebook: Path):
    nb = nbformat.read(notebook, as_version=4)
    code = [c.source for c in nb.cells if c.cell_type == "code"]
    first = code[0]
    # The versions, the device, HF_HUB_OFFLINE and LORA_FAST are handled once, by the shared setup
    # (test_setup_* below pin what it prints and returns); the cell still says so to the learner.
    assert calls_the_shared_setup(first), \
        f"{notebook.name}: the first code cell must run `from lora_core.teach.lesson import setup; FAST = setup(...)`"
    assert "HF_HUB_OFFLINE" in first, f"{notebook.name}: the first code cell must say the lesson runs offline"
    assert "LORA_FAST" in first, f"{notebook.name}: the first code cell must say what LORA_FAST (FAST) means"
    for cell in code:
        assert "sys.path" not in cell, f"{notebook.name}: lora_core is installed (pip install -e .); no sys.path edits"
        assert not re.search(r"environ\S*\W+LORA_FAST", cell), \
            f"{notebook.name}: read LORA_FAST through setup(), not os.environ (one meaning for FAST)"
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


# ------------------------------------------------------------------------------- the shared setup ---


def test_setup_prints_the_versions_and_the_device(capsys):
    lesson.setup("this lesson runs on the CPU")
    out = capsys.readouterr().out
    for name, shown in (("torch", torch.__version__), ("transformers", transformers.__version__),
                        ("peft", peft.__version__), ("lora_core", version("lora-lab"))):
        assert f"{name} {shown}" in out, f"setup() must print the {name} version"
    assert f"device: {lc.describe_device(lc.pick_device())} (this lesson runs on the CPU)" in out


@pytest.mark.parametrize(("value", "fast"), [("1", True), (None, False), ("0", False), ("yes", False)],
                         ids=["LORA_FAST=1", "LORA_FAST-unset", "LORA_FAST=0", "LORA_FAST=yes"])
def test_setup_returns_fast_only_for_LORA_FAST_1(monkeypatch, capsys, value: str | None, fast: bool):
    if value is None:
        monkeypatch.delenv("LORA_FAST", raising=False)
    else:
        monkeypatch.setenv("LORA_FAST", value)
    assert lesson.setup() is fast
    out = capsys.readouterr().out
    assert ("LORA_FAST=1: fewer steps" in out) is fast, "setup() must say what FAST means when it is on"


def test_setup_sets_HF_HUB_OFFLINE_when_unset(monkeypatch, capsys):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    # huggingface_hub read the variable at import; setup() must close the Hub in its constant too.
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    lesson.setup()
    assert os.environ["HF_HUB_OFFLINE"] == "1"
    assert huggingface_hub.constants.is_offline_mode()
    assert "HF_HUB_OFFLINE=1" in capsys.readouterr().out


def test_setup_keeps_a_HF_HUB_OFFLINE_the_learner_set(monkeypatch, capsys):
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")  # a learner who wants downloads
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    lesson.setup()
    assert os.environ["HF_HUB_OFFLINE"] == "0"
    assert not huggingface_hub.constants.is_offline_mode()
    assert "HF_HUB_OFFLINE=0" in capsys.readouterr().out
