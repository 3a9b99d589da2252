"""The command line: a flag per profile value, choices from the code's tables, clear errors."""

import json
import shutil
import typing
from dataclasses import fields
from pathlib import Path

import pytest

from kdutils.__main__ import build_parser, profile_overrides
from kdutils.models import EXPERIMENTS
from kdutils.profiles import PROFILES, Profile, get_profile

# a value of each field type as typed on the command line, and what it must become
SAMPLES = {bool: ("no", False), int: ("8", 8), float: ("0.25", 0.25), str: ("cpu", "cpu"),
           int | None: ("none", None), str | None: ("none", None)}


def _train(*flags: str):
    return build_parser().parse_args(["train", "--experiment", "roberta", *flags])


@pytest.mark.parametrize("field", [f for f in fields(Profile) if f.name != "name"], ids=lambda f: f.name)
def test_every_profile_value_has_a_typed_flag(field):
    flag = "--" + field.name.replace("_", "-")
    kind = typing.get_type_hints(Profile)[field.name]
    text, value = {"mixed_precision": ("bf16", "bf16"), "student_padding": ("pad", "pad")}.get(field.name, SAMPLES[kind])
    assert profile_overrides(_train(flag, text)) == {field.name: value}


def test_no_flag_no_override_and_the_profile_name_is_its_own_option():
    assert profile_overrides(_train()) == {}
    assert _train("--profile", "class").profile == "class"


def test_flags_reach_the_profile_and_win_over_the_environment(monkeypatch):
    monkeypatch.setenv("KDSD_LR", "1e-2")
    monkeypatch.setenv("KDSD_BATCH_SIZE", "64")
    args = _train("--profile", "paper", "--lr", "1e-4", "--num-pairs", "none", "--num-epochs", "2",
                  "--mixed-precision", "no", "--output", "/tmp/run")
    cfg = get_profile(args.profile, **profile_overrides(args))
    assert (cfg.name, cfg.lr, cfg.num_pairs, cfg.num_epochs, cfg.mixed_precision) == ("paper", 1e-4, None, 2, "no")
    assert cfg.batch_size == 64, "a value without a flag still comes from KDSD_<NAME>"
    assert cfg.output_dir == "/tmp/run", "--output is kept as another name for --output-dir"


def test_choices_come_from_the_code_tables():
    parser = build_parser()
    for command in (["train", "--experiment", "clip"], ["course"], ["export", "--student", "s", "--output", "o"]):
        for profile in PROFILES:
            assert parser.parse_args([*command, "--profile", profile]).profile == profile
    for experiment in EXPERIMENTS:
        assert parser.parse_args(["train", "--experiment", experiment]).experiment == experiment
    assert parser.parse_args(["bench", "--experiment", *EXPERIMENTS]).experiment == list(EXPERIMENTS)


@pytest.mark.parametrize("flags, message", [
    (["--lr", "fast"], "argument --lr: lr must be a number > 0, e.g. 5e-5, got 'fast'"),
    (["--lr=-1e-4"], "argument --lr: lr must be a number > 0"),
    (["--num-epochs", "2.5"], "argument --num-epochs: num_epochs must be a whole number >= 1, got '2.5'"),
    (["--eval-every", "0"], "argument --eval-every: eval_every must be a whole number of steps >= 1, got '0'"),
    (["--batch-size=-8"], "argument --batch-size: batch_size must be a whole number >= 1, got '-8'"),
    (["--num-pairs", "lots"], "argument --num-pairs: num_pairs must be a whole number >= 1, or none for every pair"),
    (["--warmup-ratio", "1.5"], "argument --warmup-ratio: warmup_ratio must be a share of the steps between 0 and 1"),
    (["--image-size", "100"], "argument --image-size: image_size must be a multiple of 8 pixels"),
    (["--device", "gpu"], "argument --device: device must be 'auto' or a torch device"),
    (["--output-dir", "/dev/null/run"], "argument --output-dir/--output: output_dir must be a folder that can be "
                                        "written (/dev/null is a file, so no folder can be made below it)"),
    (["--mixed-precision", "fp8"], "argument --mixed-precision: mixed_precision must be one of "
                                   "('auto', 'no', 'bf16', 'fp16'), got 'fp8'"),
    (["--profile", "huge"], "argument --profile: invalid choice: 'huge'"),
    (["--batchsize", "8"], "unrecognized arguments: --batchsize"),
])
def test_bad_values_fail_with_a_clear_message(capsys, flags, message):
    with pytest.raises(SystemExit) as exit_:
        _train(*flags)
    assert exit_.value.code == 2 and message in capsys.readouterr().err


def test_a_bad_experiment_names_the_choices(capsys):
    with pytest.raises(SystemExit):
        build_parser().parse_args(["train", "--experiment", "bert"])
    assert "choose from " + ", ".join(repr(e) for e in EXPERIMENTS) in capsys.readouterr().err


def test_train_reports_a_bad_environment_value_without_a_traceback(monkeypatch, capsys):
    from kdutils.__main__ import main

    monkeypatch.setenv("KDSD_MIXED_PRECISION", "fp8")
    assert main(["train", "--experiment", "roberta", "--profile", "tiny"]) == 2
    assert "error: KDSD_MIXED_PRECISION='fp8': mixed_precision must be one of" in capsys.readouterr().err
    monkeypatch.setenv("KDSD_MIXED_PRECISION", "no")
    monkeypatch.setenv("KDSD_EVAL_EVERY", "0")
    assert main(["export", "--profile", "tiny", "--student", "s", "--output", "o"]) == 2
    assert "error: KDSD_EVAL_EVERY='0': eval_every must be a whole number of steps >= 1" in capsys.readouterr().err


@pytest.fixture
def fake_export(monkeypatch, tmp_path):
    """export_pipeline that writes a small folder, and a hub that records uploads instead of pushing."""
    import huggingface_hub

    import kdutils.pipeline

    def export_pipeline(cfg, student_dir, output_dir, *, safety_checker=True, overwrite=False, fp16=False):
        hub["fp16"].append(fp16)
        out = Path(output_dir)
        out.mkdir(parents=True)
        (out / "model_index.json").write_text("{}")
        (out / "kdsd_export.json").write_text(json.dumps({"experiment": "roberta", "teacher": cfg.sd_id}))
        return out

    hub = {"created": [], "uploaded": [], "fp16": []}

    def create_repo(repo_id, private=False, exist_ok=False):
        hub["created"].append((repo_id, private, exist_ok))
        return f"https://huggingface.co/{repo_id}"

    def upload_folder(repo_id, folder_path, commit_message=None):
        hub["uploaded"].append((repo_id, sorted(p.name for p in Path(folder_path).iterdir())))

    monkeypatch.setattr(kdutils.pipeline, "export_pipeline", export_pipeline)
    monkeypatch.setattr(huggingface_hub, "create_repo", create_repo)
    monkeypatch.setattr(huggingface_hub, "upload_folder", upload_folder)
    return hub


def _export(tmp_path, *flags):
    from kdutils.__main__ import main

    return main(["export", "--profile", "tiny", "--student", str(tmp_path / "best"),
                 "--output", str(tmp_path / "exported"), *flags])


def test_export_pushes_the_saved_folder_only_when_asked(fake_export, tmp_path, capsys, no_network):
    assert _export(tmp_path) == 0
    assert fake_export == {"created": [], "uploaded": [], "fp16": [False]}
    shutil.rmtree(tmp_path / "exported")
    assert _export(tmp_path, "--push-to-hub", "a-teacher/kd-roberta", "--private") == 0
    assert fake_export["created"] == [("a-teacher/kd-roberta", True, True)]
    assert fake_export["uploaded"] == [("a-teacher/kd-roberta", ["kdsd_export.json", "model_index.json"])], \
        "the folder as saved, with the course's kdsd_export.json"
    out = capsys.readouterr().out
    assert "pushed to https://huggingface.co/a-teacher/kd-roberta" in out
    assert "KDSD_TRAINED_<EXPERIMENT>=a-teacher/kd-roberta" in out


def test_export_fp16_asks_for_half_precision_weights(fake_export, tmp_path):
    assert _export(tmp_path, "--fp16") == 0
    assert fake_export["fp16"] == [True]


def test_a_failed_push_keeps_the_export_and_says_how_to_log_in(fake_export, tmp_path, capsys, monkeypatch):
    import huggingface_hub

    def no_token(*args, **kwargs):
        raise OSError("no token found")

    monkeypatch.setattr(huggingface_hub, "upload_folder", no_token)
    assert _export(tmp_path, "--push-to-hub", "a-teacher/kd-roberta") == 1
    err = capsys.readouterr().err
    assert "could not push to 'a-teacher/kd-roberta'" in err and "no token found" in err
    assert f"the pipeline is saved in {tmp_path / 'exported'}" in err and "hf auth login" in err
    assert (tmp_path / "exported" / "kdsd_export.json").exists()


@pytest.mark.parametrize("repo_id", ["just-a-name", "https://huggingface.co/a/b", "a/b/c"])
def test_a_bad_hub_repo_id_is_refused_before_exporting(fake_export, tmp_path, capsys, repo_id):
    with pytest.raises(SystemExit) as exit_:
        _export(tmp_path, "--push-to-hub", repo_id)
    assert exit_.value.code == 2 and "expected a Hugging Face repo id OWNER/NAME" in capsys.readouterr().err
    assert not (tmp_path / "exported").exists()


def _finished_run(folder: Path) -> dict:
    """A finished run's files as train leaves them (contents do not matter: they must stay as they are)."""
    (folder / "best").mkdir(parents=True)
    (folder / "best" / "model.safetensors").write_bytes(b"weights of the finished run")
    (folder / "metrics.json").write_text(json.dumps({"best_step": 1480, "best_val_loss": 8.25}))
    return {p.relative_to(folder): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def test_train_stops_before_replacing_a_finished_run_and_names_the_flags(tmp_path, capsys):
    """Before, running train again into the same folder replaced the finished run's best/ with an earlier one."""
    from kdutils.__main__ import main

    run = tmp_path / "distill" / "roberta"
    files = _finished_run(run)
    command = ["train", "--experiment", "roberta", "--profile", "tiny", "--output-dir", str(tmp_path)]
    assert main(command) == 2
    err = capsys.readouterr().err
    assert f"error: {run} already holds a finished run (metrics.json, best/ at step 1480)" in err
    assert "--output-dir" in err and "--resume" in err and "--overwrite" in err
    assert main([*command, "--resume", "--overwrite"]) == 2
    assert "resume and overwrite exclude each other" in capsys.readouterr().err
    (run / "notes.txt").write_text("mine")
    assert main([*command, "--overwrite"]) == 2
    assert "holds files that are not a training run's (notes.txt)" in capsys.readouterr().err
    assert {p.relative_to(run): p.read_bytes() for p in run.rglob("*") if p.is_file() and p.name != "notes.txt"} \
        == files, "nothing was written"
    assert not (tmp_path / "data").exists(), "refused before preparing any data"


def test_tiny_train_takes_recipe_settings_checked_before_anything_trains(monkeypatch, capsys, tmp_path):
    """`tiny --train --recipe FIELD=VALUE`: toymodels.Recipe reachable from the command line (issue 24)."""
    from kdutils import toymodels
    from kdutils.__main__ import main

    built = {}

    def fake_build(output, recipe, student_recipe=None, keep_student=False, keep_vae=False):
        built.update(recipe=recipe, student=student_recipe, keep=keep_student, keep_vae=keep_vae)
        return {"recipe": "recorded"}

    monkeypatch.setattr(toymodels, "build", fake_build)
    assert main(["tiny", "--train", "--output", str(tmp_path), "--recipe", "unet_steps=3", "threads=1",
                 "--pretrain-recipe", "steps=7"]) == 0
    assert built["recipe"].unet_steps == 3 and built["recipe"].vae_steps == toymodels.Recipe().vae_steps
    assert (built["student"].steps, built["student"].threads) == (7, 1), "the student follows the build's threads"
    assert built["keep"] is False
    assert main(["tiny", "--train", "--output", str(tmp_path), "--keep-student"]) == 0 and built["keep"] is True
    assert built["keep_vae"] is False
    assert main(["tiny", "--train", "--output", str(tmp_path), "--keep-vae"]) == 0 and built["keep_vae"] is True
    assert toymodels.recipe_from(toymodels.Recipe, [("unet_grounding", "0")]).unet_grounding == 0, "0 turns it off"
    built.clear()
    for bad, says in ((["--recipe", "unet_stepz=3"], "has no setting 'unet_stepz'"),
                      (["--recipe", "unet_steps=many"], "takes an int"),
                      (["--recipe", "unet_lr=-1"], "must be positive")):
        capsys.readouterr()
        assert main(["tiny", "--train", "--output", str(tmp_path), *bad]) == 2
        assert says in capsys.readouterr().err and not built, "refused before training"
    assert main(["tiny", "--recipe", "unet_steps=3"]) == 2
    assert main(["tiny", "--keep-vae"]) == 2, "--keep-vae only means something with --train"
    assert "--recipe, --keep-student and --keep-vae go with --train" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["tiny", "--train", "--recipe", "unet_steps"])
