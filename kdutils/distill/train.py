"""The training loop, ``distill``: setup, steps, evaluation and checkpoints, the end of a run and its report."""

from __future__ import annotations

import contextlib
import time
from pathlib import Path

import torch

from ..files import folder_lock, read_json, write_json, write_text
from ..precision import process_state
from .checkpoint import (TrainState, load_training_state, load_weights, resume_settings, save_checkpoint,
                         save_training_state)
from .evaluation import EvalData, evaluate, prepare_eval
from .setup import DistillResult, Run, check_inputs, check_run_folder, run_dir, setup_run
from .step import distill_step
from .trainset import epoch_order


def distill(cfg, experiment: str, splits, *, models: tuple | None = None, val: EvalData | None = None,
            output_dir: str | Path | None = None, resume: bool = False, overwrite: bool = False,
            stop_after: int | None = None, log_every: int = 10,
            progress: bool = True) -> DistillResult:
    """Train a student for ``experiment`` on ``splits`` (train/val/test with ``ko``/``en``).

    Evaluates on val every ``cfg.eval_every`` steps and at the end, keeps the
    checkpoint with the lowest validation loss in ``best/`` and the resumable
    state in ``last/``, then scores ``best`` on the test split. ``resume``
    continues the run in the output folder from ``last/`` and ends where an
    uninterrupted run ends (a finished run is reused as it is); its settings
    must match (``resume_settings``). Without ``resume``, a folder that
    already holds a run is refused unless ``overwrite=True`` replaces it
    (``check_run_folder``). The run holds a lock on its folder, so a second
    run into it stops at once. ``stop_after`` stops after that many steps (as a crash would).

    A notebook that already loaded ``models = (teacher_tokenizer, teacher,
    student_tokenizer, student)`` and computed ``val = prepare_eval(...)``
    passes them, so nothing is loaded or computed twice. The teacher is then
    moved to the device (fp16 on CUDA) in place; the student comes back in
    fp32 with the best checkpoint's weights and without Accelerate's autocast
    wrapper, so measuring it afterwards compares with the metrics here.
    """
    check_inputs(experiment, splits)
    out = Path(output_dir) if output_dir else run_dir(cfg, experiment)
    main = process_state(cfg.torch_device).is_main_process  # under accelerate launch only the main process writes
    with folder_lock(out, "training run") if main else contextlib.nullcontext():
        check_run_folder(out, resume=resume, overwrite=overwrite, clean=main)
        run = setup_run(cfg, experiment, splits, models=models, val=val, output_dir=out)
        return _train(run, splits, resume, stop_after, log_every, progress)


def _train(run: Run, splits, resume: bool, stop_after: int | None, log_every: int, progress: bool) -> DistillResult:
    """The training loop of ``distill``, from its first (or resumed) step to the test scores."""
    from tqdm.auto import tqdm

    cfg, experiment = run.cfg, run.experiment
    if progress and run.main:
        print(run.describe())
    state = run.state
    if resume:
        resume_state(run)
    if state.step == 0:  # the untrained student, so curves and "loss falls" start from it
        state.history.append({**measure(run), "step": 0, "epoch": 0.0, "seconds": 0.0})
    world, rank = run.accelerator.num_processes, run.accelerator.process_index
    running, running_steps, order_epoch = torch.zeros(3, device=run.device), 0, -1
    # at most one refresh a second: in a notebook every refresh is a kernel message, and the thousands of a slow
    # run can overflow the output queue while nbval waits (it then fails with "Timeout ... waiting for output")
    bar = tqdm(range(state.step, run.total_steps), initial=state.step, total=run.total_steps, desc=experiment,
               disable=not (progress and run.main), unit="step", mininterval=1.0)
    started = time.perf_counter()
    for step in bar:
        epoch, i = divmod(step, run.steps_per_epoch)
        if epoch != order_epoch:
            order, order_epoch = epoch_order(len(run.data), epoch, cfg.seed, world, rank), epoch
            order_on_device = order.to(run.device)
        rows = slice(i * cfg.batch_size, (i + 1) * cfg.batch_size)
        ids, mask, target_batch, width = run.data.batch(run.teacher, run.student, run.target, order[rows],
                                                        order_on_device[rows])
        running += distill_step(run.student, run.optimizer, run.scheduler, run.accelerator, ids, mask, target_batch,
                                run.target, run.data.empty_target, cfg.empty_prompt_weight, cfg.grad_clip, width)
        running_steps += 1
        state.step = step + 1
        if state.step % log_every == 0 or state.step == run.total_steps:  # the only host sync of the loop
            bar.set_postfix(loss=f"{log_losses(run, state, running, running_steps):.3f}")
            running.zero_()
            running_steps = 0
        if state.step % cfg.eval_every == 0 or state.step == run.total_steps:
            evaluate_and_checkpoint(run, state, seconds=time.perf_counter() - started)
        if stop_after is not None and stop_after <= state.step < run.total_steps:
            save_last(run, state)
            bar.close()
            return DistillResult(run.out, run.best_dir, state.best_step, state.best_val, state.history,
                                 state.train_log, finished=False)
    bar.close()
    run.accelerator.wait_for_everyone()
    return finish(run, state, splits)


def measure(run: Run) -> dict[str, float]:
    """The student's validation metrics now (fp32, all processes together)."""
    return evaluate(run.raw_student, run.val, run.target, run.device, accelerator=run.accelerator)


def log_losses(run: Run, state: TrainState, running: torch.Tensor, num_steps: int) -> float:
    """Average the summed ``(loss, loss_en, loss_ko)`` of the last ``num_steps`` steps over steps and
    processes into ``train_log`` (x100).

    The one place the loop waits for the device. Returns the loss for the progress bar.
    """
    mean = (run.accelerator.reduce(running, reduction="mean") / num_steps).tolist()
    loss, loss_en, loss_ko = (100 * x for x in mean)
    state.train_log.append({"step": state.step, "epoch": state.step / run.steps_per_epoch, "loss": loss,
                            "loss_en": loss_en, "loss_ko": loss_ko, "lr": run.scheduler.get_last_lr()[0]})
    return loss


def evaluate_and_checkpoint(run: Run, state: TrainState, seconds: float) -> dict[str, float]:
    """Measure on val; save ``best/`` if this is the lowest val loss so far, and ``last/`` in any case."""
    metrics = measure(run)
    metrics.update(step=state.step, epoch=round(state.step / run.steps_per_epoch, 3), seconds=round(seconds, 1))
    state.history.append(metrics)
    if metrics["val_loss"] < state.best_val:
        state.best_val, state.best_step = metrics["val_loss"], state.step
        if run.main:
            save_checkpoint(run.best_dir, run.raw_student, run.student_tokenizer,
                            {**run.meta, "step": state.step, "metrics": metrics})
    save_last(run, state)
    return metrics


def save_last(run: Run, state: TrainState) -> None:
    """Write ``last/`` (every process): Accelerate's ``save_state`` of everything a resumed run needs to
    continue bit for bit, the ``TrainState`` included."""
    save_training_state(run.accelerator, run.last_dir, {**run.meta, "step": state.step})


def resume_state(run: Run) -> TrainState:
    """Load ``last/`` into the run's student, optimizer, schedule, random generators and ``run.state``.

    Its settings must match the run's (``resume_settings``). A finished run
    (one with ``metrics.json``, whether or not ``last/`` is kept) is read from
    ``metrics.json``: nothing is left to train. An empty folder starts from step 0
    and says so, and so does a run with ``best/`` but no ``last/`` (killed before its first
    ``last/``, or ``last/`` deleted), keeping ``best/`` until a checkpoint beats it.
    """
    last, metrics_file = run.last_dir, run.out / "metrics.json"
    fix = (f"the run cannot continue from it ({run.best_dir} is a separate copy). Start over with overwrite=True "
           f"(--overwrite), or keep this folder and train into another one (output_dir= / --output-dir)")
    state, metrics = run.state, None
    if metrics_file.exists():  # a finished run (metrics.json is its last write): nothing is left to train
        try:
            metrics = read_json(metrics_file, "without last/ the run cannot rewrite it; train again with "
                                              "overwrite=True (--overwrite), or into another folder")
        except ValueError:
            if not last.exists():
                raise  # otherwise last/ continues the run, which writes metrics.json again
    if metrics is not None:
        notes = resume_settings(metrics, run.meta, metrics_file)
        state.load_state_dict({"step": run.total_steps, "best_val": metrics["best_val_loss"],
                               "best_step": metrics["best_step"], "history": metrics["history"],
                               "train_log": metrics["train_log"]})
        where = f"{metrics_file} (a finished run{'' if last.exists() else ' without last/'})"
    elif last.exists():
        notes = resume_settings(read_json(last / "kdsd_meta.json", fix), run.meta, last)
        if (last / "training_state.pt").exists():
            raise ValueError(f"{last} was written by an earlier kdutils (before it saved with Accelerate's save_state); "
                             f"{fix}")
        notes += load_training_state(run.accelerator, last, fix)  # fills run.state too
        where = f"{last} at step {state.step}/{run.total_steps}"
    elif run.best_dir.exists():  # killed before its first last/, or last/ was deleted: start again, keep best/
        best = read_json(run.best_dir / "kdsd_meta.json", "delete best/ too, or train into another folder")
        notes = resume_settings(best, run.meta, run.best_dir)
        if run.main:
            print(f"no last/ in {run.out} to continue from: training again from step 0; best/ (step {best['step']}, "
                  f"val loss {best['metrics']['val_loss']:.4f}) is kept until a checkpoint beats it"
                  + "".join(f"; {note}" for note in notes))
        state.best_val, state.best_step = best["metrics"]["val_loss"], best["step"]
        return state
    else:
        if run.main:
            print(f"nothing to resume in {run.out}: training from step 0")
        return state
    if run.main:
        print(f"resumed from {where}" + "".join(f"; {note}" for note in notes))
    return state


def finish(run: Run, state: TrainState, splits) -> DistillResult:
    """Load ``best/`` back into the student, score it on the test split, and write the run's report."""
    load_weights(run.raw_student, run.best_dir, "the run's best checkpoint cannot be read back; train again with "
                 "overwrite=True (--overwrite), or into another folder")
    test_metrics = None
    if "test" in splits and len(splits["test"]):
        test = prepare_eval(run.teacher, run.teacher_tokenizer, run.student_tokenizer, splits["test"], run.device,
                            run.cfg.max_length)
        test_metrics = evaluate(run.raw_student, test, run.target, run.device, accelerator=run.accelerator)
    result = DistillResult(run.out, run.best_dir, state.best_step, state.best_val, state.history, state.train_log,
                           test_metrics)
    if run.main:
        write_report(run, result)
    return result


def write_report(run: Run, result: DistillResult) -> None:
    """``metrics.json`` (what later notebooks and ``load_metrics`` read), ``history.csv`` and ``train_log.csv``."""
    summary = {**run.meta, "best_step": result.best_step, "best_val_loss": result.best_val_loss,
               "best_dir": str(result.best_dir), "test": result.test_metrics, "history": result.history,
               "train_log": result.train_log}
    _write_csv(run.out / "history.csv", result.history)
    _write_csv(run.out / "train_log.csv", result.train_log)
    write_json(run.out / "metrics.json", summary)  # last: a run with metrics.json is finished


def _write_csv(path: Path, rows: list[dict]) -> None:
    import csv
    import io

    if not rows:
        return
    text = io.StringIO(newline="")
    writer = csv.DictWriter(text, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
    write_text(path, text.getvalue())
