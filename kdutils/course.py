"""Run the course: execute every numbered notebook in order in one profile.

``python -m kdutils course`` writes an executed copy of each notebook and a
summary (status and time per notebook) under ``<output folder>/course`` and
stops at the first failing notebook, naming the notebook and the cell.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOK_DIR = ROOT / "notebooks"


@dataclass
class NotebookResult:
    notebook: str
    status: str  # "ok" or "failed"
    seconds: float
    error: str = ""


class CourseError(RuntimeError):
    """A notebook failed; the message names the notebook, the cell and the error."""


def find_notebooks(only: list[str] | None = None, folder: Path = NOTEBOOK_DIR) -> list[Path]:
    """Numbered notebooks (``NN_topic.ipynb``) in teaching order, optionally filtered.

    ``only`` takes numbers or names (``["03", "04_distill_roberta"]``).
    """
    notebooks = sorted(p for p in Path(folder).glob("[0-9][0-9]_*.ipynb"))
    if not notebooks:
        raise CourseError(f"no numbered notebooks (NN_topic.ipynb) in {folder}")
    if only:
        wanted = [w.removesuffix(".ipynb") for w in only]
        picked = [p for p in notebooks if any(p.stem == w or p.stem.split("_")[0] == w for w in wanted)]
        missing = [w for w in wanted if not any(p.stem == w or p.stem.split("_")[0] == w for p in picked)]
        if missing:
            raise CourseError(f"no notebook matches {missing}; available: {[p.stem for p in notebooks]}")
        notebooks = picked
    return notebooks


def run_stamp(profile: str, runner: str, root: Path = ROOT) -> dict:
    """What an executed copy records about its run: profile, date, commit, machine and runner."""
    def git(*args: str) -> str:
        try:
            return subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True,
                                  timeout=10).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return ""

    import torch

    if torch.cuda.is_available():
        machine = f"GPU {torch.cuda.get_device_name(0)}"
    else:
        cpu = next((line.split(":", 1)[1].strip() for line in _read("/proc/cpuinfo").splitlines()
                    if line.startswith("model name")), "CPU")
        machine = f"CPU, {os.cpu_count()} cores ({cpu})"
    return {"profile": profile, "runner": runner, "machine": machine,
            "executed": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "commit": git("rev-parse", "HEAD") or "unknown", "dirty": bool(git("status", "--porcelain", "--untracked-files=no"))}


def _read(path: str) -> str:
    try:
        return Path(path).read_text(errors="replace")
    except OSError:
        return ""


def failing_cell(nb) -> tuple[int, str]:
    """Index (counting code cells from 1) and error line of the first cell with an error output; 0 if none."""
    code_index = 0
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        code_index += 1
        for output in cell.get("outputs", []):
            if output.get("output_type") == "error":
                return code_index, f"{output.get('ename')}: {output.get('evalue')}"
    return 0, "unknown error"


def run_course(profile: str | None = None, only: list[str] | None = None, timeout: int = 3600,
               folder: Path = NOTEBOOK_DIR, solutions: bool = False) -> Path:
    """Execute the notebooks in order; return the folder with executed copies and summary.

    The kernels inherit ``KDSD_PROFILE`` from this process, so every notebook
    runs in the same profile. ``solutions`` runs ``solutions/solutions.ipynb``
    last (the course website shows it). Each copy records its run in
    ``metadata.kdsd`` (profile, date, commit, machine).
    """
    from tqdm.auto import tqdm

    from .profiles import get_profile

    if profile:
        os.environ["KDSD_PROFILE"] = profile
    cfg = get_profile()
    os.environ["KDSD_PROFILE"] = cfg.name
    root = str(Path(__file__).resolve().parent.parent)
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")]))
    out = cfg.out("course")
    notebooks = find_notebooks(only, folder)
    if solutions:
        notebooks.append(Path(folder) / "solutions" / "solutions.ipynb")
    print(f"running {len(notebooks)} notebook(s) in profile {cfg.name!r}; executed copies go to {out}")

    results: list[NotebookResult] = []
    bar = tqdm(notebooks, unit="notebook")
    try:
        for path in bar:
            bar.set_description(path.stem)
            results.append(_execute(path, out, cfg.name, timeout, bar))
            if results[-1].status == "failed":
                raise CourseError(f"{path.name} failed at code {results[-1].error}\n"
                                  f"the executed copy with the traceback is {out / path.name}")
    finally:
        bar.close()
        _write_summary(out, cfg.name, results)
    return out


def _execute(path: Path, out: Path, profile: str, timeout: int, bar) -> "NotebookResult":
    """Run one notebook in a fresh kernel, write its executed copy to ``out`` (also when a cell fails)."""
    import nbformat
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError

    nb = nbformat.read(path, as_version=4)
    n_code = sum(c.cell_type == "code" for c in nb.cells)
    done = [0]

    def on_cell_complete(cell, cell_index, **_):
        done[0] += cell.cell_type == "code"
        bar.set_postfix_str(f"cell {done[0]}/{n_code}")

    client = NotebookClient(nb, timeout=timeout, kernel_name="python3",
                            resources={"metadata": {"path": str(path.parent)}}, on_cell_complete=on_cell_complete)
    nb.metadata["kdsd"] = run_stamp(profile, "python -m kdutils course")
    start = time.perf_counter()
    try:
        client.execute()
    except CellExecutionError:
        cell, error = failing_cell(nb)
        nbformat.write(nb, out / path.name)
        return NotebookResult(path.name, "failed", round(time.perf_counter() - start, 1), f"cell {cell}: {error}")
    nbformat.write(nb, out / path.name)
    return NotebookResult(path.name, "ok", round(time.perf_counter() - start, 1))


def _write_summary(out: Path, profile: str, results: list[NotebookResult]) -> None:
    rows = [asdict(r) for r in results]
    (out / "summary.json").write_text(json.dumps({"profile": profile, "notebooks": rows}, indent=2) + "\n")
    lines = [f"course run, profile {profile}", ""]
    lines += [f"{r.status:6} {r.seconds:7.1f} s  {r.notebook}  {r.error}".rstrip() for r in results]
    lines.append(f"\ntotal {sum(r.seconds for r in results):.1f} s")
    (out / "summary.txt").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
