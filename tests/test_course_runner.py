"""The course runner executes notebooks in order and stops at the first failure."""

import json

import nbformat
import pytest

from kdutils.course import CourseError, find_notebooks, run_course


def _write(folder, name, *sources):
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(s) for s in sources])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, folder / name)


@pytest.mark.slow
def test_runs_in_order_and_stops_at_the_failing_cell(tmp_path, monkeypatch):
    monkeypatch.setenv("KDSD_OUTPUT_DIR", str(tmp_path / "out"))
    nbs = tmp_path / "nbs"
    nbs.mkdir()
    _write(nbs, "00_first.ipynb", "import os\nprint(os.environ['KDSD_PROFILE'])")
    _write(nbs, "01_broken.ipynb", "x = 1", "raise ValueError('boom')", "y = 2")
    _write(nbs, "02_never.ipynb", "z = 3")
    with pytest.raises(CourseError, match=r"01_broken.ipynb failed at code cell 2: ValueError: boom"):
        run_course(profile="tiny", folder=nbs)
    summary = json.loads((tmp_path / "out" / "course" / "summary.json").read_text())
    assert summary["profile"] == "tiny"
    assert [(r["notebook"], r["status"]) for r in summary["notebooks"]] == [
        ("00_first.ipynb", "ok"), ("01_broken.ipynb", "failed")]
    executed = nbformat.read(tmp_path / "out" / "course" / "00_first.ipynb", as_version=4)
    assert executed.cells[0].outputs[0]["text"].strip() == "tiny"


def test_only_selects_by_number_or_name_and_rejects_unknown(tmp_path):
    for name in ("00_a.ipynb", "01_b.ipynb", "02_c.ipynb"):
        _write(tmp_path, name, "pass")
    assert [p.name for p in find_notebooks(["02", "00_a"], tmp_path)] == ["00_a.ipynb", "02_c.ipynb"]
    with pytest.raises(CourseError, match="no notebook matches"):
        find_notebooks(["09"], tmp_path)
