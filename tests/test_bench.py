"""The benchmark builds the study's architectures and compares both loops."""

import json

import pytest

from kdutils import bench, count_parameters


def test_full_size_architectures_have_the_study_parameter_counts():
    teacher, student = bench.build_models("roberta")
    assert count_parameters(student) == 68_090_880  # klue/roberta-small, as the study reports
    assert count_parameters(teacher) == 123_060_480  # CLIP ViT-L/14 text tower (the study prints 123,060,080)


@pytest.mark.parametrize("experiment", ["roberta", "roberta_pooler"])
def test_bench_reports_both_loops_and_their_ratio(tmp_path, experiment):
    out = tmp_path / "bench.json"
    rows = bench.run_bench([experiment], device="cpu", batch_size=4, steps=2, warmup=1, repeats=1,
                           size="tiny", output=out)
    (row,) = rows
    assert row["reference_pairs_per_s"] > 0 and row["fast_pairs_per_s"] > 0
    assert row["speedup"] == pytest.approx(row["fast_pairs_per_s"] / row["reference_pairs_per_s"])
    assert json.loads(out.read_text()) == rows
    assert experiment in bench.format_table(rows)
