"""The command line: a flag per profile value, choices from the code's tables, clear errors."""

import typing
from dataclasses import fields

import pytest

from kdutils.__main__ import build_parser, profile_overrides
from kdutils.models import EXPERIMENTS
from kdutils.profiles import PROFILES, Profile, get_profile

# a value of each field type as typed on the command line, and what it must become
SAMPLES = {int: ("7", 7), float: ("0.25", 0.25), str: ("cpu", "cpu"),
           int | None: ("none", None), str | None: ("none", None)}


def _train(*flags: str):
    return build_parser().parse_args(["train", "--experiment", "roberta", *flags])


@pytest.mark.parametrize("field", [f for f in fields(Profile) if f.name != "name"], ids=lambda f: f.name)
def test_every_profile_value_has_a_typed_flag(field):
    flag = "--" + field.name.replace("_", "-")
    kind = typing.get_type_hints(Profile)[field.name]
    text, value = ("bf16", "bf16") if field.name == "mixed_precision" else SAMPLES[kind]
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
    (["--lr", "fast"], "argument --lr: invalid float value: 'fast'"),
    (["--num-epochs", "2.5"], "argument --num-epochs: invalid int value: '2.5'"),
    (["--num-pairs", "lots"], "argument --num-pairs: expected int or 'none', got 'lots'"),
    (["--mixed-precision", "fp8"], "argument --mixed-precision: invalid choice: 'fp8'"),
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
    assert "error: unknown mixed_precision 'fp8'" in capsys.readouterr().err
