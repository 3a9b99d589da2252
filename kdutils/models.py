"""Loading the teacher and the students, counting parameters, and finding students trained elsewhere."""

from __future__ import annotations

import json
import os
import re
import shutil
import warnings
from pathlib import Path

from .profiles import EXPERIMENTS, check_experiment  # noqa: F401 (kd.models.EXPERIMENTS as before)
from .tiny import resolve



def count_parameters(model) -> int:
    """Number of parameters (the study reports 123,060,080 for CLIP and 68,090,880 for roberta-small)."""
    return sum(p.numel() for p in model.parameters())


def quiet_load_bars() -> None:
    """Hide the bars transformers and diffusers draw for every load from disk, keep the hub's download bars.

    Each ``from_pretrained`` draws a "Loading weights" (transformers) or
    "Loading pipeline components" (diffusers) bar, a dozen per lesson, which
    bury a notebook's output. transformers' own switch would also silence
    huggingface_hub, and then the first multi-GB download of SD (06, 07) runs
    without a sign of progress; so the hub's bars are switched back on.
    """
    from diffusers.utils import logging as diffusers_logging
    from huggingface_hub.utils import enable_progress_bars
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    diffusers_logging.disable_progress_bar()
    enable_progress_bars()


def load_tokenizers(cfg):
    """``(teacher_tokenizer, student_tokenizer)``: SD's CLIP tokenizer and the Korean student's, as shipped.

    For measuring and cleaning text (no model is loaded, nothing is truncated).
    """
    from transformers import AutoTokenizer, CLIPTokenizer

    return (CLIPTokenizer.from_pretrained(resolve(cfg.sd_id), subfolder="tokenizer"),
            AutoTokenizer.from_pretrained(resolve(cfg.student_id)))


def load_teacher(cfg, device: str | None = None, dtype=None):
    """The frozen teacher: SD's own ``tokenizer`` and ``text_encoder`` (CLIP), in eval mode.

    Returns ``(teacher_tokenizer, teacher)``.
    """
    from transformers import CLIPTextModel, CLIPTokenizer

    teacher_tokenizer = CLIPTokenizer.from_pretrained(resolve(cfg.sd_id), subfolder="tokenizer")
    teacher = CLIPTextModel.from_pretrained(resolve(cfg.sd_id), subfolder="text_encoder")
    teacher.requires_grad_(False).eval()
    teacher.to(device or cfg.torch_device, dtype=dtype)
    return teacher_tokenizer, teacher


def set_padding(tokenizer, padding: str = "mask"):
    """Make a RoBERTa student's tokenizer pad with ``[MASK]`` (``"mask"``) or keep ``[PAD]`` (``"pad"``).

    RoBERTa numbers positions from the token ids and gives every ``[PAD]`` one
    shared position id, so all padding outputs of a sentence are one vector.
    ``[MASK]`` is not the model's padding id: positions keep counting and each
    padding position can say a different word where the English sentence is
    longer than the Korean one. The attention mask is the same either way.
    The choice is saved with the tokenizer, so a trained student keeps it.
    """
    if padding == "mask":
        tokenizer.pad_token = tokenizer.mask_token
    elif padding != "pad":
        raise ValueError(f"unknown padding {padding!r}; choose 'mask' or 'pad'")
    return tokenizer


def load_student(cfg, experiment: str, teacher_hidden_size: int | None = None):
    """A fresh student for an experiment, before any distillation.

    ``clip``: a CLIPTextModel initialised from the teacher, with the CLIP
    tokenizer for both languages. ``roberta``/``roberta_pooler``: the Korean
    encoder ``cfg.student_id`` with its WordPiece tokenizer, set up so that the
    diffusers pipeline passes it the attention mask it was trained with, and
    padding as ``cfg.student_padding`` says (see ``set_padding``).
    Returns ``(student_tokenizer, student)``.
    """
    from transformers import AutoModel, AutoTokenizer, CLIPTextModel, CLIPTokenizer

    check_experiment(experiment)
    if experiment == "clip":
        student_tokenizer = CLIPTokenizer.from_pretrained(resolve(cfg.sd_id), subfolder="tokenizer")
        student = CLIPTextModel.from_pretrained(resolve(cfg.sd_id), subfolder="text_encoder")
    else:
        student_tokenizer = AutoTokenizer.from_pretrained(resolve(cfg.student_id))
        student = AutoModel.from_pretrained(resolve(cfg.student_id))
        student.config.use_attention_mask = True  # diffusers' encode_prompt reads this flag
        set_padding(student_tokenizer, cfg.student_padding)
    student_tokenizer.model_max_length = cfg.max_length
    if teacher_hidden_size is not None and student.config.hidden_size != teacher_hidden_size:
        raise ValueError(
            f"student hidden size {student.config.hidden_size} != teacher hidden size {teacher_hidden_size}: "
            f"the UNet reads {teacher_hidden_size}-wide embeddings; pick a student of that width "
            f"(klue/roberta-small has 768, like SD v1's CLIP)"
        )
    return student_tokenizer, student


# ------------------------------------------------------- students kept elsewhere
# KDSD_TRAINED_<EXPERIMENT>: not a Profile field (those are KDSD_<FIELD>, such as KDSD_STUDENT_ID); the old name
# KDSD_STUDENT_<EXPERIMENT> shared that prefix with KDSD_STUDENT_ID and KDSD_STUDENT_PADDING, and still works, with a notice
STUDENT_ENV_PREFIX = "KDSD_TRAINED_"
OLD_STUDENT_ENV_PREFIX = "KDSD_STUDENT_"
# What a student download skips when the source is an exported pipeline: SD's own parts, which the profile loads.
_NOT_THE_STUDENT = ["unet/*", "vae/*", "safety_checker/*", "feature_extractor/*", "*.ckpt", "*.pt", "*.msgpack",
                    "*.h5", "*.onnx"]


def student_env_var(experiment: str) -> str:
    """The environment variable that names where an experiment's trained student lives: ``KDSD_TRAINED_ROBERTA`` etc."""
    check_experiment(experiment)
    return STUDENT_ENV_PREFIX + experiment.upper()


def trained_student_source(cfg, experiment: str, source: str | None = None) -> Path | None:
    """The student checkpoint folder the user keeps for ``experiment``, or None if they named none.

    ``source`` (else the environment variable ``KDSD_TRAINED_<EXPERIMENT>``) is
    a local folder or a hub repo id (``OWNER/NAME``, fetched with
    ``huggingface_hub.snapshot_download``). It may hold a ``best/`` checkpoint
    that ``kd.distill`` wrote, the run folder around one, or a pipeline that
    ``python -m kdutils export`` wrote (then the student is read from its
    ``text_encoder/`` and ``tokenizer/``). This lets a class load students a
    teacher trained once, instead of retraining them in every fresh Colab
    runtime. A folder that holds no student of this experiment and teacher
    raises an error and is left as it was.
    """
    var = student_env_var(experiment)
    from_env = source is None
    if from_env and not os.environ.get(var, "").strip():
        old = OLD_STUDENT_ENV_PREFIX + experiment.upper()
        if os.environ.get(old, "").strip():
            warnings.warn(f"{old} is the old name of {var}; it still works, but please rename it "
                          f"(KDSD_STUDENT_... is easy to confuse with the profile's KDSD_STUDENT_ID)", FutureWarning,
                          stacklevel=2)
            var = old
    source = (os.environ.get(var, "") if from_env else source).strip()
    if not source:
        return None
    where = f"{var}={source}" if from_env else f"source={source!r}"
    path = Path(source).expanduser()
    if path.exists():
        folder = path
    elif looks_like_repo_id(source):
        folder = _download_student(source, where)
    else:
        raise FileNotFoundError(f"{where}: no such folder, and not a hub repo id (OWNER/NAME); "
                                f"give the best/ folder of a trained student or the repo a teacher pushed it to")
    return _checkpoint_in(cfg, experiment, folder, where)


def looks_like_repo_id(text: str) -> bool:
    """True for a hub repo id written ``OWNER/NAME``."""
    return re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9][A-Za-z0-9_.-]*", text) is not None


def _download_student(repo_id: str, where: str) -> Path:
    """The hub repo's files, less SD's UNet, VAE and safety checker, in the hub cache."""
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(repo_id, ignore_patterns=_NOT_THE_STUDENT))
    except Exception as err:  # offline, unknown repo, private repo without a token: say which and what to do
        raise FileNotFoundError(f"{where}: could not download {repo_id!r} from the Hugging Face hub "
                                f"({type(err).__name__}: {err}); check the id, log in (`hf auth login`) for a "
                                f"private repo, or give a local folder instead") from err


def _read_json(path: Path) -> dict:
    from .files import read_json

    return read_json(path, "copy the folder again from where it was trained or exported, or train the student again")


def _checkpoint_in(cfg, experiment: str, folder: Path, where: str) -> Path:
    """``folder`` as a checkpoint that ``kd.pipeline.load_trained_student`` reads, after checking what it holds."""
    if (folder / "kdsd_meta.json").is_file():
        checkpoint, meta = folder, _read_json(folder / "kdsd_meta.json")
    elif (folder / "best" / "kdsd_meta.json").is_file():  # the run folder, e.g. outputs/class/distill/roberta
        checkpoint, meta = folder / "best", _read_json(folder / "best" / "kdsd_meta.json")
    elif (folder / "kdsd_export.json").is_file() and (folder / "text_encoder").is_dir():
        meta = {k: v for k, v in _read_json(folder / "kdsd_export.json").items()
                if k not in ("sd", "student_checkpoint")}
        checkpoint = None
    else:
        raise FileNotFoundError(
            f"{where}: {folder} holds no trained student (no kdsd_meta.json, no best/kdsd_meta.json, no "
            f"kdsd_export.json); give the best/ folder that kd.distill or `python -m kdutils train` wrote, "
            f"or a pipeline folder that `python -m kdutils export` wrote. Nothing was changed.")
    found = meta.get("experiment")
    if found != experiment:
        hint = f"; set {student_env_var(found)} to it instead" if found in EXPERIMENTS else ""
        raise ValueError(f"{where}: {folder} holds a student of experiment {found!r}, not {experiment!r}{hint}")
    if meta.get("teacher") != cfg.sd_id:
        raise ValueError(f"{where}: this student was distilled from {meta.get('teacher')!r}'s text encoder, but "
                         f"profile {cfg.name!r} draws with {cfg.sd_id!r}; use a student of this profile's teacher "
                         f"or the profile it was trained in (its meta says profile {meta.get('profile')!r})")
    if checkpoint is None:
        checkpoint = _student_of_export(cfg, folder, meta)
    return checkpoint


def _student_of_export(cfg, folder: Path, meta: dict) -> Path:
    """An exported pipeline's student as one checkpoint folder (links to its files, under the output folder).

    The exported folder itself is only read.
    """
    import hashlib

    key = hashlib.sha1(str(folder.resolve()).encode()).hexdigest()[:12]
    view = cfg.out("students", f"{meta['experiment']}-{key}")
    for old in view.iterdir():
        old.unlink()
    for part in ("text_encoder", "tokenizer"):
        for file in sorted((folder / part).iterdir()):
            if file.is_file():
                try:
                    (view / file.name).symlink_to(file.resolve())
                except OSError:  # no symlinks (e.g. Windows without developer mode): copy
                    shutil.copy2(file, view / file.name)
    (view / "kdsd_meta.json").write_text(json.dumps({**meta, "exported_pipeline": str(folder)}, indent=2,
                                                    ensure_ascii=False) + "\n", encoding="utf-8")
    return view
