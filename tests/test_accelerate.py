"""Data-parallel training: two CPU processes under accelerate launch."""

import json
import math
import os
import shutil
import subprocess

import pytest

import kdutils as kd
from kdutils import distill as D


# two CPU processes in fp32, as every test here launches them
LAUNCH_TWO = ["accelerate", "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
              "--mixed_precision", "no", "--dynamo_backend", "no"]


@pytest.mark.skipif(shutil.which("accelerate") is None, reason="accelerate's launcher is not installed")
@pytest.mark.slow
def test_two_processes_train_a_valid_checkpoint_close_to_one_process(tmp_path):
    # two processes of batch 16 against one of batch 32: the same effective batch and the same number of steps
    # 1,200 of the toy world's pairs keep the run short (the whole set took three minutes of the suite)
    env = {**os.environ, "KDSD_NUM_EPOCHS": "2", "KDSD_BATCH_SIZE": "16", "KDSD_EVAL_EVERY": "20", "KDSD_NUM_PAIRS": "1200",
           "OMP_NUM_THREADS": "1"}
    cmd = [*LAUNCH_TWO, "-m", "kdutils", "train", "--experiment", "roberta", "--profile", "tiny", "--output", str(tmp_path / "two")]
    run = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    out = tmp_path / "two" / "distill" / "roberta"
    two = json.loads((out / "metrics.json").read_text())
    assert two["num_processes"] == 2
    assert sorted(p.name for p in out.iterdir()) == ["best", "history.csv", "last", "metrics.json", "train_log.csv"]
    from transformers import AutoModel

    AutoModel.from_pretrained(two["best_dir"])  # a valid checkpoint
    # last/ is Accelerate's save_state: each process's random state, and the student under its own names
    assert {"random_states_0.pkl", "random_states_1.pkl", "optimizer.bin"} <= {p.name for p in (out / "last").iterdir()}
    AutoModel.from_pretrained(str(out / "last"))

    cfg = kd.get_profile("tiny", num_epochs=2, batch_size=32, eval_every=20, num_pairs=1200, output_dir=str(tmp_path / "one"))
    splits = kd.data.prepare_splits(cfg)
    assert two["history"][-1]["num_pairs"] == len(splits["val"])  # every val pair, once
    one = D.distill(cfg, "roberta", splits, progress=False)
    per_process = len(splits["train"]) // 2  # each process sees its half of every epoch
    assert two["total_steps"] == math.ceil(per_process / 16) * cfg.num_epochs == one.history[-1]["step"]
    assert two["best_val_loss"] < 0.5 * two["history"][0]["val_loss"], "both processes really trained"
    assert two["best_val_loss"] == pytest.approx(one.best_val_loss, rel=0.15), (two["best_val_loss"], one.best_val_loss)


@pytest.mark.skipif(shutil.which("accelerate") is None, reason="accelerate's launcher is not installed")
@pytest.mark.slow
def test_two_processes_resume_bit_identically(tmp_path):
    """Each process continues from its own random state (random_states_1.pkl is the second process's)."""
    import hashlib
    from pathlib import Path

    script = Path(__file__).with_name("two_process_resume.py")
    cmd = [*LAUNCH_TWO, str(script), str(tmp_path)]
    run = subprocess.run(cmd, env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    assert f"resumed from {tmp_path / 'cut' / 'last'} at step 5/" in run.stdout

    def sha(folder):
        return hashlib.sha256((folder / "model.safetensors").read_bytes()).hexdigest()

    for name in ("best", "last"):
        assert sha(tmp_path / "cut" / name) == sha(tmp_path / "full" / name), name
    cut, full = (json.loads((tmp_path / run / "metrics.json").read_text()) for run in ("cut", "full"))
    assert [h["val_loss"] for h in cut["history"]] == [h["val_loss"] for h in full["history"]]
    assert cut["num_processes"] == 2

