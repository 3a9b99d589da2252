"""The course website: built from the executed notebooks, then read in a real browser.

The browser tests need the executed copies of every lesson and of the
solutions. In CI the notebooks run earlier in the same pytest session
(``conftest.py`` saves nbval's outputs to ``<output folder>/course``, and
moves these tests after the notebooks), so nothing executes twice. They drive
Debian's Chromium (``/usr/bin/chromium``, or ``KDSD_CHROMIUM``) with
Playwright; where either is missing they skip, unless
``KDSD_REQUIRE_BROWSER=1`` (set by ``.ci/run``) makes that a failure.
"""

from __future__ import annotations

import functools
import http.server
import json
import os
import re
import shutil
import threading
import time
import urllib.parse
from pathlib import Path

import nbformat
import pytest

from kdutils import site
from kdutils.colab import repoint
from kdutils.course import find_notebooks

ROOT = Path(__file__).resolve().parent.parent
LESSONS = [p.stem for p in find_notebooks()]
REQUIRED = os.environ.get("KDSD_REQUIRE_BROWSER", "") == "1"


def _missing(why: str):
    if REQUIRED:
        pytest.fail(f"{why} (KDSD_REQUIRE_BROWSER=1 makes this a failure)")
    pytest.skip(why)


# --- without a browser ---------------------------------------------------------

def test_korean_search_stems_particles_the_same_way_in_python_and_javascript():
    assert [site.korean_stem(w) for w in ("원은", "원", "어텐션을", "어텐션에서", "Latent", "있습니다")] == \
        ["원", "원", "어텐션", "어텐션", "latent", "있"]
    assert [len(p) for p in site.PARTICLES] == sorted((len(p) for p in site.PARTICLES), reverse=True)
    js = site.korean_search_language().js_stemmer_code
    assert f"const particles = {json.dumps(list(site.PARTICLES), ensure_ascii=False)};" in js


def _tree(tmp_path: Path) -> Path:
    """A copy of what the site reads from the repository: notebooks, README, glossary, colab.py."""
    root = tmp_path / "repo"
    shutil.copytree(ROOT / "notebooks", root / "notebooks",
                    ignore=shutil.ignore_patterns(".ipynb_checkpoints"))
    (root / "docs").mkdir(parents=True)
    shutil.copy(ROOT / "docs" / "glossary.md", root / "docs" / "glossary.md")
    shutil.copy(ROOT / "README.md", root / "README.md")
    (root / "kdutils").mkdir()
    shutil.copy(ROOT / "kdutils" / "colab.py", root / "kdutils" / "colab.py")
    return root


def test_links_are_fixed_for_the_site(tmp_path):
    staged = {Path("notebooks/00_overview.ipynb"), Path("docs/glossary.md"), Path("index.md")}
    github = "https://github.com/o/n/blob/b"
    page = Path("notebooks/00_overview.ipynb")
    text = ("[g](../docs/glossary.md) [r](../README.md#빠른-시작) [w](../kdutils/world.py) [s](solutions/solutions.ipynb) "
            "[x](https://example.org) [a](#here) ![c](https://colab.research.google.com/assets/colab-badge.svg)")
    fixed = site.relink(text, page, staged, github, ROOT)
    assert fixed == ("[g](../docs/glossary.md) [r](../index.md#빠른-시작) [w](https://github.com/o/n/blob/b/kdutils/world.py) "
                     "s [x](https://example.org) [a](#here) ![c](../_static/colab-badge.svg)")


def test_the_site_names_the_fork_after_colab_repoint(tmp_path):
    root = _tree(tmp_path)
    assert site.repository(root) == site.repository(ROOT)
    repoint("my-school/kdsd", "spring", root)
    assert site.repository(root) == ("my-school/kdsd", "spring")
    banner = site._banner(Path("notebooks/03_distill_clip.ipynb"), {"profile": "tiny"}, *site.repository(root))
    assert "colab.research.google.com/github/my-school/kdsd/blob/spring/notebooks/03_distill_clip.ipynb" in banner
    assert "github.com/my-school/kdsd/blob/spring/notebooks/03_distill_clip.ipynb" in banner


def _executed(nb_path: Path, folder: Path, error: bool = False, edit: bool = False) -> None:
    nb = nbformat.read(nb_path, as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    if error:
        code[0].outputs = [nbformat.v4.new_output("error", ename="ValueError", evalue="boom", traceback=[])]
    if edit:
        code[-1].source += "\n# changed since"
    nbformat.write(nb, folder / nb_path.name)


def test_executed_copies_must_exist_be_clean_and_match_the_notebooks(tmp_path):
    root = _tree(tmp_path)
    course = tmp_path / "course"
    course.mkdir()
    with pytest.raises(site.MissingCopy, match="no executed copy of notebooks/00_overview.ipynb"):
        site.executed_copies(course, root)
    for nb in sorted((root / "notebooks").glob("[0-9][0-9]_*.ipynb")):
        _executed(nb, course)
    with pytest.raises(site.SiteError, match=r"solutions.ipynb.*--solutions"):
        site.executed_copies(course, root)
    assert len(site.executed_copies(course, root, solutions=False)) == len(LESSONS)
    _executed(root / "notebooks" / "05_distill_roberta_pooler.ipynb", course, error=True)
    with pytest.raises(site.SiteError, match=r"05_distill_roberta_pooler.ipynb holds an error in code cell 1 \(ValueError: boom\)"):
        site.executed_copies(course, root, solutions=False)
    _executed(root / "notebooks" / "05_distill_roberta_pooler.ipynb", course, edit=True)
    with pytest.raises(site.SiteError, match="executed from an older notebooks/05"):
        site.executed_copies(course, root, solutions=False)
    assert len(site.executed_copies(course, root, solutions=False, allow_stale=True)) == len(LESSONS)


def test_course_map_page_comes_from_00():
    text = site.course_map(nbformat.read(ROOT / "notebooks" / "00_overview.ipynb", as_version=4))
    assert text.startswith("# 코스 지도\n")
    assert all(f"| {name[:2]} |" in text for name in LESSONS)


def test_the_site_command_says_what_to_run_first(tmp_path, capsys):
    from kdutils.__main__ import main

    assert main(["site", "--course", str(tmp_path / "none"), "--output", str(tmp_path / "site")]) == 1
    err = capsys.readouterr().err
    assert "no executed copy of notebooks/00_overview.ipynb" in err and "python -m kdutils course" in err


def test_widgets_on_a_static_page_progress_bars_go_and_others_say_so():
    view = {"model_id": "x", "version_major": 2, "version_minor": 0}
    bar = nbformat.v4.new_output("display_data", data={site.WIDGET_MIME: view, "text/plain": "UNet:   0%|   | 0/500"})
    ui = nbformat.v4.new_output("display_data", data={site.WIDGET_MIME: view, "text/plain": "VBox(children=(...))"})
    text = nbformat.v4.new_output("stream", name="stdout", text="done\n")
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell("# t"), nbformat.v4.new_code_cell("x", outputs=[bar, ui, text])])
    staged = site._stage_notebook(nb, Path("notebooks/00_x.ipynb"), set(), "o/n", "main", ROOT)
    outputs = staged.cells[-1].outputs
    assert [o.output_type for o in outputs] == ["display_data", "stream"]
    assert outputs[0].data == {"text/plain": site.WIDGET_NOTE}


# --- the built site, in a browser ----------------------------------------------

@pytest.fixture(scope="module")
def built(tmp_path_factory, executed_copies):
    """The site built from this profile's executed copies (``<output folder>/course``), and its build time."""
    course = executed_copies
    out = tmp_path_factory.mktemp("site")
    start = time.perf_counter()
    try:
        html = site.build_site(course, out, solutions=True)
    except site.MissingCopy as err:  # any other SiteError fails the tests that use the site
        _missing(f"the notebooks have not run yet: {err}")
    return html, time.perf_counter() - start


@pytest.mark.browser
def test_the_site_builds_from_the_executed_copies_within_two_minutes(built):
    html, seconds = built
    assert seconds < 120, f"the site took {seconds:.0f} s to build"
    pages = {p.relative_to(html).as_posix() for p in html.rglob("*.html")}
    assert {f"notebooks/{name}.html" for name in LESSONS} <= pages
    assert {"index.html", "notebooks/course_map.html", "docs/glossary.html",
            "notebooks/solutions/solutions.html"} <= pages


@pytest.fixture(scope="module")
def browser(built):
    """A page of headless Chromium and the address of the site, served on a free local port."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _missing("playwright is not installed (pip install -r requirements.txt)")
    chromium = os.environ.get("KDSD_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
    if not Path(chromium).exists():
        _missing("no Chromium: install Debian's package (apt-get install chromium) or set KDSD_CHROMIUM")
    html, _ = built
    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    handler = functools.partial(Quiet, directory=str(html))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    with sync_playwright() as pw:
        # the flags keep Chromium from calling Google's hosts, which this closed network refuses
        browser = pw.chromium.launch(executable_path=chromium, args=[
            "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
            "--disable-sync", "--no-first-run", "--disable-quic"])
        page = browser.new_page(viewport={"width": 1280, "height": 1000})
        yield page, f"http://127.0.0.1:{server.server_address[1]}/"
        browser.close()
    server.shutdown()


def _visit(page, url: str) -> list[str]:
    """Load ``url``; return the console errors, page errors and failed or refused requests."""
    problems = []
    handlers = {
        "console": lambda m: problems.append(f"console {m.type}: {m.text}") if m.type == "error" else None,
        "pageerror": lambda e: problems.append(f"page error: {e}"),
        "requestfailed": lambda r: problems.append(f"request failed: {r.url}"),
        "response": lambda r: problems.append(f"HTTP {r.status}: {r.url}") if r.status >= 400 else None,
    }
    for event, handler in handlers.items():
        page.on(event, handler)
    page.goto(url, wait_until="networkidle")
    for event, handler in handlers.items():
        page.remove_listener(event, handler)
    return problems


IMAGES = """async () => {
  const images = Array.from(document.querySelectorAll("article img"));
  const bad = [];
  for (const img of images) {
    img.loading = "eager";
    try { await img.decode(); } catch (e) { bad.push("does not decode: " + img.src); continue; }
    const box = img.getBoundingClientRect(), style = getComputedStyle(img);
    if (!(img.naturalWidth > 0 && box.width > 0 && box.height > 0 && style.visibility !== "hidden"))
      bad.push("not visible: " + img.src);
  }
  return {count: images.length, bad: bad};
}"""

HANGUL = re.compile(r"[\uac00-\ud7a3]")
KOREAN_FONTS = ("NanumGothic", "Apple SD Gothic Neo", "Malgun Gothic", "Noto Sans CJK", "Noto Sans KR")


def _hangul_fonts(page, selector: str) -> tuple[int, dict]:
    """Hangul syllables in the first ``selector`` and ``{font family: glyphs}`` Chromium drew it with."""
    cdp = page.context.new_cdp_session(page)
    cdp.send("DOM.enable")
    cdp.send("CSS.enable")
    root = cdp.send("DOM.getDocument")["root"]["nodeId"]
    node = cdp.send("DOM.querySelector", {"nodeId": root, "selector": selector})["nodeId"]
    fonts = cdp.send("CSS.getPlatformFontsForNode", {"nodeId": node})["fonts"]
    cdp.detach()
    text = page.inner_text(selector)
    return len(HANGUL.findall(text)), {f["familyName"]: f["glyphCount"] for f in fonts}


@pytest.mark.browser
def test_every_lesson_page_loads_cleanly_shows_its_images_and_draws_hangul_in_a_korean_font(browser, built):
    page, base = browser
    html, _ = built
    shots = html.parent / "screenshots"
    shots.mkdir(exist_ok=True)
    report = {}
    for name in LESSONS + ["solutions/solutions"]:
        problems = _visit(page, f"{base}notebooks/{name}.html")
        assert not problems, f"{name}: {problems}"
        images = page.evaluate(IMAGES)
        executed = nbformat.read(html.parent / "src" / "notebooks" / f"{name}.ipynb", as_version=4)
        pictures = sum("image/png" in o.get("data", {}) for c in executed.cells for o in c.get("outputs", []))
        assert not images["bad"], f"{name}: {images['bad']}"
        assert images["count"] >= pictures, f"{name}: {images['count']} images on the page, {pictures} in the notebook"
        hangul, fonts = _hangul_fonts(page, "article h1")
        korean = sum(n for family, n in fonts.items() if family.startswith(KOREAN_FONTS))
        assert hangul and korean >= hangul, f"{name}: {hangul} Hangul syllables in the title, drawn with {fonts}"
        report[name] = {"images": images["count"], "fonts": fonts}
        if name.startswith("08_"):  # the fixed-latent grid, sharp, for a look (README's figure/site_08_fixed_latent.png)
            sharp = page.context.browser.new_page(viewport={"width": 1100, "height": 900}, device_scale_factor=2)
            sharp.goto(f"{base}notebooks/{name}.html", wait_until="networkidle")
            sharp.evaluate("""() => { const grid = [...document.querySelectorAll("article img")]
                .find(img => img.naturalWidth >= 600);
              window.scrollTo(0, grid.getBoundingClientRect().top + window.scrollY - 130); }""")
            sharp.screenshot(path=str(shots / f"{name}.png"))
            sharp.close()
    (shots / "report.json").write_text(json.dumps(report, ensure_ascii=False, indent=1))


@pytest.mark.browser
def test_the_front_page_links_every_lesson_in_order_and_korean_search_finds_particles(browser):
    page, base = browser
    assert not _visit(page, base + "index.html")
    hrefs = page.eval_on_selector_all("article a[href]", "links => links.map(a => a.getAttribute('href'))")
    order = []
    for href in hrefs:
        m = re.fullmatch(r"notebooks/(\d\d_[a-z0-9_]+)\.html", href.split("#")[0])
        if m and m[1] not in order:
            order.append(m[1])
    assert order == LESSONS
    # "교차 어텐션은" is not a word of any page, but its stem is: 00 teaches cross-attention
    assert not _visit(page, base + "search.html?q=" + urllib.parse.quote("교차 어텐션은"))
    page.wait_for_selector("#search-results li a", timeout=15_000)
    found = page.eval_on_selector_all("#search-results li a", "links => links.map(a => a.getAttribute('href'))")
    assert any("00_overview" in href for href in found), found


@pytest.mark.browser
def test_internal_links_resolve(browser, built):
    page, base = browser
    html, _ = built
    links = set()
    for path in ["index.html", "notebooks/course_map.html", "docs/glossary.html"] + \
            [f"notebooks/{name}.html" for name in LESSONS + ["solutions/solutions"]]:
        page.goto(base + path)
        links |= set(page.eval_on_selector_all("a[href]", "links => links.map(a => a.href)"))
    internal = sorted(link for link in links if link.startswith(base))
    assert len(internal) > 100
    broken = []
    for link in internal:
        parsed = urllib.parse.urlsplit(link)
        target = html / urllib.parse.unquote(parsed.path[1:])
        if target.is_dir():
            target = target / "index.html"
        if not target.is_file():
            broken.append(link)
        elif parsed.fragment and target.suffix == ".html":
            ids = set(re.findall(r'\sid="([^"]+)"', target.read_text(encoding="utf-8")))
            if urllib.parse.unquote(parsed.fragment) not in ids:
                broken.append(link)
    assert not broken, broken
