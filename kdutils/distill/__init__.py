"""The distillation engine shared by notebooks 03-05 and ``python -m kdutils train``.

The loss is the study's: ``MSE(student(en), teacher(en)) + MSE(student(ko), teacher(en))``
on the last hidden state (``sequence``, what the UNet reads) or on pooled
vectors (``pooled``), plus an optional term that teaches the empty prompt used
by classifier-free guidance. Training runs under Hugging Face Accelerate: mixed
precision on CUDA, fp32 on CPU, and data parallel under ``accelerate launch``.

Reading order, one module per step of the story:

- ``step``: one step, what 03 writes by hand (``student_loss``, ``update``, ``distill_step``);
- ``evaluation``: the metrics of 03's table (``prepare_eval``, ``evaluate``);
- ``trainset``: the pairs tokenized once and the teacher's targets (``prepare_train``);
- ``setup``: models, precision (``kdutils.precision``), optimizer and output folder (``setup_run``);
- ``checkpoint``: ``best/`` and ``last/`` (Accelerate's ``save_state``), what a resume must match;
- ``train``: the loop, ``distill``;
- ``runs``: finished runs for the later notebooks (``load_metrics``, ``outdated``, ``ensure_trained``).

Everything is importable from here as before (``kd.distill.distill``, ``kd.distill.TARGETS``, ...).
Tables that put runs next to the study live in ``kdutils.report``.
"""

from __future__ import annotations

from .step import (Tokens, distill_loss, distill_step, embed, encode, make_optimizer, step_width, student_loss,
                   teacher_batch, tokenize, update)
from .evaluation import EvalData, evaluate, prepare_eval, teacher_targets
from .trainset import TrainData, epoch_order, prepare_train, trainable_pairs
from ..precision import cpu_bf16_supported, make_accelerator, mixed_precision, teacher_dtype
from .setup import (RUN_ENTRIES, DistillResult, Run, check_inputs, check_run_folder, run_dir, run_entries, setup_models,
                    setup_run)
from .checkpoint import (FREEZABLE, RESUME_APPLIED, RESUME_MUST_MATCH, TRAINING_SETTINGS, TrainState,
                         load_training_state, load_weights, resume_settings, save_checkpoint, save_training_state)
from .train import distill, evaluate_and_checkpoint, finish, log_losses, measure, resume_state, save_last, write_report
from .runs import ensure_trained, load_metrics, outdated
from ..profiles import EXPERIMENTS, TARGETS

__all__ = [
    "DistillResult", "EXPERIMENTS", "EvalData", "FREEZABLE", "RESUME_APPLIED", "RESUME_MUST_MATCH",
    "RUN_ENTRIES", "Run", "TARGETS", "TRAINING_SETTINGS", "Tokens", "TrainData", "TrainState", "check_inputs",
    "check_run_folder", "cpu_bf16_supported", "distill", "distill_loss", "distill_step", "embed", "encode",
    "ensure_trained", "epoch_order", "evaluate", "evaluate_and_checkpoint", "finish", "load_metrics",
    "load_training_state", "load_weights", "log_losses", "make_accelerator", "make_optimizer", "measure", "mixed_precision",
    "outdated", "prepare_eval", "prepare_train", "resume_settings", "resume_state", "run_dir",
    "run_entries", "save_checkpoint", "save_last", "save_training_state", "setup_models", "setup_run", "step_width",
    "student_loss", "teacher_batch", "teacher_dtype", "teacher_targets", "tokenize", "trainable_pairs",
    "update", "write_report",
]
