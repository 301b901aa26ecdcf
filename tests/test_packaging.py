"""lora_core is an installable package: `pip install -e .` finds this checkout from any folder (the lessons
rely on it), and `pip install .` ships every data file the package reads."""

import fnmatch
import os
import subprocess
import sys
import tomllib
from importlib.metadata import version
from pathlib import Path

from lora_core.teach import lesson

ROOT = Path(__file__).resolve().parents[1]


def test_lora_core_is_installed_from_this_checkout(tmp_path: Path):
    """Lessons run with the notebook's folder as cwd and no sys.path edits: only the install finds lora_core."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert lesson.DISTRIBUTION == project["name"]
    assert lesson.lora_core_version() == version(project["name"]) == project["version"], \
        "the installed metadata is stale or missing: run `make setup` (or `pip install --no-deps -e .`)"
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    find = "import importlib.util; print(importlib.util.find_spec('lora_core').origin)"
    found = subprocess.run([sys.executable, "-c", find], cwd=tmp_path, env=env,
                           capture_output=True, text=True, check=True).stdout.strip()
    assert Path(found) == ROOT / "lora_core" / "__init__.py"


def test_the_package_ships_every_data_file_lora_core_reads():
    """`pip install .` copies only the files pyproject's package-data names; a new data file must be named there."""
    package_data = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]
    missing = []
    for path in sorted((ROOT / "lora_core").rglob("*")):
        if not path.is_file() or path.suffix in {".py", ".pyc"} or "__pycache__" in path.parts:
            continue
        package = path.parent
        while not (package / "__init__.py").is_file():  # the data file belongs to the nearest package
            package = package.parent
        dotted = ".".join(package.relative_to(ROOT).parts)
        relative = path.relative_to(package).as_posix()
        if not any(fnmatch.fnmatch(relative, pattern) for pattern in package_data.get(dotted, [])):
            missing.append(f"{dotted}: {relative}")
    assert not missing, f"add these to [tool.setuptools.package-data] in pyproject.toml: {missing}"
