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


def _cpus() -> int:
    """The cores this process may use (``sched_getaffinity`` is Linux-only)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


# Under `pytest -n N` (pyproject's addopts: two workers) each worker and the kernels it starts share the
# cores: one torch thread each on a 2-core machine, so that two workers do not fight over two cores.
if os.environ.get("PYTEST_XDIST_WORKER") and "OMP_NUM_THREADS" not in os.environ:
    os.environ["OMP_NUM_THREADS"] = str(max(1, _cpus() // int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))))


# --- executed copies of the notebooks that nbval runs -------------------------
# nbval runs every cell but keeps its outputs only in memory. Here each cell's
# outputs go back into the notebook, and when a notebook's last cell has run
# the notebook is written where `python -m kdutils course` writes its executed
# copies (<output folder>/course), stamped with profile, date and commit. The
# course website (`python -m kdutils site`, tests/test_site.py) is built from
# them, so CI executes each notebook once.

import time  # noqa: E402

import pytest  # noqa: E402

# Notebooks 04-10 and the solutions use the students that 03-05 train (05-10 train a missing one themselves),
# so under `pytest -n` they run on one worker, in the course's order, and the website's tests after them.
# Notebook 03 starts at the same time on the other worker: its CLIP student is first needed by 08, minutes later.
STUDENT_NOTEBOOKS = tuple(f"notebooks/{n}" for n in ("04", "05", "06", "07", "08", "09", "10", "solutions/"))
FIRST_ON_SECOND_WORKER = "notebooks/03_distill_clip.ipynb"
MAX_WORKERS = 2  # that chain is the longest part; more workers would wait for it with fewer threads each


def _scope(nodeid: str) -> str:
    """Which tests run together on one worker, in collection order: a file's tests (so a notebook's cells
    share one kernel), and the chain of notebooks above with the website's tests."""
    path = nodeid.split("::")[0]
    return "students" if path.startswith(STUDENT_NOTEBOOKS) or path == "tests/test_site.py" else path


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_auto_num_workers(config):
    return max(1, min(MAX_WORKERS, _cpus()))


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config, log):
    """xdist's scope scheduling with the scopes above (its ``xdist_group`` marks do not reach the node ids
    under pytest 9.2), in collection order, which ``pytest_collection_modifyitems`` sets under xdist."""
    from xdist.scheduler import LoadScopeScheduling

    class CourseScheduling(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return _scope(nodeid)

    config.option.loadscopereorder = False
    return CourseScheduling(config, log)


def _is_notebook(item) -> bool:
    return hasattr(item, "cell")


def pytest_collection_modifyitems(config, items):
    """Notebook cells and browser tests are slow (``pytest -m "not slow"`` leaves them out); the browser tests
    of the website read the notebooks' executed copies, so they run last. Under xdist the chain of
    notebooks comes first, then notebook 03, so that the two workers start with them, then the other
    notebooks (11, the longest, among them), then the unit tests, which either worker takes when free."""
    for item in items:
        if _is_notebook(item) or item.get_closest_marker("browser"):
            item.add_marker(pytest.mark.slow)
    items.sort(key=lambda item: item.get_closest_marker("browser") is not None)  # a stable sort keeps the rest
    if os.environ.get("PYTEST_XDIST_WORKER"):  # the order in which the two workers take their work
        def rank(item):
            scope = _scope(item.nodeid)
            if scope == "students":
                return 0
            if scope == FIRST_ON_SECOND_WORKER:
                return 1
            return 2 if _is_notebook(item) else 3  # the other notebooks next, so the website never waits long
        items.sort(key=rank)


_STARTED = pytest.StashKey[float]()


def pytest_configure(config):
    config.stash[_STARTED] = time.time()


@pytest.fixture(scope="session")
def executed_copies(request) -> Path:
    """The folder of the executed copies, once every notebook of this session has written its copy.

    Serially the browser tests already run last. Under ``pytest -n`` the other worker may still be
    running a notebook, so this waits (up to 20 minutes) for each collected notebook's copy to be
    newer than the session's start; a notebook that failed still writes its copy.
    """
    from kdutils.profiles import get_profile

    course = get_profile().out("course")
    names = {Path(str(item.fspath)).name for item in request.session.items if _is_notebook(item)}
    if os.environ.get("PYTEST_XDIST_WORKER"):
        started, deadline = request.config.stash[_STARTED], time.time() + 20 * 60

        def fresh(name):
            copy = course / name
            return copy.exists() and copy.stat().st_mtime >= started
        while not all(fresh(n) for n in names) and time.time() < deadline:
            time.sleep(2)
    return course


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
