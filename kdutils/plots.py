"""Figures the notebooks share: image grids and loss curves."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence


def image_grid(images: Sequence, titles: Sequence[str] | None = None, ncols: int | None = None,
               row_labels: Sequence[str] | None = None, suptitle: str | None = None,
               size: float = 2.2, save: str | Path | None = None):
    """Show PIL images (or HxWx3 arrays) in a grid with optional titles; return the figure.

    ``row_labels`` names each row on the left, ``save`` also writes a PNG.
    """
    import matplotlib.pyplot as plt
    import numpy as np

    n = len(images)
    if n == 0:
        raise ValueError("image_grid got no images")
    ncols = ncols or min(n, 4)
    nrows = (n + ncols - 1) // ncols
    fig, axes = plt.subplots(nrows, ncols, figsize=(size * ncols, size * nrows + (0.4 if suptitle else 0)),
                             squeeze=False, layout="constrained")  # leaves room for the suptitle
    for i, ax in enumerate(axes.flat):
        ax.set_xticks([])
        ax.set_yticks([])
        for spine in ax.spines.values():
            spine.set_visible(False)
        if i < n:
            ax.imshow(np.asarray(images[i]))
            if titles is not None:
                ax.set_title(str(titles[i]), fontsize=8)
    if row_labels is not None:
        for r, label in enumerate(row_labels):
            axes[r, 0].set_ylabel(label, fontsize=9)
    if suptitle:
        fig.suptitle(suptitle, fontsize=10)
    if save is not None:
        Path(save).parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(save, dpi=120, bbox_inches="tight")
    return fig


def use_korean_font() -> str | None:
    """Make matplotlib draw Hangul; return the font's name, or None (with a warning) if there is none.

    Uses NanumGothic from the ``koreanize-matplotlib`` package, else an installed
    font with Hangul. The package's fonts are registered here rather than by
    importing it: its import needs ``distutils``, gone from Python 3.12 on.
    """
    import importlib.util
    import warnings

    import matplotlib
    from matplotlib import font_manager

    spec = importlib.util.find_spec("koreanize_matplotlib")
    if spec is not None and not any(f.name == "NanumGothic" for f in font_manager.fontManager.ttflist):
        for ttf in sorted(Path(spec.submodule_search_locations[0], "fonts").glob("*.ttf")):
            font_manager.fontManager.addfont(str(ttf))
    wanted = ("NanumGothic", "Noto Sans CJK KR", "Noto Sans KR", "Malgun Gothic", "AppleGothic", "UnDotum")
    available = {f.name for f in font_manager.fontManager.ttflist}
    for name in wanted:
        if name in available:
            matplotlib.rcParams["font.family"] = name
            matplotlib.rcParams["axes.unicode_minus"] = False  # NanumGothic has no minus sign U+2212
            return name
    warnings.warn("No font with Hangul found, so Korean text in figures shows as boxes. Install one with "
                  "`pip install koreanize-matplotlib` (kdutils declares it, so `pip install -e .` brings it) and rerun kd.setup().",
                  stacklevel=2)
    return None


def loss_curves(metrics: dict, title: str | None = None, save: str | Path | None = None):
    """Train loss and validation loss (en, ko) against steps, with the step saved as ``best/``.

    Accepts the dict that ``kd.distill.load_metrics`` returns or a ``DistillResult``.
    Zero losses (the CLIP student's English loss at step 0) fall off the log axis.
    """
    import matplotlib.pyplot as plt

    history = metrics["history"] if isinstance(metrics, dict) else metrics.history
    train_log = metrics["train_log"] if isinstance(metrics, dict) else metrics.train_log
    best_step = metrics["best_step"] if isinstance(metrics, dict) else metrics.best_step
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.4))
    left.plot([r["step"] for r in train_log], [r["loss"] for r in train_log], label="train loss")
    left.plot([h["step"] for h in history], [h["val_loss"] for h in history], "o-", label="val loss")
    right.plot([h["step"] for h in history], [h["mse_en"] for h in history], "o-", label="val en")
    right.plot([h["step"] for h in history], [h["mse_ko"] for h in history], "o-", label="val ko")
    for ax, name in ((left, "loss (MSE x 100)"), (right, "val MSE x 100 by language")):
        ax.axvline(best_step, color="gray", linestyle="--", label=f"best/ (step {best_step})")
        ax.set_xlabel("step")
        ax.set_ylabel(name)
        ax.set_yscale("log")
        ax.legend()
        ax.grid(alpha=0.3)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    if save is not None:
        Path(save).parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(save, dpi=120, bbox_inches="tight")
    return fig
