"""Profiles: one object that holds every size the course uses.

The same code runs at three scales. ``paper`` is the K-Stable-Diffusion setup,
``class`` the same models sized for a 12 GB GPU and about 30 minutes per
distillation notebook, and ``tiny`` is the toy world: a small SD trained on
captioned shapes (committed with the course) and a small student, so that the
whole method runs offline on a laptop CPU in minutes and can be measured there.
"""

from __future__ import annotations

import dataclasses
import math
import os
import typing
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
    # the teacher's outputs for every training pair are computed once and kept (on the GPU when training there)
    # if they fit in this many GiB; 0 runs the frozen teacher on every batch instead
    teacher_cache_gb: float = 2.0
    # how the RoBERTa students pad to 77: "mask" pads with [MASK], so every position keeps its own position id
    # and can say a different word; "pad" is the study's [PAD], which RoBERTa gives one shared position id, so
    # all padding outputs of a sentence are the same vector (notebook 02 shows why that matters)
    student_padding: str = "mask"
    # freeze the Korean students' word embeddings while distilling (experiments 2 and 3). The study trains every
    # weight at lr 5e-5, which moves klue's embeddings little. tiny trains at 3e-3 so the toy learns in a minute;
    # at that rate the embeddings of the words in the pairs drift away from the words pretraining put beside
    # them (빨강 beside 빨간색, 좌측 beside 왼쪽), and a word the pairs never use is lost (notebook 04 measures it)
    freeze_word_embeddings: bool = False
    # sampling
    image_size: int = 512
    num_inference_steps: int = 50
    guidance_scale: float = 7.5
    sample_batch_size: int = 4
    num_eval_prompts: int | None = None
    # notebook 11 trains a toy-world UNet from scratch for this many steps (batch 16): always the toy world, sized so
    # tiny runs in about a minute on a laptop CPU and class/paper get close to the committed build on a GPU
    toy_unet_steps: int = 3000
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
        """A copy with some values changed (unknown names and values out of range raise)."""
        _check_names(changes)
        return dataclasses.replace(self, **{name: _checked(name, value, f"replace({name}={value!r})")
                                            for name, value in changes.items()})

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
        toy_unet_steps=500,
        # fp32 on every machine: the notebooks assert toy-world numbers measured in fp32, and "auto" would
        # switch to bf16 on CPUs with bf16 units (and to other precisions on GPUs)
        mixed_precision="no",
        freeze_word_embeddings=True,
    ),
}


def _check_names(values: dict[str, Any]) -> None:
    known = {f.name for f in fields(Profile)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise TypeError(f"unknown profile value(s) {unknown}; known: {sorted(known)}")


def _positive(v) -> bool:
    return v > 0


def _at_least(low):
    return lambda v: v >= low


def _device_problem(text: str) -> bool:
    import torch

    if text == "auto":
        return False
    try:
        torch.device(text)
    except (RuntimeError, ValueError):
        return True
    return False


def _folder_problem(text: str) -> str | None:
    """Why no run could write below ``text`` (None when it can; empty means outputs/<profile>)."""
    if not text:
        return None
    path = Path(text)
    if path.exists() and not path.is_dir():
        return f"{path} is a file, not a folder"
    parent = path
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        return f"{parent} is a file, so no folder can be made below it"
    if not os.access(parent, os.W_OK | os.X_OK):
        return f"this user cannot write to {parent}"
    return None


# what each value may be, beyond its type: (test, a valid value in words); output_dir has its own check
_RANGES: dict[str, tuple] = {
    "sd_id": (bool, "a model id or folder"),
    "student_id": (bool, "a model id or folder"),
    "scorer_id": (bool, "a model id or folder"),
    "data_source": (bool, "'bundled', 'toyworld', a file or folder, or a hub dataset id"),
    "num_pairs": (_at_least(1), "a whole number >= 1, or none for every pair"),
    "num_epochs": (_at_least(1), "a whole number >= 1"),
    "batch_size": (_at_least(1), "a whole number >= 1"),
    "lr": (_positive, "a number > 0, e.g. 5e-5"),
    "weight_decay": (_at_least(0), "a number >= 0"),
    "warmup_ratio": (lambda v: 0 <= v <= 1, "a share of the steps between 0 and 1"),
    "max_length": (lambda v: 2 <= v <= 77, "a whole number from 2 to 77 (SD's text encoders read at most 77 tokens)"),
    "grad_clip": (_at_least(0), "a number >= 0 (0 turns clipping off)"),
    "eval_every": (_at_least(1), "a whole number of steps >= 1"),
    "empty_prompt_weight": (_at_least(0), "a number >= 0 (0 leaves the empty prompt out)"),
    "student_padding": (lambda v: v in PADDINGS, f"one of {PADDINGS}"),
    "image_size": (lambda v: v >= 8 and v % 8 == 0, "a multiple of 8 pixels (SD's VAE halves it three times)"),
    "num_inference_steps": (_at_least(1), "a whole number >= 1"),
    "guidance_scale": (_at_least(0), "a number >= 0"),
    "sample_batch_size": (_at_least(1), "a whole number >= 1"),
    "num_eval_prompts": (_at_least(1), "a whole number >= 1, or none for every prompt"),
    "toy_unet_steps": (_at_least(2), "a whole number of steps >= 2"),
    "teacher_cache_gb": (lambda v: v >= 0, "a size in GiB, 0 or more (0: no cache)"),
    "seed": (lambda v: 0 <= v < 2 ** 32, "a whole number from 0 to 2**32 - 1"),
    "device": (lambda v: not _device_problem(v), "'auto' or a torch device such as 'cpu', 'cuda', 'cuda:1', 'mps'"),
    "mixed_precision": (lambda v: v in PRECISIONS, f"one of {PRECISIONS}"),
}


def check_value(name: str, value: Any) -> Any:
    """``value`` as the type of the profile field ``name`` (text is parsed), or ValueError saying what it may be.

    Whole numbers may come as ``16``, ``16.0``, ``"16"`` or ``"1e3"``, never as
    ``2.5``; ``none`` gives None where the field allows it. ``output_dir``
    expands ``~`` and must be a folder that can be written or created.
    """
    kind = typing.get_type_hints(Profile)[name]
    if kind is bool:  # switches: True/False, or from the environment 1/0, true/false, yes/no, on/off
        if isinstance(value, bool):
            return value
        words = {"1": True, "true": True, "yes": True, "on": True, "0": False, "false": False, "no": False, "off": False}
        if isinstance(value, str) and value.strip().lower() in words:
            return words[value.strip().lower()]
        raise ValueError(f"{name} must be True or False (in the environment 1/0, true/false, yes/no or on/off), "
                         f"got {value!r}")
    optional = type(None) in typing.get_args(kind)
    base = next(t for t in (int, float, str) if t is kind or t in typing.get_args(kind))
    test, what = _RANGES.get(name, (lambda v: True, "text"))

    def refuse(why: str = what):
        raise ValueError(f"{name} must be {why}, got {value!r}")

    converted = value
    if isinstance(value, str) and optional and value.strip().lower() in ("none", "null", ""):
        converted = None
    elif isinstance(value, str) and base is not str:
        try:
            converted = float(value)
        except ValueError:
            converted = "not a number"  # refused below, outside this handler
    elif isinstance(value, Path) and base is str:
        converted = str(value)
    if converted is None:
        if optional:
            return None
        refuse()
    if isinstance(converted, bool) or not isinstance(converted, (int, float) if base is not str else str):
        refuse()
    if base is not str:
        if not math.isfinite(converted):
            refuse()
        if base is int:
            if converted != int(converted):
                refuse()
            converted = int(converted)
        else:
            converted = float(converted)
    if name == "output_dir":
        converted = os.path.expanduser(converted)
        problem = _folder_problem(converted)
        if problem:
            refuse(f"a folder that can be written ({problem})")
        return converted
    if not test(converted):
        refuse()
    return converted


def _checked(name: str, value: Any, where: str) -> Any:
    try:
        return check_value(name, value)
    except ValueError as err:
        raise ValueError(f"{where}: {err}") from None


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
    environment variables, then keyword overrides, in that order of priority.

    Each value is checked where it enters (``check_value``): a wrong type or a
    value out of range raises ValueError naming the variable or keyword.
    """
    name = name or default_profile_name()
    if name not in PROFILES:
        raise ValueError(f"unknown profile {name!r}; choose one of {sorted(PROFILES)} (KDSD_PROFILE=...)")
    base = PROFILES[name]
    _check_names(overrides)
    changes: dict[str, Any] = {}
    for f in fields(Profile):
        variable = ENV_PREFIX + f.name.upper()
        env = os.environ.get(variable)
        if env is not None and f.name != "name":
            changes[f.name] = _checked(f.name, env, f"{variable}={env!r}")
    changes.update({name: _checked(name, value, f"{name}={value!r}") for name, value in overrides.items()})
    cfg = dataclasses.replace(base, **changes)
    if not cfg.output_dir:
        cfg = dataclasses.replace(cfg, output_dir=str(output_root() / cfg.name))
    return cfg


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and PyTorch (CPU and every GPU) so reruns give the same numbers.

    Accelerate's ``set_seed`` does the seeding (the same calls the course made by hand);
    ``PYTHONHASHSEED`` is set for the processes this one starts (notebook kernels, ``accelerate launch``).
    """
    from accelerate.utils import set_seed

    set_seed(seed)
    os.environ.setdefault("PYTHONHASHSEED", str(seed))


# ------------------------------------------------------------- the experiments
# The study's three experiments, one registry: what each student learns to match, the 77 x d sequence that the
# UNet reads or the pooled vector (05). models.EXPERIMENTS and distill.TARGETS are these.
TARGETS = {"clip": "sequence", "roberta": "sequence", "roberta_pooler": "pooled"}
EXPERIMENTS = tuple(TARGETS)


def check_experiment(experiment: str) -> str:
    """``experiment`` if it is one of :data:`EXPERIMENTS`, else a ValueError that lists them."""
    if experiment not in EXPERIMENTS:
        raise ValueError(f"unknown experiment {experiment!r}; choose one of {EXPERIMENTS}")
    return experiment
