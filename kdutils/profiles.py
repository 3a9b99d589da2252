"""Profiles: one object that holds every size the course uses.

The same code runs at three scales. ``paper`` is the K-Stable-Diffusion setup,
``class`` the same models sized for a 12 GB GPU and about 30 minutes per
distillation notebook, and ``tiny`` is the toy world: a small SD trained on
captioned shapes (committed with the course) and a small student, so that the
whole method runs offline on a laptop CPU in minutes and can be measured there.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

ENV_PREFIX = "KDSD_"
PRECISIONS = ("auto", "no", "bf16", "fp16")
PADDINGS = ("mask", "pad")


def auto_device() -> str:
    """``cuda`` when a CUDA GPU is present, else ``mps`` (an Apple GPU), else ``cpu``."""
    import torch

    if torch.cuda.is_available():
        return "cuda"
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        return "mps"
    return "cpu"


def output_root() -> Path:
    """``outputs/`` at the repository root for a clone, else in the working folder.

    Each profile writes to its own subfolder, so a tiny test run never
    overwrites what a ``class`` run trained.
    """
    repo_root = Path(__file__).resolve().parent.parent
    if (repo_root / "notebooks").is_dir():
        return repo_root / "outputs"
    return Path.cwd() / "kdsd-outputs"


@dataclass(frozen=True)
class Profile:
    """Every size and model id a notebook or command needs.

    Model ids that start with ``tiny/`` are built locally on first use and
    resolved to folders by :func:`kdutils.resolve`; all others are hub ids.
    """

    name: str
    # models
    sd_id: str  # the SD pipeline; its text_encoder + tokenizer are the teacher
    student_id: str  # the Korean encoder of experiments 2 and 3
    scorer_id: str  # a CLIP model other than the teacher, used only to score images
    # data
    data_source: str
    data_config: str | None
    num_pairs: int | None  # None: every pair of the source
    # distillation
    num_epochs: int
    batch_size: int
    lr: float
    weight_decay: float = 1e-4
    warmup_ratio: float = 0.1
    max_length: int = 77
    grad_clip: float = 1.0
    eval_every: int = 500
    empty_prompt_weight: float = 1.0
    # how the RoBERTa students pad to 77: "mask" pads with [MASK], so every position keeps its own position id
    # and can say a different word; "pad" is the study's [PAD], which RoBERTa gives one shared position id, so
    # all padding outputs of a sentence are the same vector (notebook 02 shows why that matters)
    student_padding: str = "mask"
    # sampling
    image_size: int = 512
    num_inference_steps: int = 50
    guidance_scale: float = 7.5
    sample_batch_size: int = 4
    num_eval_prompts: int | None = None
    # run
    seed: int = 0
    device: str = "auto"
    # training precision: "auto" (bf16 on GPUs of compute capability 8.0 or more, fp16 with a gradient
    # scaler on older GPUs, bf16 on CPUs with AVX512-BF16 or AMX, fp32 on other CPUs and on Apple's MPS),
    # "no" (fp32), "bf16" (also on a CPU), "fp16" (CUDA only)
    mixed_precision: str = "auto"
    output_dir: str = ""  # empty: outputs/<profile name>

    @property
    def torch_device(self) -> str:
        """The device string to pass to ``.to()``: ``auto`` picks CUDA, else Apple's MPS, else the CPU."""
        if self.device != "auto":
            return self.device
        return auto_device()

    @property
    def is_tiny(self) -> bool:
        """True in the toy world (tiny models; its numbers measure the toy world, not SD v1.4)."""
        return self.sd_id.startswith("tiny/")

    @property
    def world(self) -> str:
        """Which world this profile's images and numbers come from, for figure titles and tables."""
        if self.is_tiny:
            return "toy world of shapes (tiny models trained by the course), not SD v1.4"
        return self.sd_id

    def out(self, *parts: str) -> Path:
        """A folder under the output folder, created on first use."""
        path = Path(self.output_dir).joinpath(*parts)
        path.mkdir(parents=True, exist_ok=True)
        return path

    def replace(self, **changes: Any) -> "Profile":
        """A copy with some values changed (unknown names raise)."""
        _check_names(changes)
        return dataclasses.replace(self, **changes)

    def summary(self) -> str:
        """Two lines that say which profile is active and its main sizes."""
        pairs = "all" if self.num_pairs is None else f"{self.num_pairs:,}"
        line1 = (f"profile={self.name} device={self.torch_device} mixed_precision={self.mixed_precision} "
                 f"output={self.output_dir}")
        line2 = (
            f"sd={self.sd_id} student={self.student_id} data={self.data_source} pairs={pairs} "
            f"epochs={self.num_epochs} batch={self.batch_size} lr={self.lr:g} "
            f"image={self.image_size}px steps={self.num_inference_steps}"
        )
        if self.is_tiny:
            line2 += ("\n(toy world: a small SD trained on captioned shapes; its numbers measure the toy world, "
                      "not SD v1.4)")
        return line1 + "\n" + line2


_SD = "CompVis/stable-diffusion-v1-4"
_STUDENT = "klue/roberta-small"

PROFILES: dict[str, Profile] = {
    "paper": Profile(
        name="paper",
        sd_id=_SD,
        student_id=_STUDENT,
        scorer_id="openai/clip-vit-base-patch16",
        data_source="Helsinki-NLP/opus-100",
        data_config="en-ko",
        num_pairs=250_000,
        num_epochs=5,
        batch_size=32,
        lr=5e-5,
        eval_every=2_000,
        student_padding="pad",  # as the study trained
    ),
    # sized by arithmetic (kdutils.sizing; README "class 프로필의 크기"), an estimate until a GPU measures it:
    # the slowest distillation notebook (03, CLIP: 93.1 GFLOP a pair) fits 30 minutes in a fresh Colab
    # runtime on a T4 at 15% of its 65 TFLOP/s fp16 peak up to ~116,000 pairs; 110,000 pairs leave 106,000 to
    # train on, 11% of the study's 1,000,000 pair passes. The study's batch, lr, weight decay and schedule are
    # kept; one epoch over new pairs instead of five over fewer (OPUS-100 en-ko has ~1M pairs, and the study
    # got more from more pairs). Too large for prepare_train's 2 GiB teacher cache (12 GiB): the teacher runs
    # on each batch.
    "class": Profile(
        name="class",
        sd_id=_SD,
        student_id=_STUDENT,
        scorer_id="openai/clip-vit-base-patch16",
        data_source="Helsinki-NLP/opus-100",
        data_config="en-ko",
        num_pairs=110_000,
        num_epochs=1,
        batch_size=32,
        lr=5e-5,
        eval_every=500,  # 3,313 steps: 8 evaluations, each also writing last/ (CLIP: 1.5 GB with AdamW state)
        num_inference_steps=30,
        sample_batch_size=2,
        num_eval_prompts=16,
    ),
    "tiny": Profile(
        name="tiny",
        sd_id="tiny/stable-diffusion",
        student_id="tiny/roberta-small",
        scorer_id="tiny/clip-scorer",
        data_source="toyworld",
        data_config=None,
        num_pairs=None,
        num_epochs=8,
        batch_size=16,  # 744 steps of 32 left Korean colour at 0.69; 1,488 steps of 16 reach 0.98 in about the same time
        lr=3e-3,
        weight_decay=1e-4,
        eval_every=200,
        image_size=64,
        num_inference_steps=20,
        guidance_scale=2.5,
        sample_batch_size=16,
        num_eval_prompts=24,
        # fp32 on every machine: the notebooks assert toy-world numbers measured in fp32, and "auto" would
        # switch to bf16 on CPUs with bf16 units (and to other precisions on GPUs)
        mixed_precision="no",
    ),
}


def _check_names(values: dict[str, Any]) -> None:
    known = {f.name for f in fields(Profile)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise TypeError(f"unknown profile value(s) {unknown}; known: {sorted(known)}")


def _parse(text: str, default: Any) -> Any:
    """Read an environment string as the type of the profile's value."""
    if text.lower() in ("none", "null", ""):
        return None
    if isinstance(default, bool):
        return text.lower() in ("1", "true", "yes")
    if isinstance(default, int):
        return int(float(text))
    if isinstance(default, float):
        return float(text)
    if default is None:
        for kind in (int, float):
            try:
                return kind(text)
            except ValueError:
                pass
    return text


def default_profile_name() -> str:
    """``KDSD_PROFILE`` if set, else ``class`` with CUDA and ``tiny`` without."""
    name = os.environ.get(ENV_PREFIX + "PROFILE")
    if name:
        return name
    try:
        import torch

        return "class" if torch.cuda.is_available() else "tiny"
    except ImportError:
        return "tiny"


def get_profile(name: str | None = None, **overrides: Any) -> Profile:
    """The active profile: ``name`` (or ``KDSD_PROFILE``), then ``KDSD_<VALUE>``
    environment variables, then keyword overrides, in that order of priority."""
    name = name or default_profile_name()
    if name not in PROFILES:
        raise ValueError(f"unknown profile {name!r}; choose one of {sorted(PROFILES)} (KDSD_PROFILE=...)")
    base = PROFILES[name]
    _check_names(overrides)
    changes: dict[str, Any] = {}
    for f in fields(Profile):
        env = os.environ.get(ENV_PREFIX + f.name.upper())
        if env is not None and f.name != "name":
            changes[f.name] = _parse(env, getattr(base, f.name))
    changes.update(overrides)
    cfg = dataclasses.replace(base, **changes)
    if cfg.mixed_precision not in PRECISIONS:
        raise ValueError(f"unknown mixed_precision {cfg.mixed_precision!r}; choose one of {PRECISIONS} "
                         f"(KDSD_MIXED_PRECISION=... or setup(mixed_precision=...))")
    if cfg.student_padding not in PADDINGS:
        raise ValueError(f"unknown student_padding {cfg.student_padding!r}; choose one of {PADDINGS} "
                         f"(KDSD_STUDENT_PADDING=... or setup(student_padding=...))")
    if not cfg.output_dir:
        cfg = dataclasses.replace(cfg, output_dir=str(output_root() / cfg.name))
    return cfg
