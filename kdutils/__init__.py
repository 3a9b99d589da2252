"""kdutils: the small helper package shared by the course notebooks.

Every notebook starts with ``cfg = kdutils.setup()``, which picks the profile
(``KDSD_PROFILE``: ``tiny``, ``class`` or ``paper``), fixes the seeds, chooses
the device, creates the output folder and hides the per-load progress bars
(downloads keep theirs).
"""

from __future__ import annotations

import logging
import os
import sys

from . import colab, data, distill, metrics, pipeline, plots, report, toymodels, world
from .models import EXPERIMENTS, count_parameters, load_student, load_teacher, load_tokenizers, quiet_load_bars
from .profiles import PROFILES, Profile, get_profile, seed_everything
from .tiny import resolve

__all__ = ["EXPERIMENTS", "PROFILES", "Profile", "colab", "count_parameters", "data", "distill", "metrics", "pipeline", "load_student", "toymodels", "world",
           "load_teacher", "load_tokenizers", "get_profile", "quiet_load_bars", "plots", "report", "resolve", "seed_everything", "setup"]
__version__ = "0.1.0"

# There is no CPU build of torchvision; transformers then falls back to PIL
# image processors, which is fine, and says so on every import.
logging.getLogger("transformers.utils.import_utils").addFilter(lambda record: "requires torchvision" not in record.getMessage())


def setup(profile: str | None = None, *, quiet: bool = False, **overrides) -> Profile:
    """Pick the profile, seed everything, create the output folder and say so once.

    ``profile`` defaults to ``KDSD_PROFILE`` (else ``class`` with CUDA, ``tiny``
    without); keyword overrides win over ``KDSD_<NAME>`` environment variables.
    """
    from .plots import use_korean_font

    chosen = profile or os.environ.get("KDSD_PROFILE")
    cfg = get_profile(profile, **overrides)
    _check_device(cfg, chosen)
    seed_everything(cfg.seed)
    cfg.out()
    use_korean_font()  # warns if no font has Hangul; matplotlib's missing-glyph warnings stay visible
    quiet_load_bars()  # no bar per load from disk; downloads from the hub keep theirs
    if not quiet:
        print(cfg.summary())
    if not chosen and cfg.is_tiny:  # one prominent line, even when quiet: a class must not drift apart unseen
        print(NO_GPU_NOTE + (COLAB_GPU_HINT if "google.colab" in sys.modules else ""))
    return cfg


NO_GPU_NOTE = ("*** No GPU here, so this is the tiny profile (the toy world), not class. Everyone in a class should "
               "see the same profile: get a GPU runtime and rerun, or choose on purpose with kd.setup(\"tiny\") "
               "or KDSD_PROFILE=tiny. ***")
COLAB_GPU_HINT = " On Colab: Runtime > Change runtime type > T4 GPU, then rerun from the top."


def _check_device(cfg: Profile, chosen: str | None) -> None:
    """Refuse a profile made for a GPU on a machine without one, unless its device was asked for.

    ``class`` and ``paper`` download SD v1.4 (about 5 GB) and distil full-size
    encoders; on a CPU each notebook would run for hours. An explicit
    ``device="cpu"`` (``KDSD_DEVICE=cpu``) runs them there all the same.
    """
    if chosen and not cfg.is_tiny and cfg.device == "auto" and cfg.torch_device == "cpu":
        raise RuntimeError(
            f"the {cfg.name} profile needs a GPU (it samples SD v1.4 and distils full-size encoders; about 12 GB "
            f"of GPU memory), and this machine has none. Use a GPU runtime (Colab: Runtime > Change runtime type > "
            f"T4 GPU), or kd.setup(\"tiny\") for the toy world on a CPU; to run {cfg.name} on this CPU anyway "
            f"(hours per notebook), pass device=\"cpu\" (KDSD_DEVICE=cpu).")
