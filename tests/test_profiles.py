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
