"""The distillation engine: loss, masks, pipeline identity, checkpoints, resume, errors."""

import hashlib
import json
from pathlib import Path

import pytest
import torch

import kdutils as kd
from kdutils import distill as D
from kdutils.models import load_student, load_teacher


@pytest.fixture(scope="module")
def cfg(tmp_path_factory):
    out = tmp_path_factory.mktemp("distill")
    return kd.get_profile("tiny", output_dir=str(out), batch_size=16, num_epochs=2, eval_every=3, lr=1e-3)


@pytest.fixture(scope="module")
def small_splits(cfg):
    splits = kd.data.prepare_splits(cfg)
    from datasets import DatasetDict

    return DatasetDict({"train": splits["train"].select(range(48)), "val": splits["val"].select(range(16)),
                        "test": splits["test"].select(range(16))})


def _sha(folder: Path) -> str:
    return hashlib.sha256((Path(folder) / "model.safetensors").read_bytes()).hexdigest()


def test_loss_is_zero_when_student_equals_teacher(cfg):
    tokenizer, teacher = load_teacher(cfg, device="cpu")
    _, student = load_student(cfg, "clip")  # experiment 1 starts as a copy of the teacher
    tokens = D.tokenize(tokenizer, ["a red apple", "two cats on a sofa"])
    with torch.no_grad():
        t = D.encode(teacher, tokens.ids, tokens.mask)[0]
        s = D.encode(student, torch.cat([tokens.ids, tokens.ids]), torch.cat([tokens.mask, tokens.mask]))[0]
    loss, loss_en, loss_ko = D.distill_loss(s, t, 2)
    assert loss.item() == 0.0 and loss_en.item() == 0.0 and loss_ko.item() == 0.0
    s_wrong = s.clone()
    s_wrong[2:] += 1.0
    assert D.distill_loss(s_wrong, t, 2)[2].item() == pytest.approx(1.0)


def test_prompts_are_padded_to_77_and_the_mask_hides_padding(cfg):
    tokenizer, student = load_student(cfg, "roberta")
    student.eval()
    tokens = D.tokenize(tokenizer, ["빨간 사과", "파란 하늘 아래 두 마리의 고양이"])
    assert tokens.ids.shape == (2, 77) and tokens.mask[0].sum() < tokens.mask[1].sum()
    assert (tokens.ids[0][tokens.mask[0] == 0] == tokenizer.pad_token_id).all()
    assert student.config.use_attention_mask  # so the pipeline passes the mask too
    n = int(tokens.mask[0].sum())
    with torch.no_grad():
        padded = D.encode(student, tokens.ids[:1], tokens.mask[:1])[0][0, :n]
        short = student(tokens.ids[:1, :n], attention_mask=tokens.mask[:1, :n])[0][0]
    assert torch.allclose(padded, short, atol=1e-5), "padding must not change the real tokens' embeddings"


def test_pooled_steps_skip_padding_columns_without_changing_the_loss(cfg):
    tokenizer, student = load_student(cfg, "roberta_pooler")
    student.eval()
    tokens = D.tokenize(tokenizer, ["빨간 사과", "파란 하늘 아래 두 마리의 고양이", ""])
    lengths = tokens.mask.sum(1)
    width = D.step_width(student, "pooled", lengths[:1], lengths[1:2], lengths[2:])
    assert width == int(lengths.max()) < 77
    assert D.step_width(student, "sequence", lengths) is None  # the UNet reads all 77 positions
    with torch.no_grad():
        full = D.encode(student, tokens.ids, tokens.mask).pooler_output
        short = D.encode(student, tokens.ids[:, :width], tokens.mask[:, :width]).pooler_output
    assert torch.allclose(full, short, atol=1e-5)
    # the CLIP teacher reads causally and pools at the end token: its pooled target can stop early too
    teacher_tokenizer, teacher = load_teacher(cfg, device="cpu")
    t_tokens = D.tokenize(teacher_tokenizer, ["a red apple", "two cats sleeping on a sofa in the sun", ""])
    t_width = D.step_width(teacher, "pooled", t_tokens.mask.sum(1))
    assert t_width == int(t_tokens.mask.sum(1).max()) < 77
    full = D.teacher_batch(teacher, t_tokens.ids, "pooled")
    assert torch.allclose(full, D.teacher_batch(teacher, t_tokens.ids, "pooled", t_width), atol=1e-5)
    # a student that neither masks padding nor reads causally gets all 77 columns
    student.config.use_attention_mask = False
    assert D.step_width(student, "pooled", lengths) is None


@pytest.mark.parametrize("experiment", ["clip", "roberta"])
def test_training_embedding_equals_the_pipeline_embedding(cfg, experiment):
    from diffusers import StableDiffusionPipeline

    student_tokenizer, student = load_student(cfg, experiment)
    student.eval()
    pipe = StableDiffusionPipeline.from_pretrained(kd.resolve(cfg.sd_id), text_encoder=student,
                                                   tokenizer=student_tokenizer)
    prompt = ["한강 공원에서 피크닉하는 가족", "a cute corgi running on the grass"]
    with torch.no_grad():
        pipeline_embeds, _ = pipe.encode_prompt(prompt, "cpu", 1, False)
    training_embeds = D.embed(student, student_tokenizer, prompt)
    assert pipeline_embeds.shape == (2, 77, student.config.hidden_size)
    assert torch.equal(pipeline_embeds, training_embeds)


def test_evaluate_scores_a_perfect_student_perfectly(cfg, small_splits):
    teacher_tokenizer, teacher = load_teacher(cfg, device="cpu")
    data = D.prepare_eval(teacher, teacher_tokenizer, teacher_tokenizer, small_splits["val"], "cpu", 77)
    data.ko = data.en  # a student that sees English on both sides and equals the teacher
    m = D.evaluate(teacher, data, "sequence", "cpu")
    assert m["mse_en"] == m["mse_ko"] == m["empty_mse"] == 0.0
    assert m["cos_ko"] == pytest.approx(1.0) and m["r1_ko2en"] == 1.0 and m["r1_en2ko"] == 1.0


def test_best_checkpoint_has_the_lowest_validation_loss(cfg, small_splits):
    result = D.distill(cfg, "roberta", small_splits, output_dir=Path(cfg.output_dir) / "best", progress=False)
    losses = [h["val_loss"] for h in result.history]
    best = min(range(len(losses)), key=losses.__getitem__)
    assert result.best_step == result.history[best]["step"] and result.best_val_loss == losses[best]
    meta = json.loads((result.best_dir / "kdsd_meta.json").read_text())
    assert meta["step"] == result.best_step and meta["experiment"] == "roberta"
    assert meta["data_fingerprint"] == kd.data.fingerprint(small_splits)
    saved = json.loads((result.output_dir / "metrics.json").read_text())
    assert saved["test"]["num_pairs"] == 16 and saved["best_step"] == result.best_step
    assert not list(result.output_dir.glob(".*.tmp")), "no half-written checkpoint is left behind"


@pytest.mark.slow
@pytest.mark.parametrize("precision", ["no", "bf16"])
def test_a_rerun_and_a_resume_after_a_stop_are_bit_identical(cfg, small_splits, precision):
    """In fp32 and under forced bf16 autocast (what a GPU user runs): the same run twice gives the same
    weights, and a run stopped at step 4 and resumed ends where the uninterrupted one did."""
    run_cfg = cfg.replace(mixed_precision=precision)
    out = Path(cfg.output_dir) / f"resume-{precision}"
    full = D.distill(run_cfg, "roberta", small_splits, output_dir=out / "full", progress=False)
    again = D.distill(run_cfg, "roberta", small_splits, output_dir=out / "again", progress=False)
    assert _sha(full.best_dir) == _sha(again.best_dir)
    part = D.distill(run_cfg, "roberta", small_splits, output_dir=out / "cut", stop_after=4, progress=False)
    assert not part.finished and json.loads((out / "cut" / "last" / "kdsd_meta.json").read_text())["step"] == 4
    resumed = D.distill(run_cfg, "roberta", small_splits, output_dir=out / "cut", resume=True, progress=False)
    assert resumed.finished and resumed.best_step == full.best_step
    assert _sha(resumed.best_dir) == _sha(full.best_dir)
    assert _sha(out / "cut" / "last") == _sha(full.output_dir / "last")
    assert [h["val_loss"] for h in resumed.history] == [h["val_loss"] for h in full.history]
    # the checkpoint holds fp32 weights in either case, which export and plain diffusers read as usual
    from safetensors.torch import load_file

    assert {t.dtype for t in load_file(str(full.best_dir / "model.safetensors")).values()} == {torch.float32}
    assert json.loads((full.output_dir / "metrics.json").read_text())["mixed_precision"] == precision


def test_bad_configurations_fail_clearly(cfg, small_splits, tmp_path):
    from transformers import RobertaConfig, RobertaModel

    with pytest.raises(ValueError, match="unknown experiment 'bert'"):
        D.distill(cfg, "bert", small_splits, progress=False)
    empty = {"train": small_splits["train"].select([]), "val": small_splits["val"]}
    with pytest.raises(ValueError, match="'train' split is empty"):
        D.distill(cfg, "roberta", empty, progress=False)
    narrow = tmp_path / "narrow"
    RobertaModel(RobertaConfig(vocab_size=100, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                               intermediate_size=64, max_position_embeddings=80)).save_pretrained(narrow)
    from transformers import AutoTokenizer

    AutoTokenizer.from_pretrained(kd.resolve(cfg.student_id)).save_pretrained(narrow)
    with pytest.raises(ValueError, match="student hidden size 32 != teacher hidden size 64"):
        D.distill(cfg.replace(student_id=str(narrow)), "roberta", small_splits, progress=False)


@pytest.mark.slow
def test_comparison_table_uses_one_unit_and_says_which_split(tmp_path):
    cfg = kd.get_profile("tiny", output_dir=str(tmp_path))
    assert D.ensure_trained(cfg, "roberta", train_missing=False) is None
    folder = tmp_path / "distill" / "roberta"
    folder.mkdir(parents=True)
    history = [{"step": 0, "val_loss": 90.0, "mse_en": 40.0, "mse_ko": 50.0},
               {"step": 10, "val_loss": 30.0, "mse_en": 14.0, "mse_ko": 16.0},
               {"step": 20, "val_loss": 35.0, "mse_en": 15.0, "mse_ko": 20.0}]
    test = {"seq_mse_ko": 17.0, "cos_ko": 0.8, "r1_ko2en": 0.1, "empty_mse": 2.0}
    (folder / "metrics.json").write_text(json.dumps({"best_step": 10, "best_val_loss": 30.0, "best_dir": "/moved",
                                                     "history": history, "test": test}))
    table = kd.report.compare_experiments(cfg)
    ours = table.loc[("roberta", "this course (tiny)")]
    assert (ours["val_loss"], ours["mse_en"], ours["mse_ko"], ours["test_r1_ko2en"]) == (30.0, 14.0, 16.0, 0.1)
    study = table.loc[("roberta", "study (its logged valid loss)")]
    assert study["val_loss"] == pytest.approx(96.31) and study["mse_ko"] == pytest.approx(49.88)  # x100, like ours
    assert D.ensure_trained(cfg, "roberta") == folder / "best"  # where outputs/ is now, not where it was


def test_trimmed_teacher_pools_at_the_same_token_with_sd14s_legacy_eos_id():
    """SD v1.4's text-encoder config says eos_token_id=2, so CLIP pools at the argmax id (the end token)."""
    from transformers import CLIPTextConfig, CLIPTextModel

    from kdutils import bench

    torch.manual_seed(0)
    teacher = CLIPTextModel(CLIPTextConfig(**{**bench.TINY_TEXT, "eos_token_id": 2, "bos_token_id": 0})).eval()
    ids = torch.full((2, 77), 999)  # padded with the end token, id 999 = the largest id, as in SD's tokenizer
    ids[:, 0] = 998
    ids[0, 1:5], ids[1, 1:12] = torch.arange(10, 14), torch.arange(20, 31)
    lengths = torch.tensor([6, 13])  # <bos> words <eos>
    width = D.step_width(teacher, "pooled", lengths)
    assert width == 13
    full = D.teacher_batch(teacher, ids, "pooled")
    assert torch.allclose(full, D.teacher_batch(teacher, ids, "pooled", width), atol=1e-5)


@pytest.mark.slow
def test_each_experiment_leaves_out_the_pairs_its_tokenizer_would_cut(cfg, small_splits, capsys):
    """The CLIP student reads Korean as byte pieces: long Korean sentences would be cut at 77 tokens."""
    from datasets import DatasetDict, concatenate_datasets

    teacher_tokenizer, student_tokenizer = kd.load_tokenizers(cfg)
    full = kd.data.prepare_splits(cfg)
    cut_by_clip = kd.data.overlong(teacher_tokenizer, full["train"], cfg.max_length)
    counts = kd.data.left_out_by_experiment(full["train"], teacher_tokenizer, student_tokenizer, cfg.max_length)
    assert counts == {"clip": sum(cut_by_clip), "roberta": 0, "roberta_pooler": 0} and counts["clip"] > 0
    info = json.loads((kd.data.splits_dir(cfg) / "info.json").read_text())
    assert info["cleaning"]["left_out_of_training"] == counts

    long_ones = full["train"].select([i for i, cut in enumerate(cut_by_clip) if cut][:3])
    assert max(kd.data.token_lengths(teacher_tokenizer, long_ones["ko"])) > cfg.max_length
    train = concatenate_datasets([small_splits["train"], long_ones])
    splits = DatasetDict({"train": train, "val": small_splits["val"]})
    result = D.distill(cfg, "clip", splits, output_dir=Path(cfg.output_dir) / "clip-cut", progress=False)
    assert json.loads((result.output_dir / "metrics.json").read_text())["train_pairs"] == len(train) - 3
    assert "clip: 3 of 51 training pairs have a side over 77 tokens" in capsys.readouterr().out
    roberta = D.distill(cfg, "roberta", splits, output_dir=Path(cfg.output_dir) / "roberta-cut", stop_after=1,
                        progress=False)
    assert json.loads((roberta.output_dir / "last" / "kdsd_meta.json").read_text())["train_pairs"] == len(train)


def test_checkpoint_saves_print_no_shard_bar_and_leave_the_bar_setting_alone(cfg, tmp_path, capfd):
    from transformers.utils import logging as hf_logging

    tokenizer, student = load_student(cfg, "roberta")
    hf_logging.enable_progress_bar()
    D.save_checkpoint(tmp_path / "best", student, tokenizer, {"step": 0})
    assert "Writing model shards" not in capfd.readouterr().err, "one bar per evaluation would flood the log"
    assert hf_logging.is_progress_bar_enabled(), "the caller's progress-bar setting is restored"
    assert (tmp_path / "best" / "model.safetensors").exists()


def test_epoch_order_is_a_seeded_permutation_split_evenly_across_processes():
    order = D.epoch_order(10, epoch=0, seed=1)
    assert sorted(order.tolist()) == list(range(10)) and torch.equal(order, D.epoch_order(10, 0, 1))
    assert not torch.equal(order, D.epoch_order(10, 1, 1)), "a fresh order every epoch"
    halves = [D.epoch_order(11, 0, 1, world=2, rank=rank) for rank in (0, 1)]
    assert len(halves[0]) == len(halves[1]) == 5 and not set(halves[0].tolist()) & set(halves[1].tolist())


def test_a_training_batch_is_en_ko_empty_and_its_loss_is_the_studys(cfg, small_splits):
    """What the loop feeds distill_step, checked against tokenising and encoding the pairs directly."""
    import torch.nn.functional as F

    teacher_tokenizer, teacher = load_teacher(cfg, device="cpu")
    student_tokenizer, student = load_student(cfg, "roberta")
    student.eval()  # no dropout, so separate forward passes agree with the stacked one
    train = small_splits["train"]
    cached = D.prepare_train(teacher, teacher_tokenizer, student_tokenizer, train, "sequence", "cpu", 77)
    fresh = D.prepare_train(teacher, teacher_tokenizer, student_tokenizer, train, "sequence", "cpu", 77, cache_gb=0)
    assert cached.cached is not None and fresh.cached is None
    idx = torch.tensor([3, 0, 5])
    ids, mask, target_batch, width = cached.batch(teacher, student, "sequence", idx, idx)
    assert torch.allclose(target_batch, fresh.batch(teacher, student, "sequence", idx, idx)[2], atol=1e-6)
    en = D.tokenize(student_tokenizer, [train[i]["en"] for i in idx.tolist()])
    ko = D.tokenize(student_tokenizer, [train[i]["ko"] for i in idx.tolist()])
    empty = D.tokenize(student_tokenizer, [""])
    assert width is None and torch.equal(ids, torch.cat([en.ids, ko.ids, empty.ids]))
    assert torch.equal(mask, torch.cat([en.mask, ko.mask, empty.mask]))
    teacher_en = D.tokenize(teacher_tokenizer, [train[i]["en"] for i in idx.tolist()])
    assert torch.allclose(target_batch, D.teacher_batch(teacher, teacher_en.ids, "sequence"), atol=1e-6)
    loss, loss_en, loss_ko = D.student_loss(student, None, ids, mask, target_batch, "sequence",
                                            cached.empty_target, empty_weight=0.5)
    with torch.no_grad():
        s_en, s_ko, s_empty = (D.encode(student, t.ids, t.mask)[0] for t in (en, ko, empty))
    assert loss_en.item() == pytest.approx(F.mse_loss(s_en, target_batch).item(), rel=1e-5)
    assert loss_ko.item() == pytest.approx(F.mse_loss(s_ko, target_batch).item(), rel=1e-5)
    empty_term = F.mse_loss(s_empty, cached.empty_target).item()
    assert loss.item() == pytest.approx(loss_en.item() + loss_ko.item() + 0.5 * empty_term, rel=1e-5)


# ------------------------------------------------------- nothing lost, nothing silent (issue 20)
class Killed(BaseException):
    """What a kill -9 does to the code that runs: it stops there (not an Exception, so nothing catches it)."""


@pytest.fixture(scope="module")
def quick(cfg, small_splits):
    """Two steps, a checkpoint after each: the smallest run that swaps best/ and last/ over earlier copies."""
    from datasets import DatasetDict

    splits = DatasetDict({"train": small_splits["train"].select(range(32)), "val": small_splits["val"].select(range(8)),
                          "test": small_splits["test"].select(range(8))})
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # these tiny steps run faster on one thread of a busy 2-core machine
    yield cfg.replace(num_epochs=1, eval_every=1), splits
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def finished(quick, tmp_path_factory, monkeypatch_module):
    """An uninterrupted run, and every rename it made: ``(source, destination, step of last/ it completes)``."""
    import os

    quick_cfg, splits = quick
    renames, real = [], os.replace

    def replace(src, dst):
        meta = Path(src) / "kdsd_meta.json"
        completes = Path(dst).name.endswith(".new") and meta.is_file()
        renames.append((Path(src).name, Path(dst).name, json.loads(meta.read_text())["step"] if completes else None))
        return real(src, dst)

    monkeypatch_module.setattr(os, "replace", replace)
    result = D.distill(quick_cfg, "roberta", splits, output_dir=tmp_path_factory.mktemp("finished") / "run",
                       progress=False)
    monkeypatch_module.undo()
    return result, renames


@pytest.fixture(scope="module")
def monkeypatch_module():
    with pytest.MonkeyPatch.context() as patch:
        yield patch


def _run_files(out: Path) -> dict:
    """The run's checkpoints and its validation history (less wall-clock seconds)."""
    history = json.loads((out / "metrics.json").read_text())["history"]
    return {name: _sha(out / name) for name in ("best", "last")} | {
        "history": [{k: v for k, v in h.items() if k != "seconds"} for h in history]}


@pytest.mark.slow
def test_every_rename_of_every_checkpoint_swap_survives_a_kill_and_resume_continues(quick, finished, tmp_path,
                                                                                   monkeypatch, capsys):
    """Kill the run at each rename it makes (as `strace -e inject=rename:signal=KILL:when=N` did), then resume.

    Resume must continue from the newest complete last/ (not from step 0, as it did when a kill between the
    two renames of the old swap left only .last.old and .last.tmp) and end bit-identical to an uninterrupted run.
    """
    import os

    quick_cfg, splits = quick
    reference, renames = finished
    assert sum(dst == "last" for _, dst, _ in renames) == 2 and ("last", ".last.old", None) in renames, \
        "the run swaps last/ over an earlier last/ (and best/ likewise), so every kind of rename is tested"
    assert ("best", ".best.old", None) in renames
    real = os.replace
    for fault in range(len(renames)):
        out = tmp_path / f"killed-at-{fault}"
        calls = []

        def replace(src, dst, calls=calls, fault=fault):
            if len(calls) == fault:
                raise Killed(f"killed before rename {fault}: {Path(src).name} -> {Path(dst).name}")
            calls.append(dst)
            return real(src, dst)

        monkeypatch.setattr(os, "replace", replace)
        with pytest.raises(Killed):
            D.distill(quick_cfg, "roberta", splits, output_dir=out, progress=False)
        monkeypatch.setattr(os, "replace", real)
        capsys.readouterr()
        resumed = D.distill(quick_cfg, "roberta", splits, output_dir=out, resume=True, progress=False)
        said = capsys.readouterr().out
        # which last/ the kill left: the one in place, else the complete new copy (its first rename was made)
        in_place, new, parked = 0, 0, False
        for src, dst, saved_step in renames[:fault]:
            if dst == ".last.new":
                new = saved_step
            elif src == "last":
                parked = True
            elif dst == "last":
                in_place, parked = new, False
        step = in_place if in_place and not parked else new
        if step:
            assert f"resumed from {out / 'last'} at step {step}/" in said, (fault, renames[fault], said)
        else:
            assert "training again from step 0" in said or "nothing to resume" in said, (fault, said)
        assert _run_files(out) == _run_files(reference.output_dir), f"killed before rename {fault}: {renames[fault]}"
        assert resumed.best_step == reference.best_step
        assert sorted(p.name for p in out.iterdir()) == ["best", "history.csv", "last", "metrics.json",
                                                         "train_log.csv"], "no leftovers"


def test_a_failed_rename_raises_and_the_run_resumes_where_it_was(quick, finished, tmp_path, monkeypatch, capsys):
    """A rename that fails (disk trouble) stops the run with the OS error; resume then recovers the complete copy."""
    import os

    quick_cfg, splits = quick
    reference, renames = finished
    fault = renames.index(("last", ".last.old", None))  # the old swap lost last/ exactly here
    real, calls = os.replace, []

    def replace(src, dst):
        calls.append(dst)
        if len(calls) == fault + 2:  # between parking last/ and putting the new one in place
            raise OSError(5, "Input/output error")
        return real(src, dst)

    monkeypatch.setattr(os, "replace", replace)
    with pytest.raises(OSError, match="Input/output error"):
        D.distill(quick_cfg, "roberta", splits, output_dir=tmp_path / "run", progress=False)
    monkeypatch.setattr(os, "replace", real)
    assert not (tmp_path / "run" / "last").exists() and (tmp_path / "run" / ".last.new").is_dir()
    D.distill(quick_cfg, "roberta", splits, output_dir=tmp_path / "run", resume=True, progress=False)
    assert "at step 2/2" in capsys.readouterr().out
    assert _run_files(tmp_path / "run") == _run_files(reference.output_dir)


def test_a_finished_run_is_never_replaced_without_asking(quick, finished, tmp_path, capsys):
    import shutil

    quick_cfg, splits = quick
    out = tmp_path / "run"
    shutil.copytree(finished[0].output_dir, out)
    before = _run_files(out)
    with pytest.raises(FileExistsError) as err:
        D.distill(quick_cfg, "roberta", splits, output_dir=out, progress=False)
    message = str(err.value)
    assert f"{out} already holds a finished run (metrics.json, best/ at step {finished[0].best_step})" in message
    assert "output_dir= / --output-dir" in message and "resume=True (--resume)" in message
    assert "overwrite=True (--overwrite)" in message
    assert _run_files(out) == before, "the refused run changed nothing"
    with pytest.raises(ValueError, match="resume and overwrite exclude each other"):
        D.distill(quick_cfg, "roberta", splits, output_dir=out, resume=True, overwrite=True, progress=False)
    # resume reuses the finished run: nothing is trained, best/ stays
    reused = D.distill(quick_cfg, "roberta", splits, output_dir=out, resume=True, progress=False)
    assert reused.best_step == finished[0].best_step and _run_files(out) == before
    # also when its last/ is in the format of an earlier kdutils, which only an unfinished run must read
    (out / "last" / "training_state.pt").write_bytes(b"")
    assert D.distill(quick_cfg, "roberta", splits, output_dir=out, resume=True, progress=False).best_step \
        == finished[0].best_step
    metrics = (out / "metrics.json").read_bytes()
    (out / "metrics.json").unlink()
    with pytest.raises(ValueError, match=r"last was written by an earlier kdutils .*overwrite=True"):
        D.distill(quick_cfg, "roberta", splits, output_dir=out, resume=True, progress=False)
    (out / "metrics.json").write_bytes(metrics)
    (out / "last" / "training_state.pt").unlink()
    # a finished run whose last/ was deleted to save space is reused from metrics.json
    shutil.rmtree(out / "last")
    assert D.distill(quick_cfg, "roberta", splits, output_dir=out, resume=True, progress=False).best_step \
        == finished[0].best_step
    assert "a finished run without last/" in capsys.readouterr().out
    # overwrite replaces it, and says so
    D.distill(quick_cfg, "roberta", splits, output_dir=out, overwrite=True, progress=False)
    assert f"overwrite: removed the previous run in {out}" in capsys.readouterr().out
    assert _run_files(out) == before, "the same settings train the same run again"


def test_an_unfinished_run_or_a_folder_of_other_files_is_not_trained_over(quick, tmp_path):
    quick_cfg, splits = quick
    out = tmp_path / "run"
    D.distill(quick_cfg, "roberta", splits, output_dir=out, stop_after=1, progress=False)
    with pytest.raises(FileExistsError, match=r"already holds an unfinished run \(last/ at step 1\).*--resume"):
        D.distill(quick_cfg, "roberta", splits, output_dir=out, progress=False)
    other = tmp_path / "mine"
    other.mkdir()
    (other / "thesis.tex").write_text("keep me")
    for flags in ({}, {"overwrite": True}, {"resume": True}):
        with pytest.raises(FileExistsError, match=r"holds files that are not a training run's \(thesis.tex\)"):
            D.distill(quick_cfg, "roberta", splits, output_dir=other, progress=False, **flags)
    assert [p.name for p in other.iterdir()] == ["thesis.tex"]


def test_resume_refuses_other_settings_naming_each_and_applies_what_is_safe(quick, tmp_path, capsys):
    quick_cfg, splits = quick
    out = tmp_path / "run"
    D.distill(quick_cfg, "roberta", splits, output_dir=out, stop_after=1, progress=False)
    last = (out / "last" / "model.safetensors").read_bytes()
    changed = quick_cfg.replace(lr=2e-3, batch_size=8, seed=1, empty_prompt_weight=0.5)
    with pytest.raises(ValueError) as err:
        D.distill(changed, "roberta", splits, output_dir=out, resume=True, progress=False)
    message = str(err.value)
    assert message.startswith(f"cannot resume from {out / 'last'}: it was trained with other settings")
    for difference in ("lr 0.001 (now 0.002)", "batch_size 16 (now 8)", "seed 0 (now 1)",
                       "empty_prompt_weight 1.0 (now 0.5)", "overwrite=True (--overwrite)"):
        assert difference in message
    fewer = {**splits, "train": splits["train"].select(range(16))}
    with pytest.raises(ValueError, match=r"data_fingerprint '\w+' \(now '\w+'\)"):
        D.distill(quick_cfg, "roberta", fewer, output_dir=out, resume=True, progress=False)
    with pytest.raises(ValueError, match=r"experiment 'roberta' \(now 'clip'\)"):
        D.distill(quick_cfg, "clip", splits, output_dir=out, resume=True, progress=False)
    assert (out / "last" / "model.safetensors").read_bytes() == last, "a refused resume changes nothing"
    capsys.readouterr()
    D.distill(quick_cfg.replace(eval_every=2), "roberta", splits, output_dir=out, resume=True, progress=False)
    assert "at step 1/2; eval_every 1 -> 2 from here on" in capsys.readouterr().out


def test_a_second_run_into_a_busy_folder_stops_at_once(quick, tmp_path):
    from kdutils.files import FolderBusy, folder_lock

    quick_cfg, splits = quick
    out = tmp_path / "run"
    with folder_lock(out, "training run"):  # another descriptor: to flock() it is another holder
        with pytest.raises(FolderBusy, match=rf"{out} is in use by another training run \(process \d+\)"):
            D.distill(quick_cfg, "roberta", splits, output_dir=out, progress=False)
    assert not out.exists() or not any(out.iterdir())


def test_damaged_checkpoint_files_are_named_with_what_to_do(quick, finished, tmp_path, monkeypatch):
    import shutil

    quick_cfg, splits = quick
    out = tmp_path / "run"
    shutil.copytree(finished[0].output_dir, out)
    metrics = out / "metrics.json"
    finished_metrics = metrics.read_bytes()
    metrics.unlink()  # unfinished, as if killed before its end: resume reads last/
    weights = out / "last" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])  # a copy cut short
    with pytest.raises(ValueError, match=rf"{weights} is damaged \(.*\); the run cannot continue from it.*"
                                         rf"overwrite=True \(--overwrite\)"):
        D.distill(quick_cfg, "roberta", splits, output_dir=out, resume=True, progress=False)
    weights.write_bytes((finished[0].output_dir / "last" / "model.safetensors").read_bytes())
    for name in ("optimizer.bin", "random_states_0.pkl"):  # Accelerate alone would skip a bad random state quietly
        state = out / "last" / name
        whole = state.read_bytes()
        state.write_bytes(whole[:100])
        with pytest.raises(ValueError, match=rf"{state} is damaged"):
            D.distill(quick_cfg, "roberta", splits, output_dir=out, resume=True, progress=False)
        state.write_bytes(whole)
    state.unlink()
    with pytest.raises(FileNotFoundError, match=rf"{state} is missing; the run cannot continue"):
        D.distill(quick_cfg, "roberta", splits, output_dir=out, resume=True, progress=False)
    (out / "last" / "kdsd_meta.json").write_text("")
    with pytest.raises(ValueError, match=rf"{out / 'last' / 'kdsd_meta.json'} is empty; the run cannot continue"):
        D.distill(quick_cfg, "roberta", splits, output_dir=out, resume=True, progress=False)
    metrics.write_bytes(finished_metrics[:200])
    cfg = quick_cfg.replace(output_dir=str(tmp_path / "profile"))
    (tmp_path / "profile" / "distill").mkdir(parents=True)
    shutil.copytree(out, tmp_path / "profile" / "distill" / "roberta")
    with pytest.raises(ValueError, match=r"metrics.json is damaged \(200 bytes, not valid JSON.*\); resume the run"):
        D.load_metrics(cfg, "roberta")
    best_meta = out / "best" / "kdsd_meta.json"
    best_meta.write_text("")
    with pytest.raises(ValueError, match=rf"{best_meta} is empty; copy the folder again"):
        kd.pipeline.load_trained_student(out / "best")
    monkeypatch.setenv("KDSD_TRAINED_ROBERTA", str(out / "best"))
    with pytest.raises(ValueError, match=rf"{best_meta} is empty; copy the folder again"):
        D.ensure_trained(cfg, "roberta")


def test_a_resume_starts_a_fresh_fp16_scaler_and_lets_errors_that_are_not_damage_through(tmp_path):
    """fp16 runs only on CUDA, so a CPU gradient scaler stands in for the T4's: a last/ saved in another
    precision has no scaler state, and the resumed run says it starts a fresh one. A checkpoint of another
    model is not a damaged file: Accelerate's own error comes through, not "damaged, start over"."""
    from kdutils.distill.checkpoint import load_training_state, register_for_checkpointing, save_training_state

    def run(width):
        accelerator = D.make_accelerator("cpu", "no")
        model = torch.nn.Linear(width, width)
        optimizer = torch.optim.AdamW(model.parameters())
        schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
        accelerator.prepare(model, optimizer)
        state = D.TrainState(step=3)
        register_for_checkpointing(accelerator, schedule, state)
        return accelerator, state

    saved, _ = run(2)
    save_training_state(saved, tmp_path / "last", {"step": 3})
    resumed, state = run(2)
    state.step = 0
    scaler = resumed.scaler = torch.amp.GradScaler("cpu")
    assert load_training_state(resumed, tmp_path / "last", "fix") == [
        "a fresh fp16 gradient scaler (last/ was saved in another precision)"]
    assert state.step == 3 and resumed.scaler is scaler
    other, _ = run(3)
    with pytest.raises(RuntimeError, match="size mismatch"):
        load_training_state(other, tmp_path / "last", "fix")


def test_frozen_word_embeddings_stay_and_the_rest_learns(cfg, small_splits):
    from transformers import AutoModel

    from kdutils.models import load_student

    start = load_student(cfg, "roberta", 64)[1]
    for freeze in (True, False):
        run = cfg.replace(freeze_word_embeddings=freeze)
        out = Path(cfg.output_dir) / f"freeze-{freeze}"
        D.distill(run, "roberta", small_splits, output_dir=out, stop_after=3, progress=False)
        trained = AutoModel.from_pretrained(str(out / "last"))  # Accelerate's save_state, a model folder too
        words = torch.equal(trained.embeddings.word_embeddings.weight, start.embeddings.word_embeddings.weight)
        assert words is freeze, f"freeze_word_embeddings={freeze}"
        assert not torch.equal(trained.encoder.layer[0].attention.self.query.weight,
                               start.encoder.layer[0].attention.self.query.weight)
        assert json.loads((out / "last" / "kdsd_meta.json").read_text())["freeze_word_embeddings"] is freeze
    # experiment 1's student is the teacher's own CLIP, which knows no Korean words: the switch leaves it alone
    assert "clip" not in D.FREEZABLE and {"roberta", "roberta_pooler"} == set(D.FREEZABLE)
