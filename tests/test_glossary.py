"""The glossary is the one source of the course's Korean terms: what it marks as avoided appears nowhere."""

import json
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TEXTS = sorted((ROOT / "notebooks").rglob("*.ipynb")) + [ROOT / "README.md"]


def avoided_terms() -> dict[str, str]:
    """``{avoided: use instead}`` from the glossary's "피하는 말" table."""
    text = (ROOT / "docs" / "glossary.md").read_text(encoding="utf-8")
    section = text.split("## 피하는 말", 1)[1]
    rows = [line.split("|")[1:3] for line in section.splitlines() if line.startswith("| ") and "---" not in line]
    return {avoid.strip(): instead.strip() for avoid, instead in rows[1:]}  # rows[0] is the header


def test_the_glossary_lists_avoided_terms():
    terms = avoided_terms()
    assert {"음수 프롬프트", "손으로 쓴", "돕니다"} <= set(terms) and all(terms.values())


def avoided_in(text: str) -> list[str]:
    """Each avoided term ``text`` uses, with what to write instead."""
    return [f"{term!r} (use {instead!r})" for term, instead in avoided_terms().items() if re.search(re.escape(term), text)]


def test_no_notebook_or_readme_uses_an_avoided_term():
    found = [f"{path.relative_to(ROOT)}: {hit}" for path in TEXTS for hit in avoided_in(path.read_text(encoding="utf-8"))]
    assert not found, "\n".join(found)


def test_the_check_catches_an_avoided_term():
    assert avoided_in("한국어 음수 프롬프트를 넣고, 손으로 쓴 루프가 돕니다") == [
        "'음수 프롬프트' (use '네거티브 프롬프트')", "'손으로 쓴' (use '직접 구현한')", "'돕니다' (use '실행됩니다, 돌아갑니다')"]
    assert avoided_in("손으로 그린 그림에 네거티브 프롬프트를 넣습니다") == []


def first_uses() -> list[tuple[list[str], int]]:
    """``(terms, lesson)`` for each glossary row with a first-use column: the row's Korean names and its earliest lesson."""
    text = (ROOT / "docs" / "glossary.md").read_text(encoding="utf-8")
    rows = []
    for block in text.split("\n## ")[1:]:
        lines = [line for line in block.splitlines() if line.startswith("| ")]
        if not lines or "처음 나오는 곳" not in lines[0]:
            continue
        for line in lines[2:]:
            cells = [c.strip() for c in line.split("|")[1:-1]]
            lessons = re.findall(r"\b\d\d\b", cells[-1])
            names = [re.sub(r"\(.*?\)", "", name).strip() for name in cells[0].split(",")]
            if lessons:
                rows.append(([n for n in names if len(n) >= 2], int(min(lessons))))
    return rows


def lesson_prose() -> dict[int, str]:
    """Each numbered lesson's markdown, without 00's course map and the closing links onwards (previews, not uses)."""
    prose = {}
    for path in sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb")):
        cells = json.loads(path.read_text(encoding="utf-8"))["cells"]
        texts = ["".join(c["source"]) for c in cells if c["cell_type"] == "markdown"]
        prose[int(path.name[:2])] = "\n".join(t for t in texts if "## 코스 지도" not in t and not t.startswith("다음:"))
    return prose


def uses(term: str, text: str) -> bool:
    """``term`` as a word of ``text`` (not the end of a longer word: 상한 is not in 이상한)."""
    return re.search(r"(?<![가-힣A-Za-z])" + re.escape(term), text) is not None


def test_no_lesson_uses_a_term_before_the_lesson_that_introduces_it():
    prose = lesson_prose()
    early = []
    for names, lesson in first_uses():
        used = [n for n, text in prose.items() if any(uses(name, text) for name in names)]
        if not used:  # the lessons still say it in English (pooler 출력, img2img, strength): the Korean pass's work
            continue
        if min(used) < lesson:
            early.append(f"{names}: glossary says {lesson:02d}, used in {min(used):02d}")
        assert any(uses(name, prose[lesson]) for name in names), f"{names}: lesson {lesson:02d} never says it"
    assert not early, "\n".join(early)


def test_the_order_check_catches_an_early_use():
    assert uses("상한", "선생의 영어가 상한입니다") and not uses("상한", "이상한 글자")
