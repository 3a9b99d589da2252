"""The glossary is the one source of the course's Korean terms: what it marks as avoided appears nowhere."""

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
