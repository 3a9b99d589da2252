"""Notebooks are lessons committed clean, and they all follow the course template."""

import json
import re
from pathlib import Path

import pytest

NOTEBOOKS = sorted((Path(__file__).resolve().parent.parent / "notebooks").glob("[0-9][0-9]_*.ipynb"))


def notebook_problems(path: Path) -> list[str]:
    """What is committed that should not be: outputs, execution counts, widget state."""
    nb = json.loads(Path(path).read_text(encoding="utf-8"))
    problems = []
    for i, cell in enumerate(nb["cells"]):
        if cell["cell_type"] == "code" and cell.get("outputs"):
            problems.append(f"cell {i} has outputs")
        if cell["cell_type"] == "code" and cell.get("execution_count") is not None:
            problems.append(f"cell {i} has an execution count")
    if "widgets" in nb.get("metadata", {}):
        problems.append("widget state in metadata")
    return problems


def test_there_are_notebooks():
    assert NOTEBOOKS and NOTEBOOKS[0].name.startswith("00_")


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_committed_clean(path):
    assert notebook_problems(path) == [], f"clear outputs of {path.name} before committing"


def test_the_check_catches_a_dirty_notebook(tmp_path):
    nb = json.loads(NOTEBOOKS[0].read_text(encoding="utf-8"))
    code = next(c for c in nb["cells"] if c["cell_type"] == "code")
    code["outputs"] = [{"output_type": "stream", "name": "stdout", "text": "hi"}]
    code["execution_count"] = 3
    nb["metadata"]["widgets"] = {"state": {}}
    dirty = tmp_path / "dirty.ipynb"
    dirty.write_text(json.dumps(nb), encoding="utf-8")
    assert len(notebook_problems(dirty)) == 3


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_follows_the_template(path):
    nb = json.loads(path.read_text(encoding="utf-8"))
    cells = ["".join(c["source"]) for c in nb["cells"]]
    kinds = [c["cell_type"] for c in nb["cells"]]
    assert kinds[0] == "markdown" and cells[0].startswith("# ")
    assert "colab.research.google.com/github/" in cells[0] and f"notebooks/{path.name}" in cells[0]
    assert "배울 것" in cells[0]
    setup = next(c for c, k in zip(cells, kinds) if k == "code")
    assert "google.colab" in setup and "git clone" in setup
    installs = [line.strip() for line in setup.splitlines() if re.search(r"\b(pip|apt-get|apt|conda)\b.*\binstall\b", line)]
    assert installs == ['subprocess.run([sys.executable, "-m", "pip", "install", "-q", "-r", "requirements-colab.txt"], '
                        'check=True)'], \
        "on Colab install only what the lessons need: no torch (Colab's CUDA build stays), no apt packages"
    assert any("kd.setup(" in c for c, k in zip(cells, kinds) if k == "code")
    # the lesson ends: summary and exercises, a runnable starter cell with # TODO scaffolds, then the link onwards
    assert kinds[-3:] == ["markdown", "code", "markdown"], f"{path.name}: end with summary + exercises, starter, link"
    assert "## 정리" in cells[-3] and "## 연습문제" in cells[-3] and "solutions/solutions.ipynb" in cells[-3]
    assert "# TODO" in cells[-2], f"{path.name}'s starter cell should say what to fill in"
    # a teacher walks the course by its links: each lesson ends with one to the next, and the link resolves
    nexts = re.findall(r"^다음: \[[^\]]+\]\(([^)]+)\)", cells[-1], flags=re.M)
    assert len(nexts) == 1, f"{path.name} should end with one '다음: [..](..)' link"
    assert (path.parent / nexts[0]).is_file(), f"{path.name}'s 다음 link points to a missing {nexts[0]}"
    later = NOTEBOOKS[NOTEBOOKS.index(path) + 1:]
    assert not later or nexts[0] == later[0].name, f"{path.name} should lead to {later[0].name}"
    assert not any("cfg.name ==" in c or "cfg.name==" in c for c in cells), "sizes come from the profile"


def _root_conftest():
    import importlib.util

    path = Path(__file__).resolve().parent.parent / "conftest.py"
    spec = importlib.util.spec_from_file_location("kdsd_root_conftest", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("path", [*NOTEBOOKS, NOTEBOOKS[0].parent / "solutions" / "solutions.ipynb"],
                         ids=lambda p: p.name)
def test_a_notebook_that_reads_a_trained_student_runs_after_the_one_that_trains_it(path):
    """Under `pytest -n` (two workers) a notebook that uses a trained student must share the worker of the
    chain 04-10 (which runs in course order) or be 03 itself; anywhere else it could train the same run
    at the same time as the notebook that owns it, and one of the two would stop at the run's lock."""
    conftest = _root_conftest()
    source = "".join("".join(c["source"]) for c in json.loads(path.read_text(encoding="utf-8"))["cells"]
                     if c["cell_type"] == "code")
    nodeid = f"{path.relative_to(path.parents[1 if path.parent.name == 'notebooks' else 2]).as_posix()}::Cell 0"
    scope = conftest._scope(nodeid)
    if re.search(r"ensure_trained|load_metrics|distill\.distill\(|korean_pipeline\(", source):
        assert scope == "students" or nodeid.startswith(conftest.FIRST_ON_SECOND_WORKER), (nodeid, scope)
