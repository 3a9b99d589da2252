"""The class profile's size follows from the written derivation (kdutils.sizing); all GPU figures are estimates."""

import json
import re

import pytest

from kdutils import sizing, standins
from kdutils.profiles import PROFILES


@pytest.fixture(scope="module")
def cfg():
    return PROFILES["class"]


def test_the_study_calibrates_the_arithmetic_at_37_percent_of_a_3060():
    cal = sizing.calibration()
    assert round(sizing.pair_gflops("roberta"), 1) == 53.2 and round(sizing.pair_gflops("clip"), 1) == 93.1
    assert round(cal["roberta"]["pairs_per_s"], 1) == 89.6 and round(cal["clip"]["pairs_per_s"], 1) == 51.1
    for experiment in ("clip", "roberta"):  # two students, one machine: the same utilisation
        assert round(cal[experiment]["tflops"], 1) == 4.8
        assert 0.37 < cal[experiment]["mfu"] < 0.38
    assert abs(cal["clip"]["mfu"] - cal["roberta"]["mfu"]) < 0.005


def test_rates_follow_from_peak_mfu_and_flops():
    t4 = sizing.GPUS["T4"]
    slow = t4.mfu[0] * t4.half_tflops * 1e3 / sizing.pair_gflops("roberta")
    assert round(slow) == 183  # 15% of 65 TFLOP/s over 53.2 GFLOP a pair
    # the study's fp32 loop on a T4 at its own 37%: the "about 56 pairs/s"
    assert 55 < sizing.fp32_mfu() * t4.fp32_tflops * 1e3 / sizing.pair_gflops("roberta") < 58


def test_the_class_profile_is_the_most_that_fits_30_minutes_on_a_t4(cfg):
    limit = sizing.max_pairs(cfg)
    assert cfg.num_pairs <= limit < cfg.num_pairs + 10_000, "the largest round 10,000 under the limit"
    slowest = max(sizing.distill_minutes(cfg, e)["total"] for e in ("clip", "roberta", "roberta_pooler"))
    assert slowest <= sizing.SIZING_MINUTES
    assert sizing.distill_minutes(cfg, "clip")["total"] == slowest, "CLIP (03) is the slowest"
    over = cfg.replace(num_pairs=limit + 5_000)
    assert sizing.distill_minutes(over, "clip")["total"] > sizing.SIZING_MINUTES
    # and the study's hyper-parameters stay
    paper = PROFILES["paper"]
    assert (cfg.batch_size, cfg.lr, cfg.weight_decay, cfg.warmup_ratio) == (
        paper.batch_size, paper.lr, paper.weight_decay, paper.warmup_ratio)


def test_about_a_tenth_of_the_study_and_eight_evaluations(cfg):
    assert 0.10 <= sizing.study_share(cfg) <= 0.12
    assert sizing.steps(cfg) == 3_313
    assert 6 <= sizing.steps(cfg) // cfg.eval_every + 1 <= 10


def test_the_teacher_cache_no_longer_fits_and_the_teacher_runs_per_batch(cfg):
    train = sizing.split_sizes(cfg.num_pairs)["train"]
    assert sizing.cache_bytes(train) == train * 77 * 768 * 2
    assert sizing.teacher_cache_path(train) == "no cache: the teacher runs on every batch"
    assert sizing.teacher_cache_path(sizing.split_sizes(20_000)["train"]) == "cached on the GPU"  # the old size
    assert sizing.teacher_cache_path(train, "pooled") == "cached on the GPU"  # 768 numbers a pair


def test_the_largest_memory_entry_fits_12_gb_with_a_margin(cfg):
    table = sizing.memory_table(cfg)
    assert set(table) >= {"00", "03", "03 hand step", "04", "05", "06", "07", "08", "09", "10"}
    for row in table.values():
        assert row["total"] == pytest.approx(sum(v for k, v in row.items() if k != "total"))
    notebook, largest = sizing.tightest(cfg)
    assert largest == max(row["total"] for row in table.values())
    assert largest < sizing.MEMORY_LIMIT_GIB - 5, f"{notebook}: {largest:.2f} GiB"
    # weights and optimizer state follow from the parameter counts
    clip = sizing.PARAMS["clip_text"]
    assert table["03"]["optimizer state"] == pytest.approx(clip * 8 / 1024 ** 3)
    assert table["03"]["weights"] == pytest.approx(clip * (2 + 4) / 1024 ** 3)


def test_paper_runs_take_hours_and_faster_cards_take_fewer():
    hours = {name: sizing.paper_hours(PROFILES["paper"], "roberta", name) for name in sizing.GPUS}
    for slow, fast in hours.values():
        assert 0.2 < fast < slow < 5
    assert hours["A100"][0] < hours["T4"][0]


def test_the_derivation_prints_and_says_it_is_an_estimate(cfg, capsys):
    from kdutils.__main__ import main

    assert main(["sizing"]) == 0
    text = capsys.readouterr().out
    assert text.startswith("ESTIMATES") and "tightest: 03 hand step" in text
    assert f"class: {cfg.num_pairs:,} pairs" in text
    assert main(["sizing", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["profile"]["teacher_cache_path"].startswith("no cache")


def test_the_stand_in_check_needs_the_real_clip_vocabulary(monkeypatch, tmp_path, capsys):
    from kdutils.__main__ import main

    monkeypatch.setattr(standins, "clip_bpe_file", lambda: None)
    assert main(["sizing", "--check", str(tmp_path)]) == 1
    assert "open-clip-torch" in capsys.readouterr().err


def _minutes(low: float, high: float) -> str:
    low, high = round(low), round(high)
    return f"약 {low}분" if low == high else f"약 {low}–{high}분"


def test_the_course_map_time_column_comes_from_the_derivation(cfg):
    from pathlib import Path

    notebook = json.loads((Path(__file__).parent.parent / "notebooks" / "00_overview.ipynb").read_text())
    text = "".join(line for cell in notebook["cells"] for line in cell["source"])
    assert "`class`, Colab T4 (**추정**)" in text
    fast, slow = (sizing.course_minutes(cfg, "T4", m) for m in reversed(sizing.GPUS["T4"].mfu))
    rows = {line.split("|")[1].strip(): line.split("|")[5].strip() for line in text.splitlines()
            if re.match(r"\| \d\d \|", line)}
    assert sorted(rows) == sorted(fast)
    for number, cell in rows.items():
        assert cell.startswith(_minutes(fast[number], slow[number])), (number, cell, fast[number], slow[number])
    assert f"{cfg.num_pairs // 10_000}만 쌍" in text


def _readme_section() -> str:
    from pathlib import Path

    text = (Path(__file__).parent.parent / "README.md").read_text(encoding="utf-8")
    return text.split("## `class` 프로필의 크기 (추정)")[1].split("\n## ")[0]


def test_the_readme_tables_come_from_the_derivation(cfg):
    section = _readme_section()
    cells = [[c.strip().strip("*") for c in line.split("|")[1:-1]] for line in section.splitlines()
             if line.startswith("| ")]
    minutes = {row[0]: row[1:] for row in cells if len(row) == 1 + len(sizing.course_minutes(cfg)) and row[0] in sizing.GPUS}
    assert sorted(minutes) == sorted(sizing.GPUS)
    for gpu, row in minutes.items():
        low, high = sizing.GPUS[gpu].mfu
        fast, slow = sizing.course_minutes(cfg, gpu, high), sizing.course_minutes(cfg, gpu, low)
        want = [f"{round(fast[n])}" if round(fast[n]) == round(slow[n]) else f"{round(fast[n])}–{round(slow[n])}"
                for n in sorted(fast)]
        assert row == want, (gpu, row, want)
    names = {"00": "00", "02": "02", "03 학습": "03", "03 직접 구현한 한 단계": "03 hand step", "04": "04", "05": "05",
             "06": "06", "07": "07", "08": "08", "09, 10": "09"}
    memory = {names[row[0]]: float(row[-1]) for row in cells if len(row) == 8 and row[0] in names}
    table = sizing.memory_table(cfg)
    assert memory == {k: round(table[k]["total"], 2) for k in memory}
    assert len(memory) == len(names)
    hours = {row[0]: row[1:] for row in cells if len(row) == 4 and row[0] in ("T4", "L4", "A100 40 GB")}
    for gpu, row in hours.items():
        name = gpu.split()[0]
        want = [f"{h[1]:.1f}–{h[0]:.1f}" for h in (sizing.paper_hours(PROFILES["paper"], e, name)
                                                  for e in ("clip", "roberta", "roberta_pooler"))]
        assert row == want, (gpu, row, want)


@pytest.mark.slow
def test_the_standin_check_builds_its_models_and_pairs(tmp_path, monkeypatch):
    """`sizing --check`'s first stage (it called a function of tiny.py by an old name and stopped there).

    Small model configs and a small merges file stand in for the full-size ones; the code path is the same.
    """
    import gzip

    from transformers import AutoTokenizer, CLIPTextModel, CLIPTokenizer, RobertaModel

    from kdutils import bench

    bpe = tmp_path / "bpe.txt.gz"
    with gzip.open(bpe, "wt", encoding="utf-8") as f:
        # no final newline: the tokenizer's slice takes every line
        f.write("#version: 0.2\n" + "\n".join(["t h", "th e</w>", "r e", "re d</w>", "c a", "ca t</w>"]))
    monkeypatch.setattr(standins, "clip_bpe_file", lambda: bpe)
    monkeypatch.setattr(bench, "CLIP_L14_TEXT", dict(bench.TINY_TEXT, vocab_size=49408, pad_token_id=49407,
                                                     bos_token_id=49406, eos_token_id=49407))
    monkeypatch.setattr(bench, "KLUE_ROBERTA_SMALL", bench.TINY_ROBERTA)
    ids = standins.build_standins(tmp_path / "standins")
    teacher = CLIPTokenizer.from_pretrained(ids["sd_id"], subfolder="tokenizer")
    assert teacher("the red cat").input_ids[0] == teacher.bos_token_id
    CLIPTextModel.from_pretrained(ids["sd_id"], subfolder="text_encoder")
    student = AutoTokenizer.from_pretrained(ids["student_id"])
    assert student("빨간 고양이").input_ids[0] == student.cls_token_id
    RobertaModel.from_pretrained(ids["student_id"])
    header, *rows = (tmp_path / "standins" / "pairs.tsv").read_text(encoding="utf-8").splitlines()
    assert header == "ko\ten" and len(rows) > 1000
