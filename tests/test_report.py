"""Tables the distillation notebooks share: a run before and after, next to the study."""

import math

import pytest

import kdutils as kd
from kdutils.distill import DistillResult


def _metrics(val_loss: float, r1: float) -> dict:
    return {**{name: 0.0 for name in kd.report.COLUMNS}, "val_loss": val_loss, "r1_ko2en": r1}


RUN = {"best_step": 10,
       "history": [{**_metrics(90.0, 0.0), "step": 0}, {**_metrics(30.0, 0.2), "step": 10},
                   {**_metrics(35.0, 0.4), "step": 20}],
       "train_log": [{"step": 5, "loss": 50.0}, {"step": 10, "loss": 28.0}, {"step": 20, "loss": 20.0}],
       "test": _metrics(33.0, 0.3)}


def test_before_after_shows_step_0_best_last_and_best_on_test():
    table = kd.report.before_after(RUN, ["train_loss", "val_loss", "r1_ko2en"])
    assert list(table.index) == ["step 0", "best (step 10)", "last (step 20)", "test, best/"]
    assert list(table.columns) == ["train_loss", "val_loss", "r1_ko2en"]
    assert table["val_loss"].tolist() == [90.0, 30.0, 35.0, 33.0]
    assert table["r1_ko2en"].tolist() == [0.0, 0.2, 0.4, 0.3]
    train = table["train_loss"].tolist()
    assert math.isnan(train[0]) and train[1:3] == [28.0, 20.0] and math.isnan(train[3]), \
        "no training loss before the first log, nor on the test split"


def test_a_run_reads_the_same_from_a_result_or_its_metrics_json():
    result = DistillResult(output_dir=None, best_dir=None, best_step=RUN["best_step"], best_val_loss=30.0,
                           history=RUN["history"], train_log=RUN["train_log"], test_metrics=RUN["test"])
    assert kd.report.before_after(result).equals(kd.report.before_after(RUN))
    assert kd.report.history(result).loc[10, "val_loss"] == 30.0
    unfinished = {**RUN, "test": None}
    assert list(kd.report.before_after(unfinished).index)[-1] == "last (step 20)"


def test_metrics_row_keeps_the_lessons_column_order():
    row = kd.report.metrics_row(_metrics(12.0, 0.5), "before training")
    assert list(row.columns) == kd.report.COLUMNS and row.loc["before training", "val_loss"] == 12.0


def test_the_study_numbers_are_its_logged_losses():
    for numbers in kd.report.STUDY_RESULTS.values():
        assert numbers["val_loss"] == pytest.approx(numbers["mse_en"] + numbers["mse_ko"], abs=1e-4)
