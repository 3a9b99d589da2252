"""A fresh install works: every import is declared, deptry can read every notebook, every module imports.

CI installs into a new virtual environment on each run (.ci/run), so a
package that only this machine has cannot hide a missing declaration; these
tests keep the declaration itself honest.
"""

import ast
import importlib
import json
import pkgutil
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import kdutils

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((ROOT / "notebooks").rglob("*.ipynb"))
DEPTRY = shutil.which("deptry") or str(Path(sys.executable).with_name("deptry"))


def _deptry(*args: str) -> subprocess.CompletedProcess:
    if not Path(DEPTRY).exists():
        pytest.fail("deptry is not installed: pip install -r requirements.txt (it is in the [test] extra)")
    return subprocess.run([DEPTRY, ".", "--no-ansi", *args], cwd=ROOT, capture_output=True, text=True, timeout=120)


def test_every_import_is_declared_and_every_declared_package_is_used():
    run = _deptry()
    assert run.returncode == 0, run.stdout + run.stderr
    assert "Skipping processing" not in run.stdout + run.stderr, "deptry could not read a notebook"


@pytest.mark.parametrize("package, module", [("scipy", "scipy"), ("pillow", "PIL"), ("nbclient", "nbclient")])
def test_a_package_left_out_of_pyproject_fails_the_check(tmp_path, package, module):
    text = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    line = re.compile(rf'^\s*"{package}[<>=!~].*$\n', re.MULTILINE)
    assert line.search(text), f"{package} is declared"
    (tmp_path / "pyproject.toml").write_text(line.sub("", text), encoding="utf-8")
    run = _deptry("--config", str(tmp_path / "pyproject.toml"))
    assert run.returncode == 1 and f"'{module}' imported but" in run.stdout + run.stderr, run.stdout + run.stderr


def test_deptry_can_read_every_notebook():
    """deptry skips (with only a warning) a notebook whose code is not plain Python, e.g. `!git clone`."""
    for path in NOTEBOOKS:
        for i, cell in enumerate(json.loads(path.read_text(encoding="utf-8"))["cells"]):
            if cell["cell_type"] == "code":
                try:
                    ast.parse("".join(cell["source"]))
                except SyntaxError as error:
                    pytest.fail(f"{path.name} cell {i} is not plain Python ({error}); use subprocess or os, not !/%")


@pytest.mark.parametrize("name", sorted(m.name for m in pkgutil.iter_modules(kdutils.__path__)))
def test_every_module_imports(name):
    importlib.import_module(f"kdutils.{name}")


def test_requirements_files_install_kdutils_and_its_declared_packages():
    def lines(name):
        text = (ROOT / name).read_text(encoding="utf-8")
        return [line.split("#")[0].strip() for line in text.splitlines() if line.split("#")[0].strip()]

    assert lines("requirements-colab.txt") == ["-e ."], "Colab: kdutils and what pyproject.toml declares, no extras"
    assert lines("requirements.txt") == ["-e .[lab,test,site]"], "local and CI: JupyterLab, the tests and the website"
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    assert "torch>=2.1,<3" in project["dependencies"], "a range, so Colab's CUDA build of torch stays"
    lab = " ".join(project["optional-dependencies"]["lab"])
    assert "ipywidgets" in lab and "jupyterlab" in lab, "Colab keeps its own ipywidgets 7 and installs no Jupyter"
    assert not {"ipywidgets", "jupyterlab"} & {re.split(r"[<>=!~ ]", d)[0] for d in project["dependencies"]}


def test_kdutils_has_no_import_circle():
    """No module of kdutils imports, at its top or inside a function, a module that imports it back."""
    import ast

    package = ROOT / "kdutils"
    names = {p: ".".join(p.relative_to(package).with_suffix("").parts) for p in package.rglob("*.py")}
    modules = set(names.values())

    def resolve(name: str, node: ast.ImportFrom) -> set[str]:
        here = name.split(".")[:-1] if not name.endswith("__init__") else name.split(".")[:-1]
        base = here[:len(here) - (node.level - 1)] if node.level > 1 else here
        target = [*base, *(node.module.split(".") if node.module else [])]
        found = set()
        for alias in node.names:  # "from . import x" may name a module
            candidate = ".".join([*target, alias.name])
            found.add(candidate if candidate in modules else ".".join(target) or "__init__")
        return {f if f in modules else f + ".__init__" for f in found} & modules

    imports = {}
    for path, name in names.items():
        found = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.level >= 1:
                found |= resolve(name, node)
        imports[name] = found - {name}

    def reaches(start, goal, seen=()):
        return any(m == goal or (m not in seen and reaches(m, goal, (*seen, m))) for m in imports[start])

    circles = sorted(name for name in modules if reaches(name, name))
    assert not circles, f"modules in an import circle: {circles}"


MAX_FUNCTION_LINES = 60  # docstring included: a reader sees a function whole on one screen


def test_no_kdutils_function_is_longer_than_a_screen():
    """Issue 24's limit: every function of kdutils, docstring included, fits in ``MAX_FUNCTION_LINES`` lines."""
    long = []
    for path in sorted((ROOT / "kdutils").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                lines = node.end_lineno - node.lineno + 1
                if lines > MAX_FUNCTION_LINES:
                    long.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name} ({lines} lines)")
    assert not long, "split these functions: " + ", ".join(long)
