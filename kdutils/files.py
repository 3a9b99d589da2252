"""Writing files that something may be reading, so that a crash or a second process loses nothing.

A file or folder is written beside its final name and renamed into place: a
reader (a kernel that holds the data splits memory-mapped, a resumed run) sees
the old copy or the new one, never half of one. A folder is swapped in three
renames, ``.NAME.tmp`` (being written) -> ``.NAME.new`` (complete) ->
``NAME``, with the previous copy parked as ``.NAME.old`` in between; a process
killed at any point leaves at least one complete copy, and ``recover`` puts it
back. ``folder_lock`` keeps two processes from writing one folder at once.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from pathlib import Path


class FolderBusy(RuntimeError):
    """Another process holds the lock of a folder this one wants to write."""


def _sibling(path: Path, suffix: str) -> Path:
    return path.with_name(f".{path.name}.{suffix}")


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_text(path: str | Path, text: str) -> Path:
    """Write ``text`` to ``path`` through a temporary file that replaces it in one rename."""
    path = Path(path)
    tmp = _sibling(path, "tmp")
    with open(tmp, "w", encoding="utf-8", newline="") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    return path


def write_json(path: str | Path, data) -> Path:
    """``write_text`` of indented JSON (Korean kept readable)."""
    return write_text(path, json.dumps(data, indent=2, ensure_ascii=False) + "\n")


def read_json(path: str | Path, fix: str) -> dict:
    """The JSON object in ``path``; a damaged file raises an error that names it and says what to do (``fix``)."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        size = path.stat().st_size
        what = "is empty" if size == 0 else f"is damaged ({size} bytes, not valid JSON: {err})"
        raise ValueError(f"{path} {what}; {fix}") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path} is damaged (it holds a JSON {type(data).__name__}, not an object); {fix}")
    return data


def staging(folder: str | Path, *, main: bool = True) -> Path:
    """An empty ``.NAME.tmp`` beside ``folder`` to write its next version into (after ``recover``).

    With ``main=False`` (another process of a data-parallel run) it only names the folder that the main
    process empties, so that every process can write its part into it.
    """
    folder = Path(folder)
    tmp = _sibling(folder, "tmp")
    if not main:
        return tmp
    recover(folder)
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    return tmp


def swap_in(folder: str | Path) -> Path:
    """Replace ``folder`` with the complete ``.NAME.tmp`` that ``staging`` gave (flushed to disk first)."""
    folder = Path(folder)
    tmp, new, old = (_sibling(folder, s) for s in ("tmp", "new", "old"))
    for file in tmp.rglob("*"):
        if file.is_file():
            _fsync(file)
    os.replace(tmp, new)  # from here on a complete new copy exists under a name recover knows
    if folder.exists():
        os.replace(folder, old)
    os.replace(new, folder)
    _fsync(folder.parent)
    shutil.rmtree(old, ignore_errors=True)
    return folder


def recover(folder: str | Path) -> str | None:
    """Finish a swap that a crash interrupted; return what was done (None if there was nothing to do).

    ``folder`` itself is complete whenever it exists; otherwise ``.NAME.new``
    (a complete new copy) or ``.NAME.old`` (the complete previous one) takes
    its place. A ``.NAME.tmp`` may be half-written and is removed.
    """
    folder = Path(folder)
    tmp, new, old = (_sibling(folder, s) for s in ("tmp", "new", "old"))
    done = None
    if not folder.exists():
        for copy in (new, old):
            if copy.is_dir():
                os.replace(copy, folder)
                done = f"{folder} was restored from {copy.name} (a swap was interrupted)"
                break
    for leftover in (tmp, new, old):
        shutil.rmtree(leftover, ignore_errors=True)
    return done


def is_leftover(name: str) -> bool:
    """Is ``name`` one of the temporary siblings that ``write_text``, ``swap_in`` and ``folder_lock`` use?"""
    return name.startswith(".") and name.rsplit(".", 1)[-1] in ("tmp", "new", "old", "lock")


@contextlib.contextmanager
def folder_lock(folder: str | Path, what: str, wait: bool = False):
    """Hold ``.NAME.lock`` beside ``folder`` while writing it; the system frees it when the process dies.

    With ``wait=False`` a folder that another process holds raises
    :class:`FolderBusy` naming that process. Without ``fcntl`` (Windows) there is no lock.
    """
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        yield
        return
    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    path = _sibling(folder, "lock")
    with open(path, "a+") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            f.seek(0)
            holder = f.read().strip() or "unknown"
            raise FolderBusy(f"{folder} is in use by another {what} (process {holder}); wait until it ends, "
                             f"or write to another folder") from None
        f.seek(0)
        f.truncate()
        f.write(str(os.getpid()))
        f.flush()
        try:
            yield
        finally:
            f.seek(0)
            f.truncate()
            fcntl.flock(f, fcntl.LOCK_UN)
