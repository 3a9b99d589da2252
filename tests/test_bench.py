"""The benchmark builds the study's architectures and compares both loops."""

import json

import pytest

from kdutils import bench, count_parameters


@pytest.mark.slow
def test_full_size_architectures_have_the_study_parameter_counts():
    teacher, student = bench.build_models("roberta")
    assert count_parameters(student) == 68_090_880  # klue/roberta-small, as the study reports
    assert count_parameters(teacher) == 123_060_480  # CLIP ViT-L/14 text tower (the study prints 123,060,080)


@pytest.mark.parametrize("experiment", ["roberta", "roberta_pooler"])
def test_bench_interleaves_both_loops_and_reports_their_spread(tmp_path, experiment):
    import torch

    out = tmp_path / "bench.json"
    peaks = bench.machine_peaks(torch.device("cpu"), repeats=2, n=256, seconds=0.05)  # small, for speed
    rows = bench.run_bench([experiment], device="cpu", batch_size=4, steps=2, warmup=1, repeats=3,
                           size="tiny", peaks=peaks, output=out)
    (row,) = rows
    assert row["steps"] == {"reference": 2, "fast": 2}
    for loop in ("reference", "fast"):
        spread = row[f"{loop}_pairs_per_s"]
        assert 0 < spread["min"] <= spread["median"] <= spread["max"]
        # tiny models against a 256-wide matmul "peak": the utilisation is a positive number, not a fraction here
        # (a 0.05 s peak of small matmuls can be below what the loop reaches; the full-size bench compares like sizes)
        assert row[f"{loop}_pair_gflops"] > 0 and row[f"{loop}_tflops"] > 0 and 0 < row[f"{loop}_mfu"] < float("inf")
    assert len(row["ratios"]) == 3 and row["ratio_min"] <= row["speedup"] <= row["ratio_max"]
    assert row["verdict"] == bench._verdict(row["ratios"], bench.MAX_SPREAD)[1]
    assert "fp32" in row["matmul_peak_gflops"] and row["matmul_peak_gflops"]["fp32"]["best"] > 0
    assert json.loads(out.read_text()) == rows
    assert row["gpu_estimate_peak_gb"] > 0  # no GPU here: the estimate stands in
    table = bench.format_table(rows)
    assert experiment in table and "min / median / max" in table and "matmul peak" in table


def test_the_verdict_gives_one_number_only_when_the_repeats_agree():
    stable, text = bench._verdict([2.0, 2.1, 1.95, 2.05, 2.0], 0.10)
    assert stable and text.startswith("2.00x (1.95-2.10")
    stable, text = bench._verdict([1.36, 0.51, 0.9], 0.10)  # the two runs the issue saw, and one between
    assert not stable and text.startswith("inconclusive") and "both sides of 1" in text
    stable, text = bench._verdict([1.5, 2.5, 2.0], 0.10)
    assert not stable and text.startswith("spread too wide to conclude")
    assert not bench._verdict([2.0], 0.10)[0]


def test_flop_count_of_a_roberta_pair_matches_the_hand_count():
    teacher, student = bench.build_configs("roberta")
    # per layer and token: 4 d^2 + 2 d ff multiply-adds; per layer: n^2 d twice for attention
    d, ff, n = 768, 3072, 77
    layer = 2 * n * (4 * d * d + 2 * d * ff) + 4 * n * n * d
    assert bench.forward_flops(student, n) == 6 * layer
    assert bench.forward_flops(teacher, n) == 12 * layer
    pair = bench.pair_flops("roberta", teacher, student)
    assert pair == 12 * layer + 2 * 3 * 6 * layer
    assert pair == pytest.approx(5.3e10, rel=0.01)  # the "about 5.2e10", attention included
    # the engine's pooled step computes only the batch's longest sentence
    assert bench.pair_flops("roberta_pooler", teacher, student, 40, 40) < pair / 1.9


def test_peaks_measure_bf16_only_where_the_cpu_has_it(monkeypatch):
    import torch

    from kdutils import precision

    monkeypatch.setattr(precision, "cpu_bf16_supported", lambda: False)
    assert bench.peak_dtypes(torch.device("cpu")) == [torch.float32]
    monkeypatch.setattr(precision, "cpu_bf16_supported", lambda: True)
    assert bench.peak_dtypes(torch.device("cpu")) == [torch.float32, torch.bfloat16]
    rates = bench.matmul_peak(torch.device("cpu"), torch.float32, n=128, repeats=2, seconds=0.01)
    assert len(rates) == 2 and all(r > 0 for r in rates)


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


@pytest.mark.slow
def test_phases_cover_the_engine_step_and_the_cli_writes_them(tmp_path):
    from kdutils.__main__ import main

    phases = bench.step_phases("roberta_pooler", batch_size=4, steps=2, device="cpu", size="tiny")
    assert list(phases) == list(bench.PHASES) and all(ms > 0 for ms in phases.values())
    out = tmp_path / "phases.json"
    # the CLI measures the full-size models (a warm-up and one step: seconds)
    assert main(["bench", "--phases", "--experiment", "roberta_pooler", "--steps", "1", "--batch-size", "2",
                 "--output", str(out)]) == 0
    (row,) = json.loads(out.read_text())
    assert row["experiment"] == "roberta_pooler" and set(bench.PHASES) <= set(row)
    assert "optimizer" in bench.format_phases([row])


def test_bench_settings_fill_the_device_defaults_and_refuse_a_cpu_clock_off_the_cpu():
    cpu = bench.BenchSettings.make("cpu")
    assert (cpu.batch_size, cpu.threads, cpu.clock, cpu.min_steps, cpu.estimate) == (8, 1, "cpu", 2, True)
    gpu = bench.BenchSettings.make("cuda", batch_size=16)
    assert (gpu.batch_size, gpu.threads, gpu.clock, gpu.min_steps, gpu.estimate) == (16, None, "wall", 10, False)
    with pytest.raises(ValueError, match="'cpu' only on a CPU"):
        bench.BenchSettings.make("cuda", clock="cpu")
    with pytest.raises(TypeError, match="settings or its fields"):
        bench.run_bench(["roberta"], cpu, batch_size=4)
