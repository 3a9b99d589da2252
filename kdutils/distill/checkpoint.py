"""Checkpoints: the ``best/`` and ``last/`` folders, and what a resume must match.

``best/`` is a model folder (``save_pretrained``) that later notebooks load. ``last/`` is Accelerate's
``save_state``: the weights, optimizer, schedule, random generators of every process and the run's
``TrainState``, from which ``load_state`` continues the run bit for bit. Either is swapped in by renames
(``kdutils.files``), so a run killed at any point leaves one complete copy.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from ..files import staging, swap_in


def save_checkpoint(folder: Path, student, tokenizer, meta: dict) -> Path:
    """Write ``save_pretrained`` files, tokenizer and ``kdsd_meta.json`` atomically (``best/``).

    Everything goes to ``.NAME.tmp`` beside ``folder`` and is swapped in by
    renames (``kdutils.files.swap_in``): a process killed at any moment leaves
    the previous checkpoint or the new one complete, never half of one, and
    the next save or resume puts it back in place (``kdutils.files.recover``).
    """
    folder = Path(folder)
    tmp = staging(folder)
    write_model(tmp, student, tokenizer)
    (tmp / "kdsd_meta.json").write_text(json.dumps(meta, indent=2, ensure_ascii=False) + "\n")
    return swap_in(folder)


def write_model(folder: Path, student, tokenizer) -> None:
    """``save_pretrained`` of the student and its tokenizer, without a progress bar."""
    from huggingface_hub.utils import are_progress_bars_disabled, enable_progress_bars
    from transformers.utils import logging as hf_logging

    bar_was_on, hub_bars_were_on = hf_logging.is_progress_bar_enabled(), not are_progress_bars_disabled()
    hf_logging.disable_progress_bar()  # save_pretrained's "Writing model shards" bar would print at every evaluation
    try:
        student.save_pretrained(str(folder))
    finally:
        if bar_was_on:
            hf_logging.enable_progress_bar()
        if hub_bars_were_on:  # transformers' switch turns the hub's download bars off too
            enable_progress_bars()
    tokenizer.save_pretrained(str(folder))


def model_folder_hooks(accelerator, student, tokenizer) -> None:
    """Let Accelerate's ``save_state`` write the student as a model folder and ``load_state`` read it back.

    The hooks of diffusers' training examples: ``last/`` then holds ``save_pretrained`` files like ``best/``
    (``from_pretrained`` loads it, with the student's own parameter names even when data parallel wraps it),
    and Accelerate writes the optimizer, schedule, random states and ``TrainState`` beside them.
    """

    def save_model(models, weights, output_dir):
        if accelerator.is_main_process:
            write_model(Path(output_dir), student, tokenizer)
        weights.clear()  # written above; Accelerate would write a second copy under the wrapper's names

    def load_model(models, input_dir):
        models.clear()  # read here instead
        load_weights(student, input_dir, "it is not the student's checkpoint")

    accelerator.register_save_state_pre_hook(save_model)
    accelerator.register_load_state_pre_hook(load_model)


def load_weights(model, folder: Path, fix: str) -> None:
    """Load ``folder/model.safetensors`` into ``model``; a missing or damaged file says which and what to do."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = Path(folder) / "model.safetensors"
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing; {fix}")
    try:
        weights = load_file(str(path))
    except (SafetensorError, OSError, RuntimeError) as err:
        raise ValueError(f"{path} is damaged ({err}); {fix}") from None
    model.load_state_dict(weights)


@dataclass
class TrainState:
    """What changes as a run goes: its step, the best validation loss so far and the logs.

    Registered with Accelerate (``register_for_checkpointing``), so ``last/`` keeps it with the weights,
    optimizer, schedule and random generators, and a resumed run ends where an uninterrupted one ends.
    """

    step: int = 0
    best_val: float = math.inf
    best_step: int = -1
    history: list[dict] = field(default_factory=list)
    train_log: list[dict] = field(default_factory=list)

    # Accelerate saves and loads what is registered with register_for_checkpointing through these two
    def state_dict(self) -> dict:
        return asdict(self)

    def load_state_dict(self, state: dict) -> None:
        self.__dict__.update(state)


# what setup_run registers with register_for_checkpointing, in this order: Accelerate saves them as
# custom_checkpoint_0.pkl, custom_checkpoint_1.pkl, ...
CHECKPOINTED = ("the learning-rate schedule", "TrainState")


def register_for_checkpointing(accelerator, scheduler, state: TrainState) -> None:
    """Let ``save_state``/``load_state`` carry the schedule and the ``TrainState`` (``CHECKPOINTED``)."""
    accelerator.register_for_checkpointing(scheduler, state)


def save_training_state(accelerator, folder: Path, meta: dict) -> Path:
    """Write ``last/`` with Accelerate's ``save_state``, plus ``kdsd_meta.json``, swapped in atomically.

    Every process calls it: each writes its own random state into the one staging folder (and, under fp16
    on several GPUs, the same gradient-scaler state), and the main process writes the rest and swaps the
    folder in.
    """
    folder, main = Path(folder), accelerator.is_main_process
    tmp = staging(folder, main=main)
    accelerator.wait_for_everyone()  # the staging folder is empty before anyone writes into it
    accelerator.save_state(str(tmp))
    accelerator.wait_for_everyone()  # every process's random state is on disk
    if main:
        (tmp / "kdsd_meta.json").write_text(json.dumps(meta, indent=2, ensure_ascii=False) + "\n")
        swap_in(folder)
    return folder


def load_training_state(accelerator, folder: Path, fix: str) -> list[str]:
    """Continue from ``last/`` with Accelerate's ``load_state``; a missing or damaged file says which and ``fix``.

    Accelerate skips a random state it cannot read and goes on quietly, which would make the resumed run
    differ from an uninterrupted one without a word: that file is read here first. A run that continues
    in fp16 from a ``last/`` saved in another precision has no gradient-scaler state to load: it starts a
    fresh scaler and says so (the returned notes).
    """
    folder = Path(folder)
    needed = [folder / "model.safetensors", folder / "optimizer.bin",
              *(folder / f"custom_checkpoint_{i}.pkl" for i in range(len(CHECKPOINTED))),
              folder / f"random_states_{accelerator.process_index}.pkl"]
    for path in needed:
        if not path.is_file():
            raise FileNotFoundError(f"{path} is missing; {fix}")
    scaler, notes = accelerator.scaler, []
    if scaler is not None and not (folder / "scaler.pt").is_file():
        accelerator.scaler, notes = None, ["a fresh fp16 gradient scaler (last/ was saved in another precision)"]
    try:
        torch.load(needed[-1], weights_only=False)
        accelerator.load_state(str(folder))
    except Exception as err:
        found = _first_unreadable(needed)
        if found is None:  # not a damaged file: let the real error through
            raise
        path, reason = found  # a truncated or overwritten file: torch, pickle and safetensors raise several kinds
        raise ValueError(f"{path} is damaged ({type(reason).__name__}: {reason}); {fix}") from err
    finally:
        accelerator.scaler = scaler
    return notes


def _first_unreadable(files: list[Path]) -> tuple[Path, Exception] | None:
    from safetensors.torch import load_file

    for path in files:
        try:
            load_file(str(path)) if path.suffix == ".safetensors" else torch.load(path, weights_only=False)
        except Exception as err:
            return path, err
    return None


# the Profile values a run records (in kdsd_meta.json and metrics.json) besides its meta
TRAINING_SETTINGS = ("lr", "batch_size", "num_epochs", "weight_decay", "warmup_ratio", "grad_clip",
                     "empty_prompt_weight", "max_length", "eval_every", "freeze_word_embeddings")


# the experiments whose student already knows Korean words, so that freezing its word embeddings keeps them
FREEZABLE = ("roberta", "roberta_pooler")


# what a resumed run must share with the run it continues: the data, the model, the order of the pairs, the
# optimisation; anything else would splice two different runs into one history
RESUME_MUST_MATCH = ("experiment", "teacher", "student", "data_fingerprint", "seed", "student_padding", "teacher_cached",
                     "num_processes", "lr", "batch_size", "num_epochs", "weight_decay", "warmup_ratio", "grad_clip",
                     "empty_prompt_weight", "max_length", "freeze_word_embeddings")


# what may change on resume: how often it evaluates, and the precision of this machine (weights stay fp32)
RESUME_APPLIED = ("eval_every", "mixed_precision")


def resume_settings(saved: dict, now: dict, where: Path) -> list[str]:
    """Check that a run may continue the one saved at ``where``; return notes on the settings it applies.

    Raises ValueError naming every setting in ``RESUME_MUST_MATCH`` that differs.
    """
    differ = [f"{k} {saved[k]!r} (now {now[k]!r})" for k in RESUME_MUST_MATCH if k in saved and saved[k] != now[k]]
    if differ:
        raise ValueError(f"cannot resume from {where}: it was trained with other settings: {'; '.join(differ)}. "
                         f"Resume with the same settings, train into another folder (output_dir= / --output-dir), "
                         f"or start over with overwrite=True (--overwrite)")
    notes = [f"{k} {saved[k]!r} -> {now[k]!r} from here on" for k in RESUME_APPLIED if k in saved and saved[k] != now[k]]
    unchecked = [k for k in RESUME_MUST_MATCH if k not in saved]
    if unchecked:
        notes.append(f"not recorded by the kdutils that wrote it, so not checked: {', '.join(unchecked)}")
    return notes
