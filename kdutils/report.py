"""Tables that notebooks 03-05 share: a run's metrics over time, before and after, and next to the study.

Every MSE here is x100, as the engine logs it. A run is a ``DistillResult``
or the dict that ``kd.distill.load_metrics`` reads from ``metrics.json``, so
a run trained in a terminal reads the same as one trained in a notebook.
"""

from __future__ import annotations

from typing import Sequence

from .models import EXPERIMENTS

# The study's lowest validation losses as it logged them (its numbers, its scale: plain nn.MSELoss).
STUDY_RESULTS = {
    "clip": {"val_loss": 0.5647, "mse_en": 0.0694, "mse_ko": 0.4954},
    "roberta": {"val_loss": 0.9631, "mse_en": 0.4643, "mse_ko": 0.4988},
    "roberta_pooler": {"val_loss": 1.0813, "mse_en": 0.5319, "mse_ko": 0.5494},
}

# The metrics ``kd.distill.evaluate`` returns, in the order the lessons show them.
COLUMNS = ["val_loss", "mse_en", "mse_ko", "seq_mse_en", "seq_mse_ko", "cos_en", "cos_ko", "r1_ko2en", "r1_en2ko",
           "empty_mse"]


def _get(run, name: str):
    return run[name] if isinstance(run, dict) else getattr(run, name)


def history(run):
    """The validation metrics of every evaluation (step 0 included) as a DataFrame indexed by step."""
    import pandas as pd

    return pd.DataFrame(_get(run, "history")).set_index("step")


def metrics_row(metrics: dict, name: str, columns: Sequence[str] = COLUMNS):
    """One set of metrics (e.g. from ``kd.distill.evaluate``) as a one-row table named ``name``."""
    import pandas as pd

    return pd.Series(metrics)[list(columns)].to_frame(name).T


def before_after(run, columns: Sequence[str] = COLUMNS):
    """The run at its key moments: step 0 (untrained), the best step (saved as ``best/``), the last step,
    and ``best/`` scored on the test split (if there was one).

    The first three rows are validation metrics. ``"train_loss"`` in
    ``columns`` adds the last logged training loss (a 10-step mean) up to
    each step; the test row has none.
    """
    import pandas as pd

    columns = list(columns)
    val = history(run)
    best, last = _get(run, "best_step"), int(val.index[-1])
    moments = {"step 0": 0, f"best (step {best})": best, f"last (step {last})": last}
    metric_columns = [c for c in columns if c != "train_loss"]
    table = pd.DataFrame({name: val.loc[step, metric_columns] for name, step in moments.items()}).T
    if "train_loss" in columns:
        train_log = pd.DataFrame(_get(run, "train_log")).set_index("step")["loss"]
        table["train_loss"] = [train_log.asof(step) for step in moments.values()]  # NaN before the first log
    test = _get(run, "test" if isinstance(run, dict) else "test_metrics")
    if test:
        table.loc["test, best/"] = pd.Series(test)
    return table[columns]


def compare_experiments(cfg):
    """Every experiment trained so far in this profile next to the study's logged losses.

    All MSE values are x100 (the study logged plain ``nn.MSELoss`` values, so
    its numbers are multiplied by 100 here). ``val_loss``/``mse_en``/``mse_ko``
    are validation values at the best step; ``test_*`` columns score that
    checkpoint on the test split.
    """
    import pandas as pd

    from .distill import load_metrics

    rows = []
    for experiment in EXPERIMENTS:
        try:
            m = load_metrics(cfg, experiment)
        except FileNotFoundError:
            continue
        best = next(h for h in m["history"] if h["step"] == m["best_step"])
        t = m["test"] or {}
        rows.append({"experiment": experiment, "source": f"this course ({cfg.name})", "best_step": m["best_step"],
                     "val_loss": best["val_loss"], "mse_en": best["mse_en"], "mse_ko": best["mse_ko"],
                     **{f"test_{k}": t.get(k) for k in ("seq_mse_ko", "cos_ko", "r1_ko2en", "empty_mse")}})
    for experiment, study in STUDY_RESULTS.items():
        rows.append({"experiment": experiment, "source": "study (its logged valid loss)",
                     **{k: 100 * v for k, v in study.items()}})
    return pd.DataFrame(rows).set_index(["experiment", "source"]).sort_index()
