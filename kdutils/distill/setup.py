"""What a run sets up before its first step: models, precision, optimizer, data, the output folder (``setup_run``)."""

from __future__ import annotations

import math
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..files import is_leftover, read_json, recover
from ..models import load_student, load_teacher
from ..precision import make_accelerator, mixed_precision, teacher_dtype
from ..profiles import TARGETS, check_experiment
from ..tiny import model_label
from .checkpoint import FREEZABLE, TRAINING_SETTINGS, TrainState, model_folder_hooks, register_for_checkpointing
from .evaluation import EvalData, prepare_eval
from .step import make_optimizer
from .trainset import TrainData, prepare_train, trainable_pairs


@dataclass
class DistillResult:
    """Where a run wrote its checkpoints and what it measured."""

    output_dir: Path
    best_dir: Path
    best_step: int
    best_val_loss: float
    history: list[dict] = field(default_factory=list)
    train_log: list[dict] = field(default_factory=list)
    test_metrics: dict | None = None
    finished: bool = True


@dataclass
class Run:
    """Everything a training run sets up before its first step (``setup_run``); the loop only reads it."""

    cfg: Any
    experiment: str
    target: str
    accelerator: Any
    out: Path
    teacher: torch.nn.Module
    teacher_tokenizer: Any
    student: torch.nn.Module  # as Accelerate prepared it (wrapped for data parallel under accelerate launch)
    raw_student: torch.nn.Module  # the plain model: evaluated, saved and handed back, always in fp32
    student_tokenizer: Any
    optimizer: torch.optim.Optimizer
    scheduler: Any
    data: TrainData
    val: EvalData
    steps_per_epoch: int
    total_steps: int
    meta: dict  # written with every checkpoint and into metrics.json
    state: TrainState  # the step, best loss and logs; saved in last/ with the rest (register_for_checkpointing)

    @property
    def device(self) -> torch.device:
        return self.accelerator.device

    @property
    def main(self) -> bool:
        return self.accelerator.is_main_process

    @property
    def best_dir(self) -> Path:
        return self.out / "best"

    @property
    def last_dir(self) -> Path:
        return self.out / "last"

    def describe(self) -> str:
        precision = self.meta["mixed_precision"]
        return (f"{self.experiment}: {self.meta['train_pairs']:,} pairs, {self.total_steps} steps on "
                f"{self.meta['num_processes']} process(es), device {self.device.type}, student autocast "
                f"{precision if precision != 'no' else 'off (fp32)'}, teacher {self.meta['teacher_dtype']}, "
                f"evaluation in fp32")


def check_inputs(experiment: str, splits) -> None:
    """Fail early, saying what to do, on an unknown experiment or a missing train/val split."""
    check_experiment(experiment)
    for name in ("train", "val"):
        if name not in splits or len(splits[name]) == 0:
            raise ValueError(f"the {name!r} split is empty or missing; prepare data with kd.data.prepare_splits(cfg)")


RUN_ENTRIES = ("best", "last", "metrics.json", "history.csv", "train_log.csv")  # what a run writes in its folder


def run_dir(cfg, experiment: str) -> Path:
    """Where ``distill`` writes ``experiment``'s run by default: ``<output folder>/distill/<experiment>``."""
    return Path(cfg.output_dir) / "distill" / experiment


def run_entries(out: Path) -> list[str]:
    """The names in ``out`` that belong to a run (``best``, ``last``, ``metrics.json`` ...); raises on others.

    A complete copy that an interrupted swap left (``.last.new``, ``.last.old``) counts as its checkpoint.
    """
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise FileExistsError(f"{out} is a file, not a folder; give the run another output folder (--output-dir)")
    names = sorted(p.name for p in out.iterdir()) if out.is_dir() else []
    entries = {n[1:-4] if n.startswith(".") and n.endswith((".new", ".old")) else n
               for n in names if not (is_leftover(n) and n.endswith((".tmp", ".lock")))}
    foreign = sorted(entries - set(RUN_ENTRIES))
    if foreign:
        raise FileExistsError(f"{out} holds files that are not a training run's ({', '.join(foreign[:5])}"
                              f"{' ...' if len(foreign) > 5 else ''}); a run is not mixed into them. Give it a new "
                              f"or empty folder (output_dir= / --output-dir)")
    return sorted(entries)


def check_run_folder(out: Path, *, resume: bool = False, overwrite: bool = False, clean: bool = False) -> None:
    """Refuse a fresh run into a folder that already holds one, saying how to keep, continue or replace it.

    ``resume`` continues (or reuses) the run there; ``overwrite`` replaces it.
    With ``clean`` (the process that writes, holding the folder's lock) a swap
    that a crash interrupted is finished first, and ``overwrite`` removes the old run.
    """
    if resume and overwrite:
        raise ValueError("resume and overwrite exclude each other: resume continues the run in the folder, "
                         "overwrite replaces it")
    out = Path(out)
    entries = run_entries(out)
    if clean:
        for name in ("best", "last"):
            note = recover(out / name)
            if note:
                print(note)
    if not entries or resume:
        return
    if not overwrite:
        if "metrics.json" in entries:
            what = "a finished run (metrics.json"
            try:
                what += f", best/ at step {read_json(out / 'metrics.json', '')['best_step']})"
            except (ValueError, KeyError):
                what += ")"
        else:
            what = "an unfinished run"
            try:
                what += f" (last/ at step {read_json(out / 'last' / 'kdsd_meta.json', '')['step']})"
            except (ValueError, KeyError, OSError):
                pass
        raise FileExistsError(f"{out} already holds {what}, and a new run would replace it. To keep it, train into "
                              f"another folder (output_dir= / --output-dir); to continue or reuse it, resume=True "
                              f"(--resume); to replace it, overwrite=True (--overwrite)")
    if clean:
        for name in entries:
            path = out / name
            shutil.rmtree(path) if path.is_dir() else path.unlink()
        print(f"overwrite: removed the previous run in {out} ({', '.join(entries)})")


def setup_models(cfg, experiment: str, device, models: tuple | None = None, precision: str = "no") -> tuple:
    """``(teacher_tokenizer, teacher, student_tokenizer, student)``, loaded for ``experiment`` or the caller's.

    The frozen teacher ends up on ``device`` in ``teacher_dtype(device, precision)``
    (fp16 on CUDA, bf16 on a CPU training in bf16); the student's width must
    match it, since the UNet reads that width.
    """
    half = teacher_dtype(device, precision)
    if models is None:
        teacher_tokenizer, teacher = load_teacher(cfg, device=device, dtype=half)
        student_tokenizer, student = load_student(cfg, experiment, teacher.config.hidden_size)
        return teacher_tokenizer, teacher, student_tokenizer, student
    teacher_tokenizer, teacher, student_tokenizer, student = models
    teacher.requires_grad_(False).eval().to(device, half)
    if student.config.hidden_size != teacher.config.hidden_size:
        raise ValueError(f"student hidden size {student.config.hidden_size} != teacher hidden size "
                         f"{teacher.config.hidden_size}")
    return models


def setup_run(cfg, experiment: str, splits, *, models: tuple | None = None, val: EvalData | None = None,
              output_dir: str | Path | None = None) -> Run:
    """Everything before the first step: accelerator and precision, models, data, optimizer and schedule."""
    from transformers import get_cosine_schedule_with_warmup

    from ..profiles import seed_everything
    from ..data import fingerprint

    check_inputs(experiment, splits)
    target = TARGETS[experiment]
    precision = mixed_precision(cfg.torch_device, cfg.mixed_precision)
    accelerator = make_accelerator(cfg.torch_device, precision)
    device = accelerator.device
    seed_everything(cfg.seed)
    out = Path(output_dir) if output_dir else run_dir(cfg, experiment)
    if accelerator.is_main_process:
        out.mkdir(parents=True, exist_ok=True)
    teacher_tokenizer, teacher, student_tokenizer, student = setup_models(cfg, experiment, device, models, precision)
    seed_everything(cfg.seed)  # the same state however the models arrived
    student.to(device).train()

    train = trainable_pairs(splits["train"], student_tokenizer, cfg.max_length, experiment,
                            say=accelerator.is_main_process)
    data = prepare_train(teacher, teacher_tokenizer, student_tokenizer, train, target, device, cfg.max_length,
                         cfg.teacher_cache_gb)
    if val is None:
        val = prepare_eval(teacher, teacher_tokenizer, student_tokenizer, splits["val"], device, cfg.max_length)
    world = accelerator.num_processes
    steps_per_epoch = math.ceil(len(train) // world / cfg.batch_size)
    total_steps = steps_per_epoch * cfg.num_epochs
    optimizer = make_optimizer(student, target, cfg.lr, cfg.weight_decay, device,
                               freeze_words=cfg.freeze_word_embeddings and experiment in FREEZABLE)
    scheduler = get_cosine_schedule_with_warmup(optimizer, int(cfg.warmup_ratio * total_steps), total_steps)
    student, optimizer = accelerator.prepare(student, optimizer)
    # the schedule is registered, not prepared: a prepared schedule steps once per process on every step
    state = TrainState()
    register_for_checkpointing(accelerator, scheduler, state)
    # Accelerate wraps the student's forward in autocast, and that wrapper would stay on the caller's model.
    # student_loss autocasts the training forward itself, so drop the wrapper: evaluation and the student
    # handed back run in fp32 whatever the training precision.
    raw_student = accelerator.unwrap_model(student, keep_fp32_wrapper=False)
    model_folder_hooks(accelerator, raw_student, student_tokenizer)
    meta = {"profile": cfg.name, "experiment": experiment, "target": target, "teacher": cfg.sd_id,
            "student": cfg.sd_id if experiment == "clip" else model_label(cfg.student_id),
            "data_fingerprint": fingerprint(splits), "total_steps": total_steps,
            "num_processes": world, "train_pairs": len(train), "mixed_precision": precision,
            "teacher_cached": data.cached is not None,  # cached targets and the teacher's own pass differ in the last bits
            "teacher_dtype": str(teacher_dtype(device, precision)).removeprefix("torch."), "seed": cfg.seed,
            "student_padding": None if experiment == "clip" else cfg.student_padding,
            **{name: getattr(cfg, name) for name in TRAINING_SETTINGS}}
    return Run(cfg, experiment, target, accelerator, out, teacher, teacher_tokenizer, student, raw_student,
               student_tokenizer, optimizer, scheduler, data, val, steps_per_epoch, total_steps, meta, state)
