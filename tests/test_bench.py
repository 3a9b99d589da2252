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
    assert row["gpu_estimate_peak_gb"] > 0  # no GPU here: the estimate stands in
    assert experiment in bench.format_table(rows)


def test_live_tensor_bytes_counts_new_storages_once_and_frees_them():
    import torch

    weights = torch.zeros(1000)  # 4000 bytes that exist before
    with bench.LiveTensorBytes([weights]) as live:
        a = torch.empty(250)  # +1000
        view = a.view(25, 10)  # the same storage: nothing new
        weights.add_(1)  # in place on a known storage: nothing new
        assert live.current == 5000
        del a, view  # -1000
        b = torch.empty(500)  # +2000
    assert (live.base, live.peak, live.current) == (4000, 6000, 6000)
    del b
    assert live.current == 4000


@pytest.mark.parametrize("experiment", ["clip", "roberta_pooler"])
def test_gpu_memory_estimate_counts_weights_optimizer_and_gradients(experiment):
    est = bench.estimate_gpu_memory(experiment, batch_size=8, size="tiny")
    teacher, student = bench.build_models(experiment, "tiny")
    trainable = sum(p.numel() for n, p in student.named_parameters()
                    if experiment == "roberta_pooler" or not n.startswith("pooler"))
    gib = 1024 ** 3
    # teacher in 16 bits; student fp32 with two AdamW moments per trainable weight
    expected_base = 2 * count_parameters(teacher) + 4 * count_parameters(student) + 8 * trainable
    assert est["base_gb"] * gib == pytest.approx(expected_base, rel=0.02)
    # during the step the fp32 gradients exist next to everything in base
    assert est["peak_gb"] * gib >= est["base_gb"] * gib + 4 * trainable
    assert bench.estimate_gpu_memory(experiment, batch_size=32, size="tiny")["peak_gb"] > est["peak_gb"]


def test_phases_cover_the_engine_step_and_the_cli_writes_them(tmp_path):
    from kdutils.__main__ import main

    phases = bench.step_phases("roberta_pooler", batch_size=4, steps=2, device="cpu", size="tiny")
    assert list(phases) == list(bench.PHASES) and all(ms > 0 for ms in phases.values())
    out = tmp_path / "phases.json"
    # the CLI measures the full-size models (a warm-up and one step: seconds)
    assert main(["bench", "--phases", "--experiment", "roberta_pooler", "--steps", "1", "--output", str(out)]) == 0
    (row,) = json.loads(out.read_text())
    assert row["experiment"] == "roberta_pooler" and set(bench.PHASES) <= set(row)
    assert "optimizer" in bench.format_phases([row])
