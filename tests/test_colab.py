"""Colab: one repository in code, a command that re-points every link to a fork, and a light install."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from kdutils.__main__ import main
from kdutils.colab import BRANCH, REPO, ROOT, find_links, repoint

NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
FORK, FORK_BRANCH = "a-teacher/kd-class", "spring-2026"


@pytest.fixture
def copy(tmp_path):
    """The course's notebooks, README and colab module, copied to a scratch folder."""
    shutil.copytree(ROOT / "notebooks", tmp_path / "notebooks", ignore=shutil.ignore_patterns(".ipynb_checkpoints"))
    shutil.copy(ROOT / "README.md", tmp_path / "README.md")
    (tmp_path / "kdutils").mkdir()
    shutil.copy(ROOT / "kdutils" / "colab.py", tmp_path / "kdutils" / "colab.py")
    return tmp_path


def _files(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): p.read_text(encoding="utf-8") for p in sorted(root.rglob("*")) if p.is_file()}


def test_the_repository_points_only_to_repo_at_branch():
    links = find_links()
    assert {(link.repo, link.branch) for link in links} == {(REPO, BRANCH)}
    kinds = [(link.path.name, link.kind) for link in links]
    for path in NOTEBOOKS:  # every notebook: its badge and its clone cell
        assert (path.name, "badge") in kinds and (path.name, "clone") in kinds
    assert kinds.count(("README.md", "badge")) == len(NOTEBOOKS), "the README table has a badge per notebook"
    # no other spelling slipped past the patterns (e.g. a clone without --branch)
    for path, text in _files(ROOT / "notebooks").items():
        assert text.count("colab.research.google.com/github/") == text.count(f"github/{REPO}/blob/{BRANCH}/"), path
        assert text.count("git clone") == text.count(f"--branch {BRANCH} https://github.com/{REPO} "), path


def test_repoint_changes_every_badge_and_clone_and_nothing_else(copy, capsys):
    before = _files(copy)
    assert main(["colab", "--repo", FORK, "--branch", FORK_BRANCH, "--root", str(copy)]) == 0
    printed = capsys.readouterr().out
    after = _files(copy)

    assert {(link.repo, link.branch) for link in find_links(copy)} == {(FORK, FORK_BRANCH)}
    assert len(find_links(copy)) == len(find_links())
    for path in NOTEBOOKS:
        nb = json.loads((copy / "notebooks" / path.name).read_text(encoding="utf-8"))
        assert f"colab.research.google.com/github/{FORK}/blob/{FORK_BRANCH}/notebooks/{path.name}" in "".join(
            nb["cells"][0]["source"])
        setup = next("".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "code")
        assert f"--branch {FORK_BRANCH} https://github.com/{FORK} /content/kdsd" in setup
        assert all(not c.get("outputs") and c.get("execution_count") is None
                   for c in nb["cells"] if c["cell_type"] == "code"), "the notebook stays clean"
    assert REPO not in "".join(after.values())
    # nothing else changed: putting the old names back gives the old files byte for byte
    assert FORK not in "".join(before.values()) and FORK_BRANCH not in "".join(before.values())
    restored = {path: text.replace(FORK, REPO).replace(f"/blob/{FORK_BRANCH}/", f"/blob/{BRANCH}/")
                .replace(f"--branch {FORK_BRANCH} ", f"--branch {BRANCH} ")
                .replace(f'BRANCH = "{FORK_BRANCH}"', f'BRANCH = "{BRANCH}"') for path, text in after.items()}
    assert restored == before
    # it says what it changed, file by file
    assert f"README.md: {len(NOTEBOOKS)} badges ({REPO}@{BRANCH} -> {FORK}@{FORK_BRANCH})" in printed
    assert f"notebooks/00_overview.ipynb: 1 badge, 1 clone ({REPO}@{BRANCH} -> {FORK}@{FORK_BRANCH})" in printed
    assert "kdutils/colab.py: 1 constant" in printed


def test_repoint_twice_is_a_no_op(copy, capsys):
    assert repoint(FORK, FORK_BRANCH, copy)
    once = _files(copy)
    assert repoint(FORK, FORK_BRANCH, copy) == {}
    assert _files(copy) == once
    main(["colab", "--repo", FORK, "--branch", FORK_BRANCH, "--root", str(copy)])
    assert "nothing to change" in capsys.readouterr().out
    repoint(REPO, BRANCH, copy)  # and back again: the files are the course's own
    assert _files(copy) == _files_of_course(copy)


def _files_of_course(copy: Path) -> dict[str, str]:
    return {path: (ROOT / path).read_text(encoding="utf-8") for path in _files(copy)}


@pytest.mark.parametrize("argv, message", [
    (["--repo", "just-a-name"], "expected OWNER/NAME"),
    (["--repo", "owner/name.git"], "expected OWNER/NAME"),
    (["--repo", "https://github.com/owner/name"], "expected OWNER/NAME"),
    (["--repo", "owner/name", "--branch", "a b"], "not a branch name"),
])
def test_bad_repo_or_branch_fails_clearly_and_writes_nothing(copy, capsys, argv, message):
    before = _files(copy)
    with pytest.raises(SystemExit) as exit_:
        main(["colab", *argv, "--root", str(copy)])
    assert exit_.value.code == 2 and message in capsys.readouterr().err
    assert _files(copy) == before


def test_a_folder_without_notebooks_is_refused(tmp_path):
    with pytest.raises(FileNotFoundError, match="no notebooks/ folder"):
        repoint(FORK, root=tmp_path)


def _setup_cell(path: Path) -> str:
    nb = json.loads(path.read_text(encoding="utf-8"))
    return next("".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "code" and "git clone" in "".join(c["source"]))


def _run_setup_cell(home: Path, tmp_path: Path, **env) -> subprocess.CompletedProcess:
    """00's setup cell in a fresh Python with google.colab faked and /content/kdsd moved to ``home``."""
    code = "import sys, types\nsys.modules['google.colab'] = types.ModuleType('google.colab')\n"
    code += _setup_cell(NOTEBOOKS[0]).replace("/content/kdsd", str(home))
    # no network: git's HTTPS goes to a closed port on this machine, and so does any proxy pip would use
    offline = {"GIT_CONFIG_COUNT": "1", "GIT_CONFIG_KEY_0": "http.proxy", "GIT_CONFIG_VALUE_0": "http://127.0.0.1:9",
               "HTTPS_PROXY": "http://127.0.0.1:9", "PIP_NO_INDEX": "1"}
    return subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120,
                          env={**os.environ, **offline, **env})


def test_every_notebook_has_the_same_setup_cell():
    cells = {path.name: _setup_cell(path) for path in NOTEBOOKS + sorted((ROOT / "notebooks" / "solutions").glob("*.ipynb"))}
    assert len(set(cells.values())) == 1, "one setup cell, so one test covers them all"


def test_the_setup_cell_stops_loudly_when_the_clone_fails(tmp_path):
    home = tmp_path / "kdsd"
    run = _run_setup_cell(home, tmp_path)
    assert run.returncode == 1 and "RuntimeError" in run.stderr
    assert f"https://github.com/{REPO}" in run.stderr, "it names the repository"
    assert "python -m kdutils colab --repo" in run.stderr, "and says what a fork does"
    assert not home.exists(), "it stops there: no folder, no install"


def _git(*args, cwd):
    subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=cwd, check=True, capture_output=True)


@pytest.mark.slow
def test_running_the_setup_cell_again_updates_the_clone(tmp_path):
    origin, home = tmp_path / "origin", tmp_path / "kdsd"
    origin.mkdir()
    (origin / "requirements-colab.txt").write_text("# nothing to install in this test\n")
    _git("init", "-q", "-b", "main", cwd=origin)
    _git("add", ".", cwd=origin)
    _git("commit", "-q", "-m", "one", cwd=origin)
    _git("clone", "-q", str(origin), str(home), cwd=tmp_path)  # what the first run left
    (origin / "new-lesson.txt").write_text("a lesson added after the first run\n")
    _git("add", ".", cwd=origin)
    _git("commit", "-q", "-m", "two", cwd=origin)

    run = _run_setup_cell(home, tmp_path)
    assert run.returncode == 0, run.stderr
    assert (home / "new-lesson.txt").exists(), "the second run pulled the new commit"

    (home / "requirements-colab.txt").write_text("# a learner's edit that now conflicts\n")
    _git("commit", "-q", "-am", "mine", cwd=home)
    (origin / "requirements-colab.txt").write_text("# the course's change\n")
    _git("commit", "-q", "-am", "three", cwd=origin)
    run = _run_setup_cell(home, tmp_path)
    assert run.returncode == 1 and "git -C" in run.stderr and f"delete {home}" in run.stderr, run.stderr


def test_ci_installs_the_full_set_into_a_fresh_environment():
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert "python3 -m venv" in ci and "-r requirements.txt" in ci and "deptry ." in ci


@pytest.fixture
def fake_colab(monkeypatch, tmp_path):
    """A google.colab module whose drive.mount makes MyDrive under tmp_path, as Colab's does under /content/drive."""
    import sys
    import types

    mounts = []

    def mount(mount_point):
        mounts.append(mount_point)
        (Path(mount_point) / "MyDrive").mkdir(parents=True, exist_ok=True)

    google, colab = types.ModuleType("google"), types.ModuleType("google.colab")
    colab.drive = types.SimpleNamespace(mount=mount)
    google.colab = colab
    monkeypatch.setitem(sys.modules, "google", google)
    monkeypatch.setitem(sys.modules, "google.colab", colab)
    monkeypatch.delenv("KDSD_PROFILE", raising=False)
    return mounts


def test_use_drive_mounts_drive_and_gives_a_folder_per_profile(fake_colab, tmp_path, monkeypatch):
    import kdutils as kd
    from kdutils.colab import use_drive

    mount_point = str(tmp_path / "drive")
    out = use_drive("class", mount_point=mount_point)
    assert fake_colab == [mount_point]
    assert out == str(tmp_path / "drive" / "MyDrive" / "kdsd-outputs" / "class") and Path(out).is_dir()
    cfg = kd.get_profile("class", output_dir=out)
    assert cfg.out("distill", "roberta").is_relative_to(out), "training writes into Drive"
    monkeypatch.setenv("KDSD_PROFILE", "tiny")
    assert use_drive(folder="my-class", mount_point=mount_point).endswith("MyDrive/my-class/tiny"), \
        "the default profile is the one setup() picks"
    with pytest.raises(ValueError, match="unknown profile 'huge'"):
        use_drive("huge", mount_point=mount_point)


def test_use_drive_off_colab_says_what_to_do_instead(monkeypatch):
    import sys

    from kdutils.colab import use_drive

    monkeypatch.setitem(sys.modules, "google.colab", None)  # import fails as it does off Colab
    with pytest.raises(RuntimeError, match=r"works only on Colab.*kd.setup\(output_dir=...\)"):
        use_drive("tiny")


def test_use_drive_reports_a_mount_that_did_not_happen(fake_colab, tmp_path, monkeypatch):
    import sys

    from kdutils.colab import use_drive

    monkeypatch.setattr(sys.modules["google.colab"].drive, "mount", lambda mount_point: None)
    with pytest.raises(RuntimeError, match="did not mount"):
        use_drive("tiny", mount_point=str(tmp_path / "drive"))
    assert not (tmp_path / "drive").exists(), "nothing is created outside Drive"


def test_solutions_open_on_colab_and_are_committed_clean():
    solutions = sorted((ROOT / "notebooks" / "solutions").glob("*.ipynb"))
    assert solutions, "the teacher's kit has a solutions notebook"
    for path in solutions:
        nb = json.loads(path.read_text(encoding="utf-8"))
        first = "".join(nb["cells"][0]["source"])
        assert f"colab.research.google.com/github/{REPO}/blob/{BRANCH}/notebooks/solutions/{path.name}" in first
        setup = next("".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "code")
        assert f"--branch {BRANCH} https://github.com/{REPO} /content/kdsd" in setup
        assert all(not c.get("outputs") and c.get("execution_count") is None
                   for c in nb["cells"] if c["cell_type"] == "code"), f"clear the outputs of {path.name}"
        assert "widgets" not in nb["metadata"]
