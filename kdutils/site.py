"""The course website: the executed course as static pages (``python -m kdutils site``).

Every notebook is committed without outputs; the site shows them with theirs.
It is built from the executed copies that ``python -m kdutils course`` (or the
test suite, through ``conftest.py``) writes to ``<output folder>/course``, so
nothing runs twice. Sphinx with MyST-NB and sphinx-book-theme renders them; the
README is the front page, 00's course map and the glossary are pages of their
own, and the solutions are a separate, marked page that ``solutions=False``
(``--no-solutions``, ``KDSD_SITE_SOLUTIONS=0``) leaves out.

The site needs no network, in the browser or while building: the Hangul font
(NanumGothic, from koreanize-matplotlib) and MathJax (from
jupyter-server-mathjax) are copied into it, and the Open-in-Colab badge is a
local picture. A classroom can serve it from a laptop with no internet.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import time
from pathlib import Path

from .colab import ROOT, find_links
from .course import failing_cell, find_notebooks

SOLUTIONS = Path("notebooks/solutions/solutions.ipynb")
COURSE_MAP = Path("notebooks/course_map.md")
GLOSSARY = Path("docs/glossary.md")
COLAB_BADGE = "https://colab.research.google.com/assets/colab-badge.svg"
WIDGET_MIME = "application/vnd.jupyter.widget-view+json"


class SiteError(RuntimeError):
    """The site cannot be built from what is there; the message says what to run first."""


class MissingCopy(SiteError):
    """A notebook has no executed copy yet: run the course (or the tests) first."""


def executed_copies(course: Path, root: Path = ROOT, solutions: bool = True, allow_stale: bool = False) -> dict:
    """``{source path (relative to root): executed notebook}`` for every lesson (and the solutions).

    Raises :class:`SiteError` when a lesson has no executed copy, when a copy
    holds an error, or when its code differs from the notebook's now (unless
    ``allow_stale``): the site would show outputs the lesson no longer makes.
    Where the code is the same, the markdown comes from the notebook as it is
    now, so a fix to the text needs no new run.
    """
    import nbformat

    course = Path(course)
    wanted = [p.relative_to(root) for p in find_notebooks(folder=root / "notebooks")]
    if solutions:
        wanted.append(SOLUTIONS)
    copies = {}
    for rel in wanted:
        path = course / rel.name
        if not path.exists():
            raise MissingCopy(f"no executed copy of {rel} in {course}: run `python -m kdutils course"
                            f"{' --solutions' if rel == SOLUTIONS else ''}` (or the test suite) first")
        nb = nbformat.read(path, as_version=4)
        cell, error = failing_cell(nb)
        if cell:
            raise SiteError(f"{path} holds an error in code cell {cell} ({error}): fix the notebook and run it again")
        source = nbformat.read(root / rel, as_version=4)
        if _code(nb) == _code(source):  # the text as it is now, the outputs of the run
            outputs = iter([c for c in nb.cells if c.cell_type == "code"])
            for cell in source.cells:
                if cell.cell_type == "code":
                    ran = next(outputs)
                    cell.outputs, cell.execution_count = ran.get("outputs", []), ran.get("execution_count")
            source.metadata = nb.metadata
            nb = source
        elif not allow_stale:
            raise SiteError(f"{path} was executed from an older {rel} (its code differs): run it again, "
                            f"or pass allow_stale=True (--allow-stale) to publish the old outputs")
        copies[rel] = nb
    return copies


def _code(nb) -> list[str]:
    return [c.source for c in nb.cells if c.cell_type == "code"]


def repository(root: Path = ROOT) -> tuple[str, str]:
    """``(OWNER/NAME, branch)`` as ``root``'s ``kdutils/colab.py`` names them.

    Read from the file, not imported, so that after ``python -m kdutils colab
    --repo`` the site's GitHub and Colab links name the fork as the badges do.
    """
    constant = [link for link in find_links(root) if link.kind == "constant"]
    if len(constant) != 1:
        raise SiteError(f"expected REPO and BRANCH once in {root / 'kdutils/colab.py'}, found {len(constant)}")
    return constant[0].repo, constant[0].branch


_LINK = re.compile(r"(!?\[[^\]\n]*\]\()([^)\s]+)(\))")


def relink(text: str, page: Path, staged: set[Path], github: str, root: Path = ROOT) -> str:
    """Markdown ``text`` of ``page`` with its links fixed for the site.

    A link to a staged page or file stays as it is (MyST turns it into a link
    between pages); a link to another file of the repository points to
    ``github`` (its blob URL at the branch); a link to the solutions, when the
    site leaves them out, keeps only its words. The Colab
    badge's picture becomes the site's own copy.
    """
    def fix(m: re.Match) -> str:
        head, target, tail = m.groups()
        if target == COLAB_BADGE:
            return f"{head}{os.path.relpath('_static/colab-badge.svg', page.parent)}{tail}"
        if re.match(r"[a-z]+:|#", target):
            return m[0]
        path, _, anchor = target.partition("#")
        rel = Path(os.path.normpath(page.parent / path))
        if rel == Path("README.md"):  # the front page
            return f"{head}{os.path.relpath('index.md', page.parent)}{'#' + anchor if anchor else ''}{tail}"
        if rel in staged or rel.parts[:1] == ("figure",):
            return m[0]
        if rel == SOLUTIONS:  # left out of this site: keep the words
            return head[1:-2]
        if not (root / rel).exists():
            return m[0]  # broken: Sphinx warns, and the build stops
        return f"{head}{github}/{rel.as_posix()}{'#' + anchor if anchor else ''}{tail}"

    return _LINK.sub(fix, text)


def _banner(rel: Path, stamp: dict, repo: str, branch: str) -> str:
    """The note at the top of a lesson's page: where and when its outputs were made, and links to run it."""
    commit = stamp.get("commit", "unknown")
    short = commit[:7] if commit != "unknown" else "알 수 없음"
    world = "장난감 세계이므로 숫자는 SD v1.4가 아니라 그 세계에서 잰 값입니다. " if stamp.get("profile") == "tiny" else ""
    changed = ", 커밋하지 않은 수정이 있는 상태" if stamp.get("dirty") else ""
    colab = f"https://colab.research.google.com/github/{repo}/blob/{branch}/{rel.as_posix()}"
    return (f":::{{note}}\n이 페이지는 `{stamp.get('profile', '?')}` 프로필을 {stamp.get('machine', '알 수 없는 기계')}에서 "
            f"{stamp.get('executed', '알 수 없는 날')}에 실행한 결과입니다(커밋 `{short}`{changed}). {world}"
            f"[![Open In Colab]({os.path.relpath('_static/colab-badge.svg', rel.parent)})]({colab}) · [노트북 원본](https://github.com/{repo}/blob/{branch}/{rel.as_posix()})\n:::\n")


def _stage_notebook(nb, rel: Path, staged: set[Path], repo: str, branch: str, root: Path):
    """The executed notebook as the site shows it: the run's note after the title, links fixed, widgets as text."""
    import nbformat

    nb = nbformat.from_dict(nb)  # a copy
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            cell.source = relink(cell.source, rel, staged, f"https://github.com/{repo}/blob/{branch}", root)
        if cell.cell_type == "code":
            cell.outputs = [out for out in map(_static_widget, cell.outputs) if out is not None]
    nb.metadata.pop("widgets", None)  # their state would make the page load the widget manager from a CDN
    stamp = nb.metadata.get("kdsd", {})
    nb.cells.insert(1, nbformat.v4.new_markdown_cell(_banner(rel, stamp, repo, branch)))
    for cell in nb.cells:
        cell.pop("id", None)
    nb.nbformat_minor = 4
    return nb


_PROGRESS = re.compile(r".*\d+%\|")  # tqdm's text for its bar: "UNet:  0%|   | 0/500 [...]"
WIDGET_NOTE = "(대화형 위젯: 이 사이트에서는 움직이지 않습니다. JupyterLab이나 Colab에서 실행해 보세요.)"


def _static_widget(out):
    """An output as a static page can show it. A widget's state lived in the kernel, so a progress bar
    (whose text still says 0%) is left out, and any other widget becomes a sentence instead of an empty box."""
    data = out.get("data", {})
    if WIDGET_MIME not in data:
        return out
    if _PROGRESS.match(data.get("text/plain", "")):
        return None
    del data[WIDGET_MIME]
    data["text/plain"] = WIDGET_NOTE
    return out


def course_map(overview) -> str:
    """00's course-map cell (the markdown cell headed ``## 코스 지도``) as a page of its own."""
    for cell in overview.cells:
        if cell.cell_type == "markdown" and cell.source.startswith("## 코스 지도"):
            return "# 코스 지도" + cell.source[len("## 코스 지도"):] + "\n"
    raise SiteError("00_overview has no markdown cell headed '## 코스 지도' to make the course map from")


def stage(copies: dict, src: Path, root: Path = ROOT, solutions: bool = True) -> None:
    """Write the site's sources to ``src``: pages, figures, static files and ``conf.py``."""
    import nbformat

    if src.exists():
        shutil.rmtree(src)
    lessons = [rel for rel in copies if rel != SOLUTIONS]
    repo, branch = repository(root)
    github = f"https://github.com/{repo}/blob/{branch}"
    staged = set(copies) | {Path("index.md"), COURSE_MAP, GLOSSARY}
    for rel, nb in copies.items():
        (src / rel).parent.mkdir(parents=True, exist_ok=True)
        nbformat.write(_stage_notebook(nb, rel, staged, repo, branch, root), src / rel)
    # the README is the front page; its links are written from the repository root, as index.md's are
    readme = relink((root / "README.md").read_text(encoding="utf-8"), Path("index.md"), staged, github, root)
    toc = ["", "```{toctree}", ":hidden:", ":caption: 수업", "", COURSE_MAP.with_suffix("").as_posix()]
    toc += [rel.with_suffix("").as_posix() for rel in lessons] + [GLOSSARY.with_suffix("").as_posix(), "```", ""]
    if solutions:
        toc += ["```{toctree}", ":hidden:", ":caption: 교사용", "", SOLUTIONS.with_suffix("").as_posix(), "```", ""]
    (src / "index.md").write_text(readme + "\n".join(toc), encoding="utf-8")
    overview = copies[lessons[0]]
    (src / COURSE_MAP).write_text(relink(course_map(overview), COURSE_MAP, staged, github, root), encoding="utf-8")
    (src / GLOSSARY).parent.mkdir(parents=True, exist_ok=True)
    (src / GLOSSARY).write_text(relink((root / GLOSSARY).read_text(encoding="utf-8"), GLOSSARY, staged, github, root),
                                encoding="utf-8")
    if (root / "figure").is_dir():
        shutil.copytree(root / "figure", src / "figure")
    _static(src / "_static")
    (src / "conf.py").write_text(CONF.format(repo=repo, branch=branch), encoding="utf-8")


def _static(folder: Path) -> None:
    """The font, MathJax, the Colab badge and the style sheet, so that the site needs no network."""
    import jupyter_server_mathjax
    import koreanize_matplotlib

    from fontTools.ttLib import TTFont

    fonts = Path(koreanize_matplotlib.__file__).parent / "fonts"
    (folder / "fonts").mkdir(parents=True)
    for name in ("NanumGothic", "NanumGothicBold"):
        # Chromium's font sanitizer rejects these files for their empty VTT hinting-source tables (TSI*);
        # without those tables, and as WOFF, they load (and are half the size)
        font = TTFont(fonts / f"{name}.ttf")
        for table in [t for t in font.keys() if t.startswith("TSI")]:
            del font[table]
        font.flavor = "woff"
        font.save(folder / "fonts" / f"{name}.woff")
    shutil.copytree(Path(jupyter_server_mathjax.__file__).parent / "static", folder / "mathjax")
    (folder / "kdsd.css").write_text(CSS, encoding="utf-8")
    (folder / "colab-badge.svg").write_text(BADGE, encoding="utf-8")
    (folder / "favicon.svg").write_text(FAVICON, encoding="utf-8")


def build_site(course: Path | None = None, out: Path | None = None, solutions: bool | None = None,
               allow_stale: bool = False, root: Path = ROOT) -> Path:
    """Build the site from the executed copies in ``course``; return the folder of HTML pages.

    ``course`` defaults to the profile's ``course/`` output folder and ``out``
    to its ``site/``. ``solutions`` defaults to ``KDSD_SITE_SOLUTIONS`` (on
    unless it says 0/no/false).
    """
    from sphinx.cmd.build import build_main

    from .profiles import get_profile

    if course is None or out is None:
        cfg = get_profile()
        course = course or cfg.out("course")
        out = out or cfg.out("site")
    if solutions is None:
        solutions = os.environ.get("KDSD_SITE_SOLUTIONS", "1").strip().lower() not in ("0", "no", "false", "off")
    start = time.perf_counter()
    copies = executed_copies(Path(course), root, solutions, allow_stale)
    out = Path(out)
    stage(copies, out / "src", root, solutions)
    html = out / "html"
    if html.exists():
        shutil.rmtree(html)  # Sphinx leaves files of earlier builds
    log = out / "warnings.txt"
    code = build_main(["-b", "html", "-q", "-E", "-w", str(log), str(out / "src"), str(html)])
    warnings = log.read_text(encoding="utf-8").strip() if log.exists() else ""
    if code or warnings:
        raise SiteError(f"Sphinx {'failed' if code else 'warned'} (exit {code}); see {log}:\n{warnings[:2000]}")
    print(f"site: {len(copies)} notebooks in {time.perf_counter() - start:.0f} s -> {html / 'index.html'}")
    return html


def serve(html: Path, port: int = 8000) -> None:
    """Serve the built site on http://localhost:PORT until Ctrl-C (a preview; any static server will do)."""
    import functools
    import http.server

    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(html))
    with http.server.ThreadingHTTPServer(("127.0.0.1", port), handler) as server:
        print(f"previewing {html} at http://localhost:{port}/ (Ctrl-C stops)")
        try:
            server.serve_forever()
        except KeyboardInterrupt:
            pass


# Korean search. Sphinx has no Korean search language, and its default splits at
# spaces, so "원은" (circle + topic particle) would never match a search for "원".
# Stripping one trailing particle or ending, the same way at indexing (Python)
# and at query time (the JavaScript below), makes both "원" and "원은" find it.
PARTICLES = sorted({"은", "는", "이", "가", "을", "를", "에", "의", "도", "만", "와", "과", "로", "으로", "에서", "에는",
                    "에게", "까지", "부터", "처럼", "보다", "이나", "나", "하고", "이고", "이다", "입니다", "니다",
                    "합니다", "습니다", "한다", "하는", "하기", "해서", "들", "들이", "들을", "들은", "이며", "으로는"},
                   key=lambda p: (-len(p), p))


def korean_stem(word: str) -> str:
    """``word`` lower-cased, without one trailing particle or ending when it is Hangul: 원은 -> 원."""
    word = word.lower()
    if word and "\uac00" <= word[-1] <= "\ud7a3":
        for particle in PARTICLES:
            if len(word) > len(particle) and word.endswith(particle):
                return word[:-len(particle)]
    return word


def korean_search_language():
    """A Sphinx search language for Korean (``html_search_language = "ko"``), built on :func:`korean_stem`."""
    from sphinx.search import SearchLanguage

    class SearchKorean(SearchLanguage):
        lang = "ko"
        language_name = "Korean"
        js_stemmer_code = ("var Stemmer = function () {\n  const particles = %s;\n"
                           "  this.stemWord = function (w) {\n    w = w.toLowerCase();\n"
                           "    if (/[\\uac00-\\ud7a3]$/.test(w)) {\n      for (const p of particles) {\n"
                           "        if (w.length > p.length && w.endsWith(p)) return w.slice(0, -p.length);\n"
                           "      }\n    }\n    return w;\n  };\n};\n") % json.dumps(list(PARTICLES), ensure_ascii=False)

        def stem(self, word: str) -> str:
            return korean_stem(word)

        def word_filter(self, word: str) -> bool:
            return not word.isdigit() and (len(word) > 1 or "\uac00" <= word <= "\ud7a3")

    return SearchKorean


CONF = '''# Written by kdutils.site for this build; edit kdutils/site.py instead.
from kdutils.site import korean_search_language

project = "지식 증류로 Stable Diffusion에 한국어 가르치기"
language = "ko"
extensions = ["myst_nb"]
exclude_patterns = ["_build"]
nb_execution_mode = "off"  # the pages show the executed copies; nothing runs here
myst_enable_extensions = ["colon_fence", "dollarmath"]
myst_heading_anchors = 3
suppress_warnings = ["myst.header", "mystnb.unknown_mime_type", "misc.highlighting_failure"]
html_theme = "sphinx_book_theme"
html_title = "한국어 프롬프트로 SD 쓰기: 지식 증류 코스"
html_static_path = ["_static"]
html_css_files = ["kdsd.css"]
html_search_language = "ko"
html_show_sourcelink = False
html_favicon = "_static/favicon.svg"
html_context = {{"default_mode": "light"}}
mathjax_path = "mathjax/MathJax.js?config=TeX-AMS-MML_HTMLorMML-full"
# MathJax 2 as jupyter-server-mathjax ships it: with the STIX-Web fonts only (as Jupyter's classic notebook used it)
mathjax2_config = {{
    "tex2jax": {{"inlineMath": [["\\(", "\\)"]], "displayMath": [["\\[", "\\]"]], "processEscapes": True,
                "ignoreClass": "document", "processClass": "math|output_area"}},
    # its empty detection font points at about:blank, which Chromium refuses with a console error; local() does not
    "HTML-CSS": {{"availableFonts": [], "imageFont": None, "preferredFont": None, "webFont": "STIX-Web",
                 "styles": {{"@font-face": {{"font-family": "MathJax_Blank", "src": "local('MathJax_Blank')"}}}}}},
    "SVG": {{"font": "STIX-Web"}},
    # \\mathcal asks for the TeX fonts' MathJax_Script, which that package leaves out: italic instead, on the site only
    "TeX": {{"Macros": {{"mathcal": ["\\\\mathit{{#1}}", 1]}}}},
}}
html_theme_options = {{
    "repository_url": "https://github.com/{repo}",
    "repository_branch": "{branch}",
    "use_repository_button": True,
    "home_page_in_toc": True,
    "show_toc_level": 2,
}}


def setup(app):
    app.add_search_language(korean_search_language())
'''

CSS = """/* Hangul in NanumGothic (copied into the site) wherever the system has no Korean font */
@font-face { font-family: "NanumGothic"; src: url("fonts/NanumGothic.woff") format("woff");
             font-weight: 400; font-display: swap; }
@font-face { font-family: "NanumGothic"; src: url("fonts/NanumGothicBold.woff") format("woff");
             font-weight: 700; font-display: swap; }
html {
  --pst-font-family-base: -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, "Apple SD Gothic Neo",
    "Malgun Gothic", "NanumGothic", sans-serif;
  --pst-font-family-heading: var(--pst-font-family-base);
  --pst-font-family-monospace: SFMono-Regular, Menlo, Consolas, "DejaVu Sans Mono", "NanumGothic", monospace;
}
"""

FAVICON = """<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 16 16"><rect width="16" height="16" rx="3" fill="#1f3a93"/>
<circle cx="8" cy="8" r="4" fill="#e63946"/></svg>
"""

# The Open-in-Colab badge, drawn here (the usual one is a picture on colab.research.google.com)
BADGE = """<svg xmlns="http://www.w3.org/2000/svg" width="117" height="20" role="img" aria-label="Open In Colab">
<rect width="117" height="20" rx="3" fill="#555"/><rect x="30" width="87" height="20" rx="3" fill="#f9ab00"/>
<rect x="30" width="6" height="20" fill="#f9ab00"/>
<circle cx="11" cy="10" r="5" fill="none" stroke="#f9ab00" stroke-width="3"/>
<circle cx="20" cy="10" r="5" fill="none" stroke="#e8710a" stroke-width="3"/>
<text x="74" y="14" fill="#fff" font-family="Verdana,DejaVu Sans,sans-serif" font-size="11"
 text-anchor="middle">Open in Colab</text></svg>
"""
