"""kdutils.plots: Hangul in figures renders with a real font, not as boxes.

matplotlib warns "Glyph ... missing from font(s) ..." for every character its
font lacks; the tests draw a figure to an Agg canvas and collect those warnings.
"""

import warnings

import matplotlib
import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from kdutils import plots


def missing_glyph_warnings() -> list[str]:
    """Draw a Hangul title, Hangul tick labels and negative numbers; return the missing-glyph warnings."""
    fig = Figure(figsize=(4, 3))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    ax.plot([0, 1, 2], [-1.5, 0.5, 2.0])
    ax.set_xticks([0, 1, 2], ["고양이", "빨간 우산", "눈 덮인 산"])
    ax.set_title("한국어 제목: 교사와 학생의 손실")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fig.canvas.draw()
    return [str(w.message) for w in caught if "missing from font" in str(w.message)]


def test_hangul_renders_without_missing_glyphs():
    with matplotlib.rc_context():
        name = plots.use_korean_font()
        assert name is not None, "no font with Hangul: pip install koreanize-matplotlib"
        assert missing_glyph_warnings() == []


def test_a_font_without_hangul_is_caught():
    """The check above can fail: DejaVu Sans has no Hangul, so matplotlib warns."""
    with matplotlib.rc_context({"font.family": "DejaVu Sans"}):
        found = missing_glyph_warnings()
    assert found and all("DejaVu Sans" in message for message in found)


def test_without_a_hangul_font_the_warning_says_what_to_install(monkeypatch):
    from matplotlib import font_manager

    monkeypatch.setattr("importlib.util.find_spec", lambda name: None)  # koreanize-matplotlib not installed
    monkeypatch.setattr(font_manager.fontManager, "ttflist",
                        [f for f in font_manager.fontManager.ttflist if f.name == "DejaVu Sans"])
    with matplotlib.rc_context(), pytest.warns(UserWarning, match="pip install koreanize-matplotlib"):
        assert plots.use_korean_font() is None
