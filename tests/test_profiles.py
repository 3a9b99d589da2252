import pytest

from kdutils.profiles import PROFILES, get_profile


def test_tiny_is_the_default_without_cuda(monkeypatch):
    monkeypatch.delenv("KDSD_PROFILE", raising=False)
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert get_profile().name == "tiny"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert get_profile().name == "class"


def test_paper_profile_holds_the_study_hyperparameters():
    p = PROFILES["paper"]
    assert (p.sd_id, p.student_id) == ("CompVis/stable-diffusion-v1-4", "klue/roberta-small")
    assert (p.num_pairs, p.num_epochs, p.batch_size, p.lr, p.weight_decay) == (250_000, 5, 32, 5e-5, 1e-4)
    assert (p.warmup_ratio, p.max_length, p.image_size, p.num_inference_steps) == (0.1, 77, 512, 50)


def test_environment_overrides_and_keywords_win(monkeypatch):
    monkeypatch.setenv("KDSD_PROFILE", "class")
    monkeypatch.setenv("KDSD_BATCH_SIZE", "8")
    monkeypatch.setenv("KDSD_LR", "1e-4")
    monkeypatch.setenv("KDSD_NUM_PAIRS", "none")
    cfg = get_profile()
    assert (cfg.name, cfg.batch_size, cfg.lr, cfg.num_pairs) == ("class", 8, 1e-4, None)
    assert get_profile(batch_size=4).batch_size == 4
    tiny = get_profile("tiny", num_pairs=100)
    assert tiny.num_pairs == 100 and isinstance(tiny.num_pairs, int)


def test_each_profile_writes_to_its_own_folder(monkeypatch):
    monkeypatch.delenv("KDSD_OUTPUT_DIR", raising=False)
    assert get_profile("tiny").output_dir != get_profile("class").output_dir
    assert get_profile("tiny").output_dir.endswith("tiny")


def test_bad_names_fail_clearly():
    with pytest.raises(ValueError, match="unknown profile 'huge'"):
        get_profile("huge")
    with pytest.raises(TypeError, match="unknown profile value"):
        get_profile("tiny", batchsize=3)
    with pytest.raises(TypeError, match="unknown profile value"):
        get_profile("tiny").replace(epochs=3)


def test_setup_prints_the_profile_once_and_says_which_world_tiny_numbers_come_from(capsys, tmp_path):
    import kdutils

    cfg = kdutils.setup("tiny", output_dir=str(tmp_path / "out"))
    printed = capsys.readouterr().out
    assert printed.count("profile=tiny") == 1 and "toy world" in printed and "not SD v1.4" in printed
    assert (tmp_path / "out").is_dir() and cfg.torch_device in ("cpu", "cuda", "mps")
    assert "not SD v1.4" in cfg.world and get_profile("class").world == "CompVis/stable-diffusion-v1-4"


def test_every_profile_value_passes_its_own_check():
    from dataclasses import fields

    from kdutils.profiles import check_value

    for profile in PROFILES.values():
        for f in fields(profile):
            if f.name != "name":
                assert check_value(f.name, getattr(profile, f.name)) == getattr(profile, f.name)


@pytest.mark.parametrize("variable, text, message", [
    ("KDSD_EVAL_EVERY", "0", "KDSD_EVAL_EVERY='0': eval_every must be a whole number of steps >= 1"),
    ("KDSD_BATCH_SIZE", "-4", "KDSD_BATCH_SIZE='-4': batch_size must be a whole number >= 1"),
    ("KDSD_NUM_EPOCHS", "2.5", "KDSD_NUM_EPOCHS='2.5': num_epochs must be a whole number >= 1, got '2.5'"),
    ("KDSD_LR", "abc", "KDSD_LR='abc': lr must be a number > 0"),
    ("KDSD_LR", "nan", "KDSD_LR='nan': lr must be a number > 0"),
    ("KDSD_SEED", "-1", "KDSD_SEED='-1': seed must be a whole number from 0 to 2**32 - 1"),
    ("KDSD_MAX_LENGTH", "100", "KDSD_MAX_LENGTH='100': max_length must be a whole number from 2 to 77"),
    ("KDSD_DEVICE", "gpu", "KDSD_DEVICE='gpu': device must be 'auto' or a torch device"),
    ("KDSD_STUDENT_PADDING", "zeros", "KDSD_STUDENT_PADDING='zeros': student_padding must be one of ('mask', 'pad')"),
    ("KDSD_OUTPUT_DIR", "/dev/null/x", "KDSD_OUTPUT_DIR='/dev/null/x': output_dir must be a folder that can be "
                                       "written (/dev/null is a file"),
])
def test_a_bad_environment_value_is_refused_naming_the_variable(monkeypatch, variable, text, message):
    """Before, KDSD_NUM_EPOCHS=2.5 trained 2 epochs and KDSD_EVAL_EVERY=0 failed minutes later as a modulo by zero."""
    monkeypatch.setenv(variable, text)
    with pytest.raises(ValueError) as err:
        get_profile("tiny")
    assert message in str(err.value)


def test_keywords_and_replace_are_checked_and_converted_where_the_intent_is_clear(tmp_path, monkeypatch):
    with pytest.raises(ValueError, match=r"eval_every=0: eval_every must be a whole number of steps >= 1"):
        get_profile("tiny", eval_every=0)
    with pytest.raises(ValueError, match=r"batch_size=2.5: batch_size must be a whole number >= 1, got 2.5"):
        get_profile("tiny", batch_size=2.5)
    with pytest.raises(ValueError, match=r"lr='fast': lr must be a number > 0"):
        get_profile("tiny", lr="fast")
    with pytest.raises(ValueError, match=r"num_epochs=True: num_epochs must be a whole number"):
        get_profile("tiny", num_epochs=True)
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    with pytest.raises(ValueError, match=r"output_dir=.*: output_dir must be a folder that can be written \(.*a-file "
                                         r"is a file, not a folder\)"):
        get_profile("tiny", output_dir=str(blocker))
    with pytest.raises(ValueError, match=r"replace\(lr=-1\): lr must be a number > 0"):
        get_profile("tiny").replace(lr=-1)
    cfg = get_profile("tiny", num_pairs=2e4, lr=1, output_dir=tmp_path / "run")
    assert (cfg.num_pairs, cfg.lr, cfg.output_dir) == (20000, 1.0, str(tmp_path / "run"))
    assert isinstance(cfg.num_pairs, int) and isinstance(cfg.lr, float)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert get_profile("tiny", output_dir="~/kd").output_dir == str(tmp_path / "kd"), "not a folder named '~'"
    monkeypatch.setenv("KDSD_NUM_PAIRS", "1e3")
    assert get_profile("tiny").num_pairs == 1000


def test_a_profile_picked_for_want_of_a_gpu_says_so(monkeypatch, tmp_path, capsys):
    import sys
    import types

    import torch

    import kdutils

    monkeypatch.delenv("KDSD_PROFILE", raising=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert kdutils.setup(quiet=True, output_dir=str(tmp_path)).name == "tiny"
    printed = capsys.readouterr().out
    assert kdutils.NO_GPU_NOTE in printed and "Runtime > Change runtime type" not in printed
    monkeypatch.setitem(sys.modules, "google.colab", types.ModuleType("google.colab"))
    kdutils.setup(quiet=True, output_dir=str(tmp_path))
    assert "On Colab: Runtime > Change runtime type > T4 GPU" in capsys.readouterr().out
    kdutils.setup("tiny", quiet=True, output_dir=str(tmp_path))  # chosen on purpose: nothing to say
    monkeypatch.setenv("KDSD_PROFILE", "tiny")
    kdutils.setup(quiet=True, output_dir=str(tmp_path))
    assert capsys.readouterr().out == ""


def test_class_without_a_gpu_stops_with_a_reason_unless_the_cpu_is_asked_for(monkeypatch, tmp_path):
    import torch

    import kdutils

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(kdutils.profiles, "auto_device", lambda: "cpu")
    for name in ("class", "paper"):
        with pytest.raises(RuntimeError, match=rf"the {name} profile needs a GPU.*device=\"cpu\" \(KDSD_DEVICE=cpu\)"):
            kdutils.setup(name, quiet=True, output_dir=str(tmp_path / name))
        assert not (tmp_path / name).exists(), "refused before anything is written"
    monkeypatch.setenv("KDSD_PROFILE", "class")
    with pytest.raises(RuntimeError, match="needs a GPU"):
        kdutils.setup(quiet=True, output_dir=str(tmp_path / "env"))
    cfg = kdutils.setup("class", quiet=True, device="cpu", output_dir=str(tmp_path / "cpu"))
    assert (cfg.name, cfg.torch_device) == ("class", "cpu"), "asked for on purpose: it works as asked"
    monkeypatch.setattr(kdutils.profiles, "auto_device", lambda: "mps")
    assert kdutils.setup("class", quiet=True, output_dir=str(tmp_path / "mac")).torch_device == "mps"


def test_switches_take_yes_and_no_and_refuse_anything_else(monkeypatch):
    monkeypatch.setenv("KDSD_FREEZE_WORD_EMBEDDINGS", "off")
    assert get_profile("tiny").freeze_word_embeddings is False
    monkeypatch.setenv("KDSD_FREEZE_WORD_EMBEDDINGS", "Yes")
    assert get_profile("paper").freeze_word_embeddings is True
    monkeypatch.delenv("KDSD_FREEZE_WORD_EMBEDDINGS")
    assert (get_profile("tiny").freeze_word_embeddings, get_profile("paper").freeze_word_embeddings) == (True, False)
    for bad in ("maybe", 1, 0.0, None):
        with pytest.raises(ValueError, match="freeze_word_embeddings must be True or False"):
            get_profile("tiny", freeze_word_embeddings=bad)
