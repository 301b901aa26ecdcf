"""The house rules, read from the imports (an AST walk of every file, never a grep).

- The root of lora_core is the library: its modules, and those of models/ and quant/, never import the
  subpackages that use it (teach, research, serve, bench, viz), not even inside a function.
- lora_core never imports streamlit.
- Pages (pages/*.py, app.py) only draw: they never import torch, and never touch `torch.` or `nn.`.
- lora_core has no import cycle, deferred imports inside functions included.
- No private name (`_name`) crosses a module boundary within lora_core and pages.

Each failure lists the offending file, line and import.
"""

from __future__ import annotations

import ast
import functools
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LIB = ROOT / "lora_core"
USES = ("teach", "research", "replay", "serve", "bench", "viz")  # the subpackages that use the library
PAGE_FILES = [*sorted((ROOT / "pages").glob("*.py")), ROOT / "app.py"]


@dataclass(frozen=True)
class Import:
    """One imported module (or, for `from m import name`, the module `name` comes from)."""

    file: Path
    line: int
    module: str               # absolute dotted name, e.g. "lora_core.teach.anatomy"
    names: tuple[str, ...]    # for `from m import a, b`: ("a", "b"); for `import m`: ()
    source: str               # the statement as written

    def __str__(self) -> str:
        return f"{shown(self.file)}:{self.line}: {self.source}"


def shown(path: Path) -> str:
    """A path as the failure message names it: relative to the repository when it is inside it."""
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def module_name(path: Path) -> str:
    """'lora_core/teach/anatomy.py' -> 'lora_core.teach.anatomy'; a package's __init__ -> the package."""
    parts = list((path.relative_to(ROOT) if path.is_relative_to(ROOT) else Path(path.name)).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def is_module(dotted: str) -> bool:
    """Whether a dotted name is a module or package of this repository."""
    path = ROOT.joinpath(*dotted.split("."))
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def _under_type_checking(node: ast.AST, parents: dict[ast.AST, ast.AST]) -> bool:
    while node in parents:
        node = parents[node]
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            return True
    return False


def imports_of(path: Path) -> list[Import]:
    """Every import in the file, at any depth (functions included), relative ones made absolute."""
    return _imports(path, path.read_text())


@functools.cache
def _imports(path: Path, text: str) -> list[Import]:
    tree = ast.parse(text, filename=str(path))
    parents = {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}
    package = module_name(path) if path.name == "__init__.py" else module_name(path).rpartition(".")[0]
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, (ast.Import, ast.ImportFrom)) or _under_type_checking(node, parents):
            continue
        source = ast.unparse(node)
        if isinstance(node, ast.Import):
            found += [Import(path, node.lineno, alias.name, (), source) for alias in node.names]
            continue
        base = node.module or ""
        if node.level:
            anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
            base = ".".join([*anchor, *([node.module] if node.module else [])])
        found.append(Import(path, node.lineno, base, tuple(a.name for a in node.names), source))
    return found


def targets(imp: Import) -> list[str]:
    """The modules an import loads: `from pkg import sub` loads pkg.sub when sub is a module."""
    if not imp.names:
        return [imp.module]
    subs = [f"{imp.module}.{name}" for name in imp.names if is_module(f"{imp.module}.{name}")]
    return subs if len(subs) == len(imp.names) else [imp.module, *subs]


def library_files(*under: str) -> list[Path]:
    return sorted(LIB.joinpath(*under).rglob("*.py"))


def _uses(module: str) -> bool:
    return any(module == f"lora_core.{u}" or module.startswith(f"lora_core.{u}.") for u in USES)


# --- the library never imports its uses ------------------------------------------------------------------
@pytest.mark.parametrize("files", [
    pytest.param(lambda: sorted(LIB.glob("*.py")), id="root modules"),
    pytest.param(lambda: library_files("quant") + library_files("models"), id="quant and models"),
])
def test_the_library_never_imports_teach_research_serve_bench_or_viz(files):
    bad = [line for path in files() for line in imports_of_uses(path)]
    assert not bad, "the library imports a subpackage that uses it:\n" + "\n".join(bad)


def imports_of_uses(path: Path) -> list[str]:
    """Each import in `path` that loads teach, research, serve, bench or viz."""
    return [f"{imp}  (loads {t})" for imp in imports_of(path) for t in targets(imp) if _uses(t)]


@pytest.mark.parametrize("source", ["from lora_core.teach import anatomy\n",
                                    "def f():\n    import lora_core.viz.spectrum\n",
                                    "from lora_core.serve.settings import load_settings\n"],
                         ids=["from import", "deferred import", "from a module of serve"])
def test_the_library_check_catches_an_import_of_a_use(tmp_path, source: str):
    (tmp_path / "probe.py").write_text(source)
    assert imports_of_uses(tmp_path / "probe.py")
    (tmp_path / "clean.py").write_text("from lora_core.config import LoraConfig\nimport torch\n")
    assert not imports_of_uses(tmp_path / "clean.py")


def test_lora_core_never_imports_streamlit():
    bad = [str(imp) for path in library_files() for imp in imports_of(path) if imp.module.split(".")[0] == "streamlit"]
    assert not bad, "lora_core imports streamlit:\n" + "\n".join(bad)


# --- pages only draw ---------------------------------------------------------------------------------------
def torch_names(tree: ast.AST) -> set[str]:
    """Names bound to torch or one of its modules: `import torch`, `import torch.nn as nn`, `from torch import nn`."""
    names = {"torch", "nn"}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {(a.asname or a.name).split(".")[0] for a in node.names if a.name.split(".")[0] == "torch"}
        elif isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "torch":
            names |= {a.asname or a.name for a in node.names}
    return names


def page_torch_use(path: Path) -> list[str]:
    """Each import of torch, and each line that reaches through a name bound to torch."""
    text = path.read_text()
    tree, lines = ast.parse(text, filename=str(path)), text.splitlines()
    bad = [f"{imp}" for imp in imports_of(path) if imp.module.split(".")[0] == "torch"]
    bound = torch_names(tree)
    used = sorted({node.lineno for node in ast.walk(tree)
                   if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in bound})
    return bad + [f"{shown(path)}:{line}: {lines[line - 1].strip()}" for line in used]


def test_pages_never_import_or_call_torch():
    bad = [line for path in PAGE_FILES for line in page_torch_use(path)]
    assert not bad, "a page does tensor work itself (move it into lora_core):\n" + "\n".join(bad)


@pytest.mark.parametrize("source", ["import torch\nx = torch.zeros(3)\n",
                                    "import torch.nn as nn\nlayer = nn.Linear(2, 2)\n",
                                    "from torch import linalg\n", "y = torch.linalg.svdvals(w)\n",
                                    "import torch as t\ny = t.ones(2)\n"],
                         ids=["import torch", "import torch.nn as nn", "from torch import", "torch. unimported",
                              "import torch as t"])
def test_the_page_check_catches_torch(tmp_path, source: str):
    """The check above can fail: each way of reaching torch is caught."""
    page = tmp_path / "probe.py"
    page.write_text(source)
    assert page_torch_use(page)
    (tmp_path / "clean.py").write_text("import streamlit as st\nst.title('no torch here')\n")
    assert not page_torch_use(tmp_path / "clean.py")


# --- no import cycles ----------------------------------------------------------------------------------------
def import_graph() -> dict[str, set[str]]:
    """lora_core module -> the lora_core modules it imports (deferred imports included)."""
    graph: dict[str, set[str]] = {}
    for path in library_files():
        edges = {t for imp in imports_of(path) for t in targets(imp) if t.split(".")[0] == "lora_core"}
        graph[module_name(path)] = edges - {module_name(path)}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def _cycle_report(component: list[str], graph: dict[str, set[str]]) -> str:
    members = set(component)
    lines = [f"  {a} -> {b}" for a in component for b in sorted(graph[a] & members)]
    return "cycle among " + ", ".join(component) + ":\n" + "\n".join(lines)


def test_no_import_cycles_in_lora_core():
    """Deferred imports count: quiz.py once imported concepts.py inside a function to hide a cycle."""
    graph = import_graph()
    found = cycles(graph)
    assert not found, "\n".join(_cycle_report(c, graph) for c in found)


def test_the_quiz_and_its_concepts_no_longer_import_each_other():
    """The cycle the issue found (interview.py and interview_concepts.py): the concepts table reads the Question
    type from question.py, never the quiz; and teach/ on its own has no cycle either."""
    graph = import_graph()
    assert "lora_core.teach.interview.question" in graph["lora_core.teach.interview.concepts"]
    assert "lora_core.teach.interview.quiz" not in graph["lora_core.teach.interview.concepts"]
    teach = {m: {t for t in edges if t.startswith("lora_core.teach")}
             for m, edges in graph.items() if m.startswith("lora_core.teach")}
    found = cycles(teach)
    assert not found, "\n".join(_cycle_report(c, teach) for c in found)


def test_the_cycle_finder_finds_a_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


# --- no private name crosses a module boundary ---------------------------------------------------------------------
def private_crossings(path: Path) -> list[str]:
    """`from ours import _name`, or `mod._name` where `mod` was imported from lora_core or pages."""
    ours = ("lora_core", "pages")
    tree = ast.parse(path.read_text(), filename=str(path))
    bad, modules = [], set()
    for imp in imports_of(path):
        if imp.module.split(".")[0] not in ours:
            continue
        bad += [f"{imp}  (private name {n})" for n in imp.names if n.startswith("_") and not n.startswith("__")]
    for node in ast.walk(tree):  # the names this file binds to our modules
        if isinstance(node, ast.Import):
            modules |= {a.asname or a.name.split(".")[0] for a in node.names if a.name.split(".")[0] in ours}
    for imp in imports_of(path):
        if imp.names and imp.module.split(".")[0] in ours:
            node = next(n for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.lineno == imp.line)
            modules |= {a.asname or a.name for a in node.names if is_module(f"{imp.module}.{a.name}")}
    where = shown(path)
    for node in ast.walk(tree):
        if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in modules
                and node.attr.startswith("_") and not node.attr.startswith("__")):
            bad.append(f"{where}:{node.lineno}: {ast.unparse(node)}  (private name of another module)")
    return bad


@pytest.mark.parametrize("source", ["from lora_core.config import _names\n",
                                    "from lora_core import inject\ninject._layer_index('a.0.b', None)\n",
                                    "import lora_core.inject as inj\ninj._is_target\n"],
                         ids=["from import", "module attribute", "aliased module attribute"])
def test_the_private_check_catches_a_crossing(tmp_path, source: str):
    (tmp_path / "probe.py").write_text(source)
    assert private_crossings(tmp_path / "probe.py")
    (tmp_path / "clean.py").write_text("from __future__ import annotations\nfrom lora_core import inject\n"
                                       "inject.matched_modules\nx = object()\nx._private = 1\n")
    assert not private_crossings(tmp_path / "clean.py")


def test_no_private_name_crosses_a_module_boundary():
    files = library_files() + PAGE_FILES
    bad = [line for path in files for line in private_crossings(path)]
    assert not bad, "a private name is used outside its module:\n" + "\n".join(bad)
