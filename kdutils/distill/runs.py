"""Finished runs: read a run's metrics, say whether it is outdated, train it only when asked (notebooks 05-10)."""

from __future__ import annotations

from pathlib import Path

from ..files import read_json
from ..models import student_env_var, trained_student_source
from ..tiny import model_label
from .setup import run_dir
from .train import distill


def load_metrics(cfg, experiment: str) -> dict:
    """The ``metrics.json`` of ``experiment``'s student: the one the user named, else this profile's run.

    A student named with ``KDSD_TRAINED_<EXPERIMENT>`` (a folder or hub id,
    see ``kd.models.trained_student_source``) wins. Its metrics come from the
    ``metrics.json`` of the run it belongs to when that came along; a student
    without one (an exported pipeline, a bare ``best/``) gives what its
    checkpoint records, with ``test`` and ``history`` empty.
    """
    fix = (f"resume the run to write it again from its last/ (`python -m kdutils train --experiment {experiment} "
           f"--resume`, or distill(..., resume=True)); without last/, train again with --overwrite")
    given = trained_student_source(cfg, experiment)
    if given is not None:
        beside = given.parent / "metrics.json"
        metrics = read_json(beside, fix) if beside.is_file() else {}
        if metrics.get("experiment") != experiment:
            meta = read_json(given / "kdsd_meta.json", "copy the student's folder again, or train it again")
            metrics = {**meta, "best_step": meta.get("step"), "test": None, "history": [], "train_log": []}
        return {**metrics, "best_dir": str(given), "source": str(given)}
    path = run_dir(cfg, experiment) / "metrics.json"
    if not path.exists():
        raise FileNotFoundError(f"no metrics for {experiment!r} in profile {cfg.name!r} ({path}); "
                                f"run its notebook or `python -m kdutils train --experiment {experiment}` first, "
                                f"or name a trained one with {student_env_var(experiment)}=<folder or hub id>")
    metrics = read_json(path, fix)
    metrics["best_dir"] = str(path.parent / "best")  # where it is now, even if outputs/ moved
    return metrics


def outdated(cfg, metrics: dict, splits) -> list[str]:
    """How a finished run differs from what ``cfg`` would train now (empty when it does not).

    Catches students left in ``outputs/`` by an older course version or by a
    run with other settings: other pairs, another teacher, other padding.
    """
    from ..data import fingerprint

    why = []
    if metrics.get("teacher") != cfg.sd_id:
        why.append(f"from teacher {metrics.get('teacher')!r}, not {cfg.sd_id!r}")
    if metrics.get("data_fingerprint") != fingerprint(splits):
        why.append("on other pairs than this profile's splits")
    student = model_label(cfg.student_id)
    if metrics.get("experiment") not in (None, "clip") and metrics.get("student") not in (None, student):
        why.append(f"from student {metrics.get('student')!r}, not {student!r}")
    # runs from before the meta recorded padding are caught by their pairs (the [PAD] students trained on world v1)
    padding = metrics.get("student_padding")
    if metrics.get("experiment") != "clip" and padding is not None and padding != cfg.student_padding:
        why.append(f"with {padding!r} padding, not {cfg.student_padding!r}")
    return why


def ensure_trained(cfg, experiment: str, *, train_missing: bool = True) -> Path | None:
    """The checkpoint of ``experiment``'s student: the one the user named, else this profile's ``best/``.

    Lets the sampling notebooks run on their own. A student named with
    ``KDSD_TRAINED_<EXPERIMENT>`` (folder or hub id: what a teacher trained
    once for a class) is used as it is. Otherwise a missing student is trained
    here (an interrupted run in its folder is continued): about half a minute
    in ``tiny``; in ``class``/``paper`` run its notebook (or pass
    ``train_missing=False`` to get ``None`` instead). A
    student trained on other pairs or with other settings (``outdated``) is
    used with a warning that says what differs and how to train it again.
    """
    import warnings

    from ..data import prepare_splits

    given = trained_student_source(cfg, experiment)
    if given is not None:
        print(f"using the {experiment!r} student named by {student_env_var(experiment)}: {given}")
        return given
    try:
        metrics = load_metrics(cfg, experiment)
    except FileNotFoundError:
        if not train_missing:
            return None
        print(f"no trained {experiment!r} student in profile {cfg.name!r} yet: training it now")
        distill(cfg, experiment, prepare_splits(cfg), resume=True)
        return Path(load_metrics(cfg, experiment)["best_dir"])
    why = outdated(cfg, metrics, prepare_splits(cfg))
    if why:
        warnings.warn(f"the {experiment!r} student in {metrics['best_dir']} was trained " + "; ".join(why)
                      + f". Its numbers may not match this lesson's; to train it again, delete "
                      f"{Path(metrics['best_dir']).parent} and rerun, or run its notebook.", stacklevel=2)
    return Path(metrics["best_dir"])
