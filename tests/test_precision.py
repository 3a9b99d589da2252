"""The precision path every GPU user takes, forced on the CPU (bf16 autocast runs there).

No GPU is needed: Accelerate's bf16 autocast runs on a CPU, and the choice
between bf16 and fp16 is tested with a mocked CUDA compute capability.
"""

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import kdutils as kd
from kdutils import distill as D
from kdutils import precision

ROOT = Path(__file__).resolve().parent.parent


# ------------------------------------------------------------ the choice
@pytest.fixture
def fake_gpu(monkeypatch):
    """Pretend a CUDA GPU of a given compute capability is present."""

    def install(capability, name):
        monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
        monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
        monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: name)
        monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)  # what torch says even on a T4

    return install


@pytest.mark.parametrize("capability, name, expected", [
    ((7, 5), "Tesla T4", "fp16"),
    ((7, 0), "Tesla V100", "fp16"),
    ((8, 0), "NVIDIA A100", "bf16"),
    ((8, 6), "NVIDIA GeForce RTX 3060", "bf16"),
    ((9, 0), "NVIDIA H100", "bf16"),
])
def test_auto_picks_bf16_only_where_the_gpu_computes_in_it(fake_gpu, capability, name, expected):
    fake_gpu(capability, name)
    assert D.mixed_precision("cuda", "auto") == expected


def test_forcing_bf16_on_a_gpu_without_bf16_units_warns(fake_gpu):
    fake_gpu((7, 5), "Tesla T4")
    with pytest.warns(UserWarning, match="Tesla T4 has no bf16 units .*emulated"):
        assert D.mixed_precision("cuda", "bf16") == "bf16"
    assert D.mixed_precision("cuda", "fp16") == "fp16" and D.mixed_precision("cuda", "no") == "no"


@pytest.fixture
def cpu_bf16(monkeypatch):
    """Pretend the CPU has (True) or lacks (False) bf16 matrix units."""

    def install(supported: bool):
        monkeypatch.setattr(precision, "cpu_bf16_supported", lambda: supported)

    return install


def test_cpu_precision_choices(cpu_bf16):
    cpu_bf16(False)
    assert D.mixed_precision("cpu", "auto") == "no"
    cpu_bf16(True)
    assert D.mixed_precision("cpu", "auto") == "bf16"
    assert D.mixed_precision("cpu", "bf16") == "bf16"
    assert D.mixed_precision("cpu", "no") == "no"
    with pytest.raises(ValueError, match="fp16 autocast needs a CUDA GPU"):
        D.mixed_precision("cpu", "fp16")
    with pytest.raises(ValueError, match="unknown mixed_precision 'fp8'"):
        D.mixed_precision("cpu", "fp8")


@pytest.mark.parametrize("avx512_bf16, amx, capability, expected", [
    (True, False, "AVX512", True),  # this workplace's AMD EPYC: the capability string says only AVX512
    (False, True, "AVX512", True),  # AMX (Sapphire Rapids and newer)
    (False, False, "AVX512", False),
    (False, False, "AVX2", False),
    (False, False, "AMX_BF16", True),  # a build that names it in the capability string
])
def test_cpu_bf16_detection_reads_torchs_probes_not_only_the_capability_string(monkeypatch, avx512_bf16, amx,
                                                                               capability, expected):
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: avx512_bf16, raising=False)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx, raising=False)
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: capability)
    assert D.cpu_bf16_supported() is expected


def test_teacher_dtype_follows_device_and_precision():
    assert D.teacher_dtype("cuda") == torch.float16
    assert D.teacher_dtype("cpu", "bf16") == torch.bfloat16
    assert D.teacher_dtype("cpu", "no") == D.teacher_dtype("cpu") == torch.float32
    assert D.teacher_dtype("mps", "no") == torch.float32


def test_apple_gpus_are_picked_and_get_precisions_mps_supports(monkeypatch):
    """A Mac: no CUDA, MPS available (mocked; no Mac here)."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True)
    for name in ("tiny", "class"):
        assert kd.get_profile(name).torch_device == "mps"
    assert kd.get_profile("tiny", device="cpu").torch_device == "cpu"  # an explicit device wins
    assert D.mixed_precision("mps", "auto") == "no"  # training in fp32, which every MPS device runs
    assert D.teacher_dtype("mps", D.mixed_precision("mps")) == torch.float32
    from kdutils.precision import sampling_dtype

    assert sampling_dtype("mps") == torch.float32 and sampling_dtype("cuda") == torch.float16
    assert sampling_dtype("cpu") == torch.float32
    from kdutils.profiles import auto_device  # what the bench and every profile pick

    assert auto_device() == "mps"
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    assert kd.get_profile("tiny").torch_device == "cpu"


# ------------------------------------------------ the engine under bf16
@pytest.fixture(scope="module")
def setting(tmp_path_factory):
    out = tmp_path_factory.mktemp("bf16")
    base = kd.get_profile("tiny", output_dir=str(out), batch_size=16, num_epochs=2, eval_every=3, lr=1e-3)
    from datasets import DatasetDict

    splits = kd.data.prepare_splits(base)
    small = DatasetDict({"train": splits["train"].select(range(48)), "val": splits["val"].select(range(16)),
                         "test": splits["test"].select(range(16))})
    return base, small


def _sha(folder: Path) -> str:
    return hashlib.sha256((Path(folder) / "model.safetensors").read_bytes()).hexdigest()


def _models(cfg, experiment):
    teacher_tokenizer, teacher = kd.load_teacher(cfg)
    student_tokenizer, student = kd.load_student(cfg, experiment, teacher.config.hidden_size)
    return teacher_tokenizer, teacher, student_tokenizer, student


@pytest.mark.parametrize("experiment", ["clip", "roberta_pooler"])
@pytest.mark.slow
def test_bf16_training_keeps_the_notebooks_before_and_after_checks(setting, experiment):
    """What notebooks 03-05 do: measure the student, hand it to distill, measure it again."""
    base, splits = setting
    cfg = base.replace(mixed_precision="bf16")
    models = _models(cfg, experiment)
    teacher_tokenizer, teacher, student_tokenizer, student = models
    target = D.TARGETS[experiment]
    val = D.prepare_eval(teacher, teacher_tokenizer, student_tokenizer, splits["val"], "cpu", cfg.max_length)
    before = D.evaluate(student, val, target, "cpu")

    result = D.distill(cfg, experiment, splits, models=models, val=val, output_dir=Path(cfg.output_dir) / experiment,
                       progress=False)
    meta = json.loads((result.output_dir / "metrics.json").read_text())
    assert meta["mixed_precision"] == "bf16"
    # step 0 is the student measured above, to the notebooks' tolerance: evaluation runs in fp32
    assert abs(result.history[0]["val_loss"] - before["val_loss"]) <= 1e-6 * before["val_loss"]
    # the student comes back without Accelerate's autocast wrapper ...
    assert "_original_forward" not in student.__dict__
    assert not hasattr(student.forward, "__wrapped__")
    # ... so measuring it afterwards gives the fp32 numbers of the best checkpoint, exactly
    after = D.evaluate(student, val, target, "cpu")
    best = next(h for h in result.history if h["step"] == result.best_step)
    assert abs(after["val_loss"] - best["val_loss"]) <= 1e-6 * best["val_loss"]
    tokens = D.tokenize(student_tokenizer, ["빨간 사과"])
    with torch.no_grad():
        out = D.encode(student, tokens.ids, tokens.mask)[0]
    assert out.dtype == torch.float32
    # the checkpoint is saved in fp32, as an fp32 run saves it, so export and plain diffusers read it the same way
    # (tests/test_pipeline.py); that bf16 learns as well as fp32 is
    # test_bf16_keeps_the_best_val_loss_within_5_percent_of_fp32
    from safetensors.torch import load_file

    saved = load_file(str(result.best_dir / "model.safetensors"))
    assert saved and all(t.dtype == torch.float32 for t in saved.values())


@pytest.mark.slow
def test_bf16_keeps_the_best_val_loss_within_5_percent_of_fp32(tmp_path, capsys):
    """The tiny profile's settings (lr 3e-3, batch 16) on 320 pairs, 20 steps: bf16 autocast and a bf16
    teacher against fp32. The precision shows in the log line and metrics.json."""
    from datasets import DatasetDict

    cfg = kd.get_profile("tiny", output_dir=str(tmp_path), num_epochs=1, eval_every=10)
    splits = kd.data.prepare_splits(cfg)
    small = DatasetDict({"train": splits["train"].select(range(320)), "val": splits["val"].select(range(48)),
                         "test": splits["test"].select(range(16))})
    runs = {p: D.distill(cfg.replace(mixed_precision=p), "roberta", small, output_dir=tmp_path / p)
            for p in ("no", "bf16")}
    fp32, bf16 = runs["no"].best_val_loss, runs["bf16"].best_val_loss
    assert runs["no"].history[0]["val_loss"] > 3 * fp32, "both runs really learn"
    assert [h["val_loss"] for h in runs["no"].history[1:]] != [h["val_loss"] for h in runs["bf16"].history[1:]], \
        "bf16 autocast must change the arithmetic"
    assert abs(bf16 - fp32) <= 0.05 * fp32, (bf16, fp32)
    log = capsys.readouterr().out
    assert "student autocast bf16, teacher bfloat16" in log and "student autocast off (fp32), teacher float32" in log
    meta = json.loads((tmp_path / "bf16" / "metrics.json").read_text())
    assert (meta["mixed_precision"], meta["teacher_dtype"]) == ("bf16", "bfloat16")


# ---------------------------------------------- notebooks 03-05 under bf16
@pytest.mark.slow
def test_distillation_notebooks_pass_with_bf16_forced(tmp_path):
    """What a GPU user runs, on the CPU: a distillation notebook under nbval with KDSD_MIXED_PRECISION=bf16.

    03 carries the checks the GPU precision path broke (step 0 equals the fp32 "before", the student
    measured after training). 04 has the same checks on the RoBERTa student, but since issue 21 it also
    distils a blank student and draws seven rows of 48 images (170 s in fp32), so the suite runs 03 here.
    04's and 05's engine path under bf16 is covered by test_bf16_training_keeps_the_notebooks_before_and_after_checks.
    """
    # 1 of tiny's 8 epochs: the precision checks hold from the first steps, and 03's tiny asserts with room
    # (best val loss at 0.15 of step 0's, asked <= 0.5; Korean cosine +0.40, asked > 0.2; 2026-12-06)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_XDIST")}  # not a worker of this run
    env.update(KDSD_MIXED_PRECISION="bf16", KDSD_OUTPUT_DIR=str(tmp_path / "outputs"), KDSD_NUM_EPOCHS="1")
    notebooks = [str(ROOT / "notebooks" / "03_distill_clip.ipynb")]
    run = subprocess.run([sys.executable, "-m", "pytest", "-q", "-n", "0", "-p", "no:cacheprovider",
                          "--rootdir", str(ROOT), *notebooks],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-2000:]
    for experiment in ("clip",):
        meta = json.loads((tmp_path / "outputs" / "distill" / experiment / "metrics.json").read_text())
        assert meta["mixed_precision"] == "bf16"
