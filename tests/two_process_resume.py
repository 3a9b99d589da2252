"""Run by tests/test_accelerate.py under ``accelerate launch`` with two processes: one run stopped after five
steps and resumed, beside the same run uninterrupted (``python two_process_resume.py OUTPUT``)."""

import sys
from pathlib import Path

import kdutils as kd
from kdutils import distill as D
from kdutils.precision import process_state

out = Path(sys.argv[1])
cfg = kd.get_profile("tiny", num_epochs=1, batch_size=16, eval_every=5, num_pairs=480, output_dir=str(out / "profile"))
with process_state(cfg.torch_device).main_process_first():  # one process writes the splits
    splits = kd.data.prepare_splits(cfg)
D.distill(cfg, "roberta", splits, output_dir=out / "full", progress=False)
part = D.distill(cfg, "roberta", splits, output_dir=out / "cut", stop_after=5, progress=False)
assert not part.finished
D.distill(cfg, "roberta", splits, output_dir=out / "cut", resume=True, progress=False)
