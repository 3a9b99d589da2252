"""Test settings shared by the unit tests and the notebooks that nbval runs.

Set here, before any kernel starts, so the notebooks inherit them: the tiny
profile, no hub access, and kdutils importable.
"""

import os
from pathlib import Path

ROOT = Path(__file__).resolve().parent

os.environ["KDSD_PROFILE"] = "tiny"
for offline in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"):
    os.environ[offline] = "1"
os.environ["TOKENIZERS_PARALLELISM"] = "false"
os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))


# --- executed copies of the notebooks that nbval runs -------------------------
# nbval runs every cell but keeps its outputs only in memory. Here each cell's
# outputs go back into the notebook, and when a notebook's last cell has run
# the notebook is written where `python -m kdutils course` writes its executed
# copies (<output folder>/course), stamped with profile, date and commit. The
# course website (`python -m kdutils site`, tests/test_site.py) is built from
# them, so CI executes each notebook once.

import pytest  # noqa: E402


def pytest_collection_modifyitems(config, items):
    """Notebook cells and browser tests are slow (``pytest -m "not slow"`` leaves them out); the browser tests
    of the website read the notebooks' executed copies, so they run last."""
    for item in items:
        if hasattr(item, "cell") or item.get_closest_marker("browser"):
            item.add_marker(pytest.mark.slow)
    items.sort(key=lambda item: item.get_closest_marker("browser") is not None)  # a stable sort keeps the rest


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item, nextitem):
    yield
    cell = getattr(item, "cell", None)
    if cell is None or not hasattr(item.parent, "nb"):
        return  # not a notebook cell
    if item.test_outputs is not None:  # None: the cell did not run (skipped)
        cell.outputs = item.test_outputs
        cell.execution_count = next((o.get("execution_count") for o in item.test_outputs
                                     if o.get("output_type") == "execute_result"), None)
    if nextitem is None or nextitem.parent is not item.parent:
        _write_executed(item.parent)


def _write_executed(notebook_item) -> None:
    import nbformat

    from kdutils.profiles import get_profile
    from kdutils.course import run_stamp

    nb = notebook_item.nb
    cfg = get_profile()
    nb.metadata["kdsd"] = run_stamp(cfg.name, "pytest --nbval-lax")
    nbformat.write(nb, cfg.out("course") / Path(str(notebook_item.fspath)).name)
