"""Where the course lives on GitHub, and re-pointing its Colab links to a fork.

On Colab nothing can be imported before the clone, so the notebooks' badges and
setup cells, and the README's badges, spell the repository out. ``REPO`` and
``BRANCH`` are the one place in code that says what they name;
``python -m kdutils colab --repo OWNER/NAME`` rewrites every such link (and
these two constants) for a teacher's fork, and a test checks that the files
agree with the constants.

``use_drive`` keeps a Colab session's outputs (trained students above all) in
Google Drive, so that a fresh runtime finds them instead of training again.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

REPO = "kdsd-course/korean-stable-diffusion"
BRANCH = "main"

ROOT = Path(__file__).resolve().parent.parent

_NAME = r"[A-Za-z0-9_.-]+"
_REPO_RE = re.compile(rf"{_NAME}/{_NAME}")
_BRANCH_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_./-]*")
# What names the course's repository, by kind. Each has the groups ``repo`` and ``branch``.
_LINKS = {
    # Open-in-Colab: colab.research.google.com/github/<owner>/<name>/blob/<branch>/notebooks/<notebook>
    "badge": re.compile(rf"colab\.research\.google\.com/github/(?P<repo>{_NAME}/{_NAME})/blob/"
                        rf"(?P<branch>[A-Za-z0-9_./-]+?)/notebooks/"),
    # the Colab setup cell: git clone <flags> --branch <branch> https://github.com/<owner>/<name> <folder>
    "clone": re.compile(rf"git clone [^\n]*?--branch (?P<branch>\S+) "
                        rf"https://github\.com/(?P<repo>{_NAME}/[A-Za-z0-9_.-]+?)(?:\.git)?(?=\s|$)"),
    # this module's constants
    "constant": re.compile(r'^REPO = "(?P<repo>[^"]*)"\nBRANCH = "(?P<branch>[^"]*)"$', re.MULTILINE),
}


@dataclass(frozen=True)
class Link:
    """One place in a file that names the course's repository and branch."""

    path: Path
    kind: str  # "badge", "clone" or "constant"
    repo: str
    branch: str


def course_files(root: Path = ROOT) -> list[Path]:
    """The files that name the repository: the notebooks (lessons and solutions), ``README.md`` and this module."""
    root = Path(root)
    if not (root / "notebooks").is_dir():
        raise FileNotFoundError(f"no notebooks/ folder in {root}: run this in a clone of the course (or pass --root)")
    files = sorted((root / "notebooks").glob("*.ipynb")) + sorted((root / "notebooks" / "solutions").glob("*.ipynb"))
    files += [p for p in (root / "README.md", root / "kdutils" / "colab.py") if p.exists()]
    return files


def _texts(path: Path) -> list[str]:
    """The texts of a file that may hold links: each cell's source for a notebook, else the whole file."""
    if path.suffix == ".ipynb":
        return ["".join(cell["source"]) for cell in json.loads(path.read_text(encoding="utf-8"))["cells"]]
    return [path.read_text(encoding="utf-8")]


def find_links(root: Path = ROOT) -> list[Link]:
    """Every badge, clone command and constant that names a repository, in file order."""
    return [Link(path, kind, m["repo"], m["branch"])
            for path in course_files(root) for text in _texts(path)
            for kind, pattern in _LINKS.items() for m in pattern.finditer(text)]


def check_repo(repo: str) -> str:
    """``repo`` if it looks like ``OWNER/NAME``, else a ValueError that says what is expected."""
    if not _REPO_RE.fullmatch(repo) or repo.endswith(".git"):
        raise ValueError(f"expected OWNER/NAME as on GitHub, e.g. my-school/korean-stable-diffusion; got {repo!r}")
    return repo


def check_branch(branch: str) -> str:
    """``branch`` if it is a plain git branch name, else a ValueError."""
    if not _BRANCH_RE.fullmatch(branch) or ".." in branch or branch.endswith(("/", ".lock")):
        raise ValueError(f"not a branch name: {branch!r}")
    return branch


def _repoint_text(text: str, repo: str, branch: str) -> tuple[str, list[tuple[str, str]]]:
    """``text`` with every link naming ``repo`` and ``branch``, and ``(kind, old repo@branch)`` per change."""
    changes = []
    for kind, pattern in _LINKS.items():
        def swap(m: re.Match, kind=kind) -> str:
            if (m["repo"], m["branch"]) == (repo, branch):
                return m[0]
            changes.append((kind, f"{m['repo']}@{m['branch']}"))
            out, at = [], m.start()
            for group, value in sorted([("repo", repo), ("branch", branch)], key=lambda g: m.start(g[0])):
                out += [m.string[at:m.start(group)], value]
                at = m.end(group)
            return "".join(out) + m.string[at:m.end()]

        text = pattern.sub(swap, text)
    return text, changes


def repoint(repo: str, branch: str = BRANCH, root: Path = ROOT) -> dict[Path, list[tuple[str, str]]]:
    """Make every badge, clone command and constant under ``root`` name ``repo`` at ``branch``.

    Notebooks are rewritten cell by cell in the course's JSON format, so
    nothing but the links changes (no outputs, ids kept). Returns, per changed
    file, ``(kind, old repo@branch)`` for each link it changed; a second run
    changes nothing and returns ``{}``.
    """
    check_repo(repo)
    check_branch(branch)
    changed: dict[Path, list[tuple[str, str]]] = {}
    for path in course_files(root):
        if path.suffix == ".ipynb":
            nb = json.loads(path.read_text(encoding="utf-8"))
            changes = []
            for cell in nb["cells"]:
                source = cell["source"]
                text, found = _repoint_text("".join(source), repo, branch)
                if found:
                    cell["source"] = text if isinstance(source, str) else text.splitlines(keepends=True)
                    changes += found
            new_text = json.dumps(nb, indent=1, ensure_ascii=False) + "\n"
        else:
            new_text, changes = _repoint_text(path.read_text(encoding="utf-8"), repo, branch)
        if changes:
            path.write_text(new_text, encoding="utf-8")
            changed[path] = changes
    return changed


DRIVE_MOUNT = "/content/drive"


def use_drive(profile: str | None = None, folder: str = "kdsd-outputs", *, mount_point: str = DRIVE_MOUNT) -> str:
    """Mount Google Drive on Colab and return an output folder in it: ``kd.setup(output_dir=use_drive())``.

    Opt-in: a Colab runtime forgets its disk when it ends, Drive does not, so
    students trained in 03-05 are still there for 07-10 in the next session.
    The folder is ``MyDrive/<folder>/<profile>`` (``profile`` defaults to the
    one ``kd.setup()`` would pick), keeping profiles apart as ``outputs/`` does.
    Colab asks for permission to the Drive the first time.
    """
    from .profiles import PROFILES, default_profile_name

    profile = profile or default_profile_name()
    if profile not in PROFILES:
        raise ValueError(f"unknown profile {profile!r}; choose one of {sorted(PROFILES)}")
    try:
        from google.colab import drive
    except ImportError:
        raise RuntimeError("use_drive() mounts Google Drive and works only on Colab (google.colab cannot be "
                           "imported here); elsewhere pass a folder yourself: kd.setup(output_dir=...)") from None
    drive.mount(mount_point)
    root = Path(mount_point) / "MyDrive"
    if not root.is_dir():
        raise RuntimeError(f"Google Drive did not mount at {mount_point} (no {root}); run the cell again and allow "
                           f"access, or leave use_drive() out to keep outputs on the runtime's disk")
    out = root / folder / profile
    out.mkdir(parents=True, exist_ok=True)
    return str(out)
