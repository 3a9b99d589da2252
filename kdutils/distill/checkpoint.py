"""Checkpoints: the ``best/`` and ``last/`` folders, the random-number state, and what a resume must match.

A checkpoint is swapped in by renames (``kdutils.files``), so a run killed at any point leaves one
complete copy, and ``--resume`` continues bit-identically from ``last/``.
"""

from __future__ import annotations

import json
import math
import random
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..files import staging, swap_in


def rng_state() -> dict:
    import numpy as np

    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    import numpy as np

    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(folder: Path, student, tokenizer, meta: dict, state: dict | None = None) -> Path:
    """Write ``save_pretrained`` files, tokenizer, ``kdsd_meta.json`` (and training state) atomically.

    Everything goes to ``.NAME.tmp`` beside ``folder`` and is swapped in by
    renames (``kdutils.files.swap_in``): a process killed at any moment leaves
    the previous checkpoint or the new one complete, never half of one, and
    the next save or resume puts it back in place (``kdutils.files.recover``).
    """
    folder = Path(folder)
    tmp = staging(folder)
    from huggingface_hub.utils import are_progress_bars_disabled, enable_progress_bars
    from transformers.utils import logging as hf_logging

    bar_was_on, hub_bars_were_on = hf_logging.is_progress_bar_enabled(), not are_progress_bars_disabled()
    hf_logging.disable_progress_bar()  # save_pretrained's "Writing model shards" bar would print at every evaluation
    try:
        student.save_pretrained(str(tmp))
    finally:
        if bar_was_on:
            hf_logging.enable_progress_bar()
        if hub_bars_were_on:  # transformers' switch turns the hub's download bars off too
            enable_progress_bars()
    tokenizer.save_pretrained(str(tmp))
    (tmp / "kdsd_meta.json").write_text(json.dumps(meta, indent=2, ensure_ascii=False) + "\n")
    if state is not None:
        torch.save(state, tmp / "training_state.pt")
    return swap_in(folder)


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

    ``last/`` keeps it (with the weights, optimizer, schedule and random
    generators), so a resumed run ends where an uninterrupted one ends.
    """

    step: int = 0
    best_val: float = math.inf
    best_step: int = -1
    history: list[dict] = field(default_factory=list)
    train_log: list[dict] = field(default_factory=list)


# the Profile values a run records (in kdsd_meta.json and metrics.json) besides its meta
TRAINING_SETTINGS = ("lr", "batch_size", "num_epochs", "weight_decay", "warmup_ratio", "grad_clip",
                     "empty_prompt_weight", "max_length", "eval_every", "freeze_word_embeddings")


# the experiments whose student already knows Korean words, so that freezing its word embeddings keeps them
FREEZABLE = ("roberta", "roberta_pooler")


# what a resumed run must share with the run it continues: the data, the model, the order of the pairs, the
# optimisation; anything else would splice two different runs into one history
RESUME_MUST_MATCH = ("experiment", "teacher", "student", "data_fingerprint", "seed", "student_padding",
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
