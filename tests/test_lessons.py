"""The lessons are committed the way the README says: paired, in sync, executed with their outputs, indexed.

Each lesson is `lessons/NN_name.ipynb` paired by jupytext with a py:percent `lessons/NN_name.py`
(the reviewed source; see jupytext.toml). The notebook is committed executed (`make lessons`, i.e.
lessons/execute.py): every code cell run in order without error, under 1 MB, each plotly figure with a
PNG beside it so that it shows on GitHub. Executing them is not done here: `make test` runs
`pytest --nbmake lessons` as its own step, with LORA_FAST=1, so that a lesson's failure shows up
under the lesson's own name (nbmake runs a copy: the committed outputs are not rewritten).

Lessons `import lora_core` as an installed package (`pip install -e .`, done by `make setup`; pinned in
test_packaging.py) and start with one shared setup call, `FAST = setup(...)` from lora_core/teach/lesson.py,
tested here too.
"""

import ast
import base64
import importlib.util
import io
import json
import os
import re
import warnings
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
from lora_core.teach import figure_images, lesson

ROOT = Path(__file__).resolve().parents[1]
LESSONS = ROOT / "lessons"
NOTEBOOKS = sorted(LESSONS.glob("[0-9][0-9]_*.ipynb"))
SCRIPTS = sorted(LESSONS.glob("[0-9][0-9]_*.py"))
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

# lessons/execute.py is a script (what `make lessons` runs), not a package: load it by path.
_spec = importlib.util.spec_from_file_location("execute_lessons", LESSONS / "execute.py")
execute = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(execute)


@pytest.fixture(autouse=True)
def renderer(monkeypatch):
    """plotly's renderers; setup() sets the default one, restored after each test for the tests that follow."""
    import plotly.io as pio

    monkeypatch.setattr(pio.renderers, "default", pio.renderers.default)
    return pio.renderers


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


def code_cells(notebook: Path) -> list[dict]:
    return [c for c in json.loads(notebook.read_text())["cells"] if c["cell_type"] == "code"]


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_is_committed_executed_top_to_bottom(notebook: Path):
    # A learner reads the committed outputs on GitHub: they must come from one clean run, in order.
    counts = [c.get("execution_count") for c in code_cells(notebook)]
    assert counts == list(range(1, len(counts) + 1)), \
        (f"{notebook.name} is not executed top to bottom in one kernel (execution counts {counts}): "
         f"run `make lessons LESSONS=lessons/{notebook.name}`")
    errors = [i for i, c in enumerate(code_cells(notebook))
              if any(out["output_type"] == "error" for out in c.get("outputs", []))]
    assert not errors, f"{notebook.name}: code cells {errors} end in an error"


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_is_small(notebook: Path):
    size = notebook.stat().st_size
    assert size < execute.MAX_BYTES, (f"{notebook.name} is {size / 1e6:.2f} MB, over {execute.MAX_BYTES / 1e6:.0f} MB: "
                                      "shrink what a cell prints or draws (a figure's data, an image's size)")


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_every_plotly_figure_carries_a_png(notebook: Path):
    # The interactive figure (plotly's JSON mimetype) shows where JavaScript runs; the PNG where it does
    # not (GitHub). figure_images.py draws it; `make lessons` must run where kaleido finds a Chromium.
    bundles = [out.get("data", {}) for c in code_cells(notebook) for out in c.get("outputs", [])]
    plots = [data for data in bundles if execute.PLOTLY in data]
    missing = [i for i, data in enumerate(plots)
               if not base64.b64decode(data.get("image/png", "")).startswith(PNG_SIGNATURE)]
    assert not missing, (f"{notebook.name}: figures {missing} of {len(plots)} have no PNG: re-execute with kaleido "
                         f"and a Chromium installed ({figure_images.why_no_images() or 'both are here'})")
    assert not any("text/html" in data and "plotly" in "".join(data["text/html"]) for data in bundles), \
        f"{notebook.name}: a figure is embedded as HTML (a 4 MB plotly.js bundle): use the lessons' setup()"


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


def test_setup_silences_only_the_peft_transformers_deprecation(capsys):
    from conftest import tiny_gpt2

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        lesson.setup()
        peft.get_peft_model(tiny_gpt2(), peft.LoraConfig(r=2, target_modules=["c_attn"]))  # reads the alias
        warnings.warn("another deprecation", FutureWarning, stacklevel=1)
    shown = [str(w.message) for w in caught]
    assert not any("is_gradient_checkpointing" in m for m in shown), shown
    assert "another deprecation" in shown, "other warnings still reach the learner"


# ---------------------------------------------------------------- figures: interactive and a PNG ---

PLOTLY_JSON = "application/vnd.plotly.v1+json"


def shown(fig) -> dict:
    """The output Jupyter records for `fig.show()` or a figure at the end of a cell (IPython's protocol)."""
    return fig._repr_mimebundle_()




@pytest.mark.skipif(figure_images.why_no_images() is not None,
                    reason=f"no PNG export here: {figure_images.why_no_images()}")
def test_setup_makes_figures_interactive_and_png(renderer, capsys):
    import plotly.graph_objects as go
    from PIL import Image

    lesson.setup()
    assert "figures: interactive + PNG (kaleido" in capsys.readouterr().out
    assert renderer.default == "plotly_mimetype+lora_png"
    bundle = shown(go.Figure(go.Heatmap(z=[[1, 2], [3, 4]]), layout=dict(height=400)))
    assert PLOTLY_JSON in bundle, "the interactive figure must stay"
    png = base64.b64decode(bundle["image/png"])
    assert Image.open(io.BytesIO(png)).size == (700, 400), "plotly's default width, the figure's own height"
    wide = shown(go.Figure(layout=dict(width=3000, height=2000)))
    assert Image.open(io.BytesIO(base64.b64decode(wide["image/png"]))).size == \
        (figure_images.MAX_WIDTH, figure_images.MAX_HEIGHT), "a PNG is capped, so a notebook stays small"


def test_without_a_browser_figures_stay_interactive(renderer, monkeypatch, capsys):
    import plotly.graph_objects as go

    monkeypatch.setenv("BROWSER_PATH", "/nonexistent/chromium")
    lesson.setup()
    assert "figures: interactive only, no PNG (BROWSER_PATH='/nonexistent/chromium'" in capsys.readouterr().out
    bundle = shown(go.Figure(go.Scatter(y=[1, 3, 2])))
    assert PLOTLY_JSON in bundle and "image/png" not in bundle


def test_without_kaleido_figures_stay_interactive(renderer, monkeypatch):
    def missing(name: str) -> str:
        raise figure_images.PackageNotFoundError(name)

    monkeypatch.setattr(figure_images, "version", missing)
    assert figure_images.use_static_images() == \
        "figures: interactive only, no PNG (kaleido is not installed (pip install -r requirements-dev.txt))"
    assert renderer.default == "plotly_mimetype"


def test_a_browser_that_fails_warns_once_and_leaves_the_figure_interactive(monkeypatch):
    import plotly.graph_objects as go

    def broken(self):
        raise RuntimeError("the browser exited")

    monkeypatch.setattr(figure_images.Browser, "__init__", broken)
    exporter = figure_images.PngExporter()
    renderer = figure_images.StaticImageRenderer(exporter)
    with pytest.warns(UserWarning, match="figures stay interactive only, the PNG export failed: RuntimeError"):
        assert renderer.to_mimebundle(go.Figure().to_dict()) == {}
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # after one failure it stops trying, quietly
        assert renderer.to_mimebundle(go.Figure().to_dict()) == {}


def test_a_picture_figure_is_stored_compactly():
    # Lesson 04's image_pair: 128×128 pixels twice. As JSON numbers it was 620 kB of the notebook; as
    # float32 base64 it is 4 B a pixel (plus a third for base64).
    from lora_core import viz

    picture = torch.rand(128, 128)
    data = viz.image_pair(picture, picture, 8).to_plotly_json()["data"]
    stored = len(json.dumps(shown_json(data)))
    assert stored < 2 * 128 * 128 * 4 * 1.4, f"{stored} characters for two 128×128 pictures"


def shown_json(data) -> list:
    """What plotly's JSON mimetype writes for a figure's traces (numpy arrays become base64 typed arrays)."""
    import plotly.io as pio

    return json.loads(pio.to_json({"data": data}))["data"]


def test_compact_png_is_smaller_and_looks_the_same():
    import numpy as np
    from PIL import Image, ImageDraw

    chart = Image.new("RGBA", (300, 200), "white")
    draw = ImageDraw.Draw(chart)
    for i, colour in enumerate(["#1f77b4", "#ff7f0e", "#2ca02c"]):  # anti-aliased-ish lines over a gradient
        draw.line([(0, 20 + 60 * i), (300, 180 - 50 * i)], fill=colour, width=3)
    chart.paste(Image.linear_gradient("L").resize((100, 50)).convert("RGBA"), (10, 140))
    png = io.BytesIO()
    chart.save(png, "PNG")
    small = figure_images.compact_png(png.getvalue())
    assert len(small) < len(png.getvalue())
    back = np.asarray(Image.open(io.BytesIO(small)).convert("RGB"), dtype=float)
    assert back.shape == (200, 300, 3) and np.abs(back - np.asarray(chart.convert("RGB"), dtype=float)).mean() < 2

    see_through = io.BytesIO()
    Image.new("RGBA", (30, 20), (0, 0, 0, 0)).save(see_through, "PNG")
    assert figure_images.compact_png(see_through.getvalue()) == see_through.getvalue(), \
        "transparent pixels are kept, not painted black"
