"""Students kept outside a runtime: KDSD_TRAINED_<EXPERIMENT> names a folder or a hub repo, checked before use."""

import shutil
from pathlib import Path

import pytest
import torch

import kdutils as kd
from kdutils import distill as D
from kdutils import pipeline as P
from kdutils.distill import runs
from kdutils.models import student_env_var, trained_student_source


@pytest.fixture(scope="module")
def student_dir(cfg, tmp_path_factory):
    """A roberta student checkpoint as kd.distill writes it, under a run folder as on a teacher's Drive."""
    tokenizer, student = kd.load_student(cfg, "roberta")
    with torch.no_grad():  # not the fresh weights, so a round trip cannot pass by rebuilding them
        student.embeddings.word_embeddings.weight.add_(0.5)
    meta = {"profile": "tiny", "experiment": "roberta", "target": "sequence", "teacher": cfg.sd_id, "step": 7}
    run = tmp_path_factory.mktemp("drive") / "distill" / "roberta"
    return D.save_checkpoint(run / "best", student, tokenizer, meta)


@pytest.fixture
def clean_env(monkeypatch):
    for experiment in kd.EXPERIMENTS:
        monkeypatch.delenv(student_env_var(experiment), raising=False)
        monkeypatch.delenv(f"KDSD_STUDENT_{experiment.upper()}", raising=False)  # the old name
    return monkeypatch


def _files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _same_weights(a, b) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_the_variable_names_follow_the_experiments():
    assert [student_env_var(e) for e in kd.EXPERIMENTS] == [
        "KDSD_TRAINED_CLIP", "KDSD_TRAINED_ROBERTA", "KDSD_TRAINED_ROBERTA_POOLER"]
    with pytest.raises(ValueError, match="unknown experiment 'bert'"):
        student_env_var("bert")


def test_nothing_named_means_none(cfg, clean_env):
    assert trained_student_source(cfg, "roberta") is None
    clean_env.setenv("KDSD_TRAINED_ROBERTA", "  ")
    assert trained_student_source(cfg, "roberta") is None


def test_a_checkpoint_folder_from_the_environment_loads_as_trained(cfg, student_dir, clean_env):
    clean_env.setenv("KDSD_TRAINED_ROBERTA", str(student_dir))
    assert trained_student_source(cfg, "roberta") == student_dir
    assert trained_student_source(cfg, "clip") is None, "each experiment has its own variable"
    _, student, meta = P.load_trained_student(trained_student_source(cfg, "roberta"))
    assert meta["step"] == 7
    _, saved = kd.load_student(cfg, "roberta")
    assert not _same_weights(student, saved), "the trained weights, not a fresh student"


def test_the_run_folder_around_best_is_accepted_and_an_argument_wins(cfg, student_dir, clean_env):
    clean_env.setenv("KDSD_TRAINED_ROBERTA", "/no/such/folder")
    assert trained_student_source(cfg, "roberta", source=str(student_dir.parent)) == student_dir


def test_a_folder_without_a_student_fails_clearly_and_is_left_alone(cfg, tmp_path, clean_env):
    (tmp_path / "notes.txt").write_text("my homework")
    (tmp_path / "config.json").write_text("{}")
    before = _files(tmp_path)
    clean_env.setenv("KDSD_TRAINED_ROBERTA", str(tmp_path))
    with pytest.raises(FileNotFoundError) as err:
        trained_student_source(cfg, "roberta")
    message = str(err.value)
    assert f"KDSD_TRAINED_ROBERTA={tmp_path}" in message and "no kdsd_meta.json" in message
    assert "best/ folder" in message and "Nothing was changed" in message
    assert _files(tmp_path) == before


@pytest.mark.parametrize("source", ["/no/such/folder", "not a repo id", "a/b/c"])
def test_a_missing_folder_that_is_no_repo_id_fails_without_the_network(cfg, clean_env, source, no_network):
    with pytest.raises(FileNotFoundError, match="no such folder, and not a hub repo id"):
        trained_student_source(cfg, "roberta", source=source)


def test_a_student_of_another_experiment_or_teacher_is_refused(cfg, student_dir, clean_env):
    clean_env.setenv("KDSD_TRAINED_CLIP", str(student_dir))
    with pytest.raises(ValueError, match="experiment 'roberta', not 'clip'; set KDSD_TRAINED_ROBERTA to it instead"):
        trained_student_source(cfg, "clip")
    class_cfg = kd.get_profile("class", output_dir=cfg.output_dir)
    with pytest.raises(ValueError, match="distilled from 'tiny/stable-diffusion'.*draws with 'CompVis"):
        trained_student_source(class_cfg, "roberta", source=str(student_dir))


def test_a_hub_id_is_downloaded_without_sd_and_checked(cfg, student_dir, clean_env, tmp_path, monkeypatch, no_network):
    import huggingface_hub

    calls = []

    def fake_snapshot_download(repo_id, **kwargs):
        calls.append((repo_id, kwargs))
        snapshot = tmp_path / "hub" / repo_id.replace("/", "--")
        shutil.copytree(student_dir, snapshot)
        return str(snapshot)

    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_snapshot_download)
    clean_env.setenv("KDSD_TRAINED_ROBERTA", "a-teacher/kd-roberta")
    folder = trained_student_source(cfg, "roberta")
    assert folder == tmp_path / "hub" / "a-teacher--kd-roberta"
    (repo_id, kwargs), = calls
    assert repo_id == "a-teacher/kd-roberta"
    assert {"unet/*", "vae/*", "safety_checker/*"} <= set(kwargs["ignore_patterns"]), "SD's parts are not fetched"
    _, student, _ = P.load_trained_student(folder)
    _, original, _ = P.load_trained_student(student_dir)
    assert _same_weights(student, original)


def test_a_failed_download_says_what_to_do(cfg, clean_env, monkeypatch):
    import huggingface_hub

    def offline(repo_id, **kwargs):
        raise OSError("offline mode is enabled")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", offline)
    clean_env.setenv("KDSD_TRAINED_CLIP", "a-teacher/kd-clip")
    with pytest.raises(FileNotFoundError) as err:
        trained_student_source(cfg, "clip")
    message = str(err.value)
    assert "KDSD_TRAINED_CLIP=a-teacher/kd-clip" in message and "could not download 'a-teacher/kd-clip'" in message
    assert "offline mode is enabled" in message and "hf auth login" in message


def test_an_exported_pipeline_gives_back_its_student(cfg, student_dir, clean_env, tmp_path):
    exported = P.export_pipeline(cfg, student_dir, tmp_path / "exported")
    before = _files(exported)
    folder = trained_student_source(cfg, "roberta", source=str(exported))
    assert folder.parent == Path(cfg.output_dir) / "students", "the view lives in the output folder"
    tokenizer, student, meta = P.load_trained_student(folder)
    original_tokenizer, original, _ = P.load_trained_student(student_dir)
    assert _same_weights(student, original)
    assert tokenizer("한복을 입은 여자").input_ids == original_tokenizer("한복을 입은 여자").input_ids
    assert (meta["experiment"], meta["step"], meta["exported_pipeline"]) == ("roberta", 7, str(exported))
    assert _files(exported) == before, "the exported folder is only read"
    assert trained_student_source(cfg, "roberta", source=str(exported)) == folder, "asking again reuses the view"


def test_the_sampling_notebooks_use_a_named_student_and_never_train(cfg, student_dir, clean_env, monkeypatch):
    def no_training(*args, **kwargs):
        raise AssertionError("a named student must not be trained again")

    monkeypatch.setattr(runs, "distill", no_training)
    clean_env.setenv("KDSD_TRAINED_ROBERTA", str(student_dir))
    assert D.ensure_trained(cfg, "roberta") == student_dir
    metrics = D.load_metrics(cfg, "roberta")  # a bare best/ on a Drive: what its checkpoint records
    assert (metrics["best_dir"], metrics["best_step"], metrics["test"]) == (str(student_dir), 7, None)
    # the run's metrics.json came along: its test numbers are read
    (student_dir.parent / "metrics.json").write_text('{"experiment": "roberta", "best_step": 7, "test": {"r1_ko2en": 0.5}}')
    try:
        assert D.load_metrics(cfg, "roberta")["test"] == {"r1_ko2en": 0.5}
    finally:
        (student_dir.parent / "metrics.json").unlink()
    clean_env.delenv("KDSD_TRAINED_ROBERTA")
    with pytest.raises(FileNotFoundError, match="KDSD_TRAINED_ROBERTA"):
        D.load_metrics(cfg, "roberta")  # nothing trained in this profile: the error names the variable
    assert D.ensure_trained(cfg, "roberta", train_missing=False) is None


def test_a_student_from_an_older_course_or_other_settings_is_used_with_a_warning(tmp_path, monkeypatch):
    cfg = kd.get_profile("tiny", output_dir=str(tmp_path), num_pairs=300)
    splits = kd.data.prepare_splits(cfg)
    run = tmp_path / "distill" / "roberta"
    run.mkdir(parents=True)
    current = {"experiment": "roberta", "teacher": cfg.sd_id, "data_fingerprint": kd.data.fingerprint(splits),
               "student_padding": cfg.student_padding, "best_step": 3}
    assert D.outdated(cfg, current, splits) == []
    old = {**current, "student_padding": "pad"}  # the study's [PAD]
    (run / "metrics.json").write_text(__import__("json").dumps(old))
    monkeypatch.setattr(runs, "distill", lambda *a, **k: pytest.fail("an outdated student is not retrained unasked"))
    with pytest.warns(UserWarning, match=r"'pad' padding, not 'mask'.*delete"):
        assert D.ensure_trained(cfg, "roberta") == run / "best"
    assert D.outdated(cfg, {**current, "data_fingerprint": "x"}, splits) == ["on other pairs than this profile's splits"]
    unrecorded = {key: value for key, value in current.items() if key != "student_padding"}
    assert D.outdated(cfg, unrecorded, splits) == [], "a run that did not record its padding is not accused of [PAD]"


@pytest.mark.slow
def test_a_run_from_an_older_toy_student_is_outdated(cfg):
    from kdutils.tiny import ASSETS_VERSION

    splits = kd.data.prepare_splits(cfg)
    current = {"experiment": "roberta", "teacher": cfg.sd_id, "data_fingerprint": kd.data.fingerprint(splits),
               "student": f"tiny/roberta-small@{ASSETS_VERSION}"}
    assert D.outdated(cfg, current, splits) == []
    older = {**current, "student": "tiny/roberta-small"}  # recorded before the toy student had a version
    assert D.outdated(cfg, older, splits) == [f"from student 'tiny/roberta-small', not 'tiny/roberta-small@{ASSETS_VERSION}'"]
    assert D.outdated(cfg, {**older, "experiment": "clip"}, splits) == []  # experiment 1 starts from the teacher


def test_the_old_variable_name_still_works_with_a_notice(cfg, clean_env, student_dir):
    clean_env.setenv("KDSD_STUDENT_ROBERTA", str(student_dir))
    with pytest.warns(FutureWarning, match="KDSD_STUDENT_ROBERTA is the old name of KDSD_TRAINED_ROBERTA"):
        assert trained_student_source(cfg, "roberta") == student_dir
    clean_env.setenv("KDSD_TRAINED_ROBERTA", "/no/such/folder")  # the new name wins
    with pytest.raises(FileNotFoundError, match="KDSD_TRAINED_ROBERTA=/no/such/folder"):
        trained_student_source(cfg, "roberta")
