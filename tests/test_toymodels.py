"""The toy world's trained models: the builder runs, and the committed models do what the course claims.

Every number here is a measurement of the toy world (small models trained on
captioned shapes), not of Stable Diffusion v1.4.
"""

import json
from dataclasses import replace
from pathlib import Path

import pytest
import torch

import kdutils as kd
from kdutils import toymodels as T
from kdutils import world

CHANCE = {"colour": 1 / 6, "shape": 1 / 3, "position": 1 / 5}
TARGET_EN = {"colour": 0.90, "position": 0.80, "shape": 0.70}  # the targets for English prompts


@pytest.mark.slow
def test_the_builder_runs_end_to_end_in_a_few_steps(tmp_path):
    from diffusers import StableDiffusionPipeline
    from transformers import CLIPModel, CLIPProcessor

    report = T.build(tmp_path, T.Recipe.quick(), progress=False, student_recipe=T.PretrainRecipe.quick())
    assert report["teacher_words_one_token"] and report["teacher_colour_word_cosine"] < 0.5
    for name in kd.tiny.TRAINED:
        assert (tmp_path / name / "DONE").exists()
    pipe = StableDiffusionPipeline.from_pretrained(str(tmp_path / "stable-diffusion"))
    assert pipe.unet.config.cross_attention_dim == pipe.text_encoder.config.hidden_size
    image = pipe("a red circle", num_inference_steps=2, output_type="np").images[0]
    assert image.shape == (world.IMAGE_SIZE, world.IMAGE_SIZE, 3)
    CLIPModel.from_pretrained(str(tmp_path / "clip-scorer"))
    CLIPProcessor.from_pretrained(str(tmp_path / "clip-scorer"))
    assert report["vae_kept"] is False

    # a UNet-only change keeps the finished VAE (--keep-vae); a VAE change trains a new one
    vae_file = tmp_path / "stable-diffusion" / "vae" / "diffusion_pytorch_model.safetensors"
    before = vae_file.read_bytes()
    kept = T.build(tmp_path, replace(T.Recipe.quick(), unet_lr=1e-3), progress=False,
                   student_recipe=T.PretrainRecipe.quick(), keep_student=True, keep_vae=True)
    assert kept["vae_kept"] and kept["vae_seconds"] == report["vae_seconds"] and vae_file.read_bytes() == before
    other = T.build(tmp_path, replace(T.Recipe.quick(), vae_lr=1e-3), progress=False,
                    student_recipe=T.PretrainRecipe.quick(), keep_student=True, keep_vae=True)
    assert not other["vae_kept"] and vae_file.read_bytes() != before


def test_the_probe_draws_what_diffusers_draws_and_keeps_every_cross_attention_map():
    torch.manual_seed(0)
    unet = T.new_unet().eval()
    latents, context = torch.randn(2, 4, 8, 8), torch.randn(2, 77, unet.config.cross_attention_dim)
    with torch.no_grad():
        plain = unet(latents, 10, context).sample
        probe = T.probe_cross_attention(unet)
        probed = unet(latents, 10, context).sample
    assert torch.allclose(plain, probed, atol=1e-5)
    assert sorted(w.shape[1] for w in probe.weights) == [16, 16, 16, 16, 64, 64, 64], "7 layers, 8x8 and 4x4 cells"
    assert all(w.shape[::2] == (2, 77) and torch.allclose(w.sum(-1), torch.ones(1)) for w in probe.weights)


def test_grounding_loss_counts_the_words_share_on_the_shape_for_kept_captions_only():
    shares = {2: torch.tensor([[1.0, 0.0, 0.0, 0.0], [0.5, 0.5, 0.0, 0.0]])}  # two pictures on 2 x 2 cells
    on_shape = torch.zeros(2, 4, 3)  # (batch, pixels, tokens): word 1 read only where the first picture's shape is
    on_shape[:, 0, 1] = 1.0
    on_shape[:, 1:, 2] = 1.0
    keep = torch.tensor([True, True])
    first = torch.tensor([1, 1])
    assert T.grounding_loss([on_shape], shares, [first], keep)[None].tolist() == [0.5 ** 2 / 2]
    assert T.grounding_loss([on_shape], shares, [first], torch.tensor([True, False])).item() == 0.0
    assert T.grounding_loss([on_shape], shares, [torch.tensor([2, 2])], torch.tensor([True, False])).item() == 1.0
    assert T.grounding_loss([on_shape], shares, [first], torch.tensor([False, False])).item() == 0.0, "nothing named"
    even = torch.full((2, 4, 3), 0.25)
    written = ((1 - shares[2].sum(1) / 4) ** 2).mean()  # read evenly: the share is the shape's area
    assert torch.isclose(T.grounding_loss([even], shares, [first], keep), written)


def test_word_positions_find_each_captions_word_and_name_a_missing_one():
    tokenizer = T.teacher_tokenizer()
    captions = ["a large red circle on the left", "there is a blue square at the top"]
    assert T.word_positions(tokenizer, captions, ["red", "square"]).tolist() == [3, 5]
    with pytest.raises(ValueError, match="green"):
        T.word_positions(tokenizer, captions, ["green", "square"])


def test_the_teacher_reads_world_words_whole_korean_as_bytes_and_keeps_colours_apart():
    tokenizer = T.teacher_tokenizer()
    assert all(len(tokenizer.tokenize(word)) == 1 for word in world.english_vocabulary())
    assert len(tokenizer.tokenize("빨간")) == len("빨간".encode())  # Korean falls into byte pieces
    assert T.word_separation(T.teacher_encoder(tokenizer), tokenizer) < 0.5
    # a value path as strong as the old tiny teacher's blurs the colour word into the running average
    blurred = T.teacher_encoder(tokenizer)
    with torch.no_grad():
        for layer in blurred.encoder.layers:
            layer.self_attn.v_proj.weight.mul_(10.0)
            layer.self_attn.out_proj.weight.mul_(10.0)
    assert T.word_separation(blurred, tokenizer) > 0.8


def test_the_committed_teacher_is_the_one_the_builder_makes():
    """The UNet was trained on this exact encoder; a drifted builder would no longer rebuild it."""
    from transformers import CLIPTextModel, CLIPTokenizer

    sd = Path(kd.resolve("tiny/stable-diffusion"))
    committed = CLIPTextModel.from_pretrained(str(sd), subfolder="text_encoder")
    tokenizer = CLIPTokenizer.from_pretrained(str(sd), subfolder="tokenizer")
    assert tokenizer.get_vocab() == T.teacher_tokenizer().get_vocab()
    rebuilt = T.teacher_encoder(tokenizer).state_dict()
    assert all(torch.equal(value, rebuilt[key]) for key, value in committed.state_dict().items())


def test_the_committed_build_met_its_vae_target():
    report = json.loads((T.ASSETS / "build.json").read_text())
    assert min(report["vae_reconstruction_accuracy"].values()) >= 0.95, report["vae_reconstruction_accuracy"]
    sizes = sum(p.stat().st_size for p in T.ASSETS.rglob("*") if p.is_file())
    assert sizes <= 30 * 1024 ** 2, f"committed toy-world weights are {sizes / 1024 ** 2:.1f} MB"


@pytest.fixture(scope="module")
def teacher_scores():
    return T.evaluate(kd.get_profile("tiny"))


@pytest.mark.slow
def test_the_toy_sd_draws_what_english_asks(teacher_scores):
    """The issue's targets, with a margin of 5 points: one image of 48 is 2 (the README gives the measured values)."""
    for name, target in TARGET_EN.items():
        assert teacher_scores["teacher_en"][name] >= target - 0.05, teacher_scores["teacher_en"]
        assert teacher_scores["teacher_en_held_out"][name] >= target - 0.1, teacher_scores["teacher_en_held_out"]


def test_the_toy_sd_does_not_understand_korean(teacher_scores):
    """The problem the course solves: Korean prompts land near chance."""
    for name, chance in CHANCE.items():
        assert teacher_scores["teacher_ko"][name] <= chance + 0.25, teacher_scores["teacher_ko"]
        assert teacher_scores["teacher_ko"][name] < teacher_scores["teacher_en"][name] - 0.3


def test_the_toy_scheduler_is_dpm_solver_and_keeps_sd_settings_for_the_others():
    """The toy pipeline ships DPM++ 2M Karras (PNDM lost colours at high guidance); SD v1.4's config rides along, so
    PNDM made from it skips its Runge-Kutta steps as SD's does, and DDIM does not clip latents (with diffusers' default,
    clip_sample true, DDIM draws broken toy images)."""
    from diffusers import DDIMScheduler, DPMSolverMultistepScheduler, PNDMScheduler

    committed = DPMSolverMultistepScheduler.from_pretrained(str(kd.tiny.TRAINED_DIR / "stable-diffusion"),
                                                            subfolder="scheduler")
    settings = lambda config: {k: v for k, v in config.items() if not k.startswith("_")}  # noqa: E731
    assert settings(committed.config) == settings(T.toy_scheduler().config)
    assert committed.config.algorithm_type == "dpmsolver++" and committed.config.use_karras_sigmas
    for scheduler in (committed, T.sd_pndm_scheduler()):
        assert DDIMScheduler.from_config(scheduler.config).config.clip_sample is False
        assert PNDMScheduler.from_config(scheduler.config).config.skip_prk_steps is True


@pytest.mark.slow
def test_the_toy_sd_follows_english_across_the_guidance_people_use():
    """Issue 21: on the held-out combinations the teacher's English keeps colour and shape >= 0.90 and position
    >= 0.80 at every guidance from 2 to 7.5 (the README gives the measured table). Three guidances here, with a
    margin of 5 points: one image of 24 is 4."""
    cfg = kd.get_profile("tiny")
    pipe = kd.pipeline.load_sd_pipeline(cfg)
    scenes = [s for s in world.eval_scenes() if world.is_held_out(s)]
    prompts = [world.canonical_en(s) for s in scenes]
    for guidance in (2.0, 5.0, 7.5):
        accuracy = T.attribute_accuracy(T.generate_for(pipe, prompts, cfg, guidance_scale=guidance), scenes)
        assert min(accuracy["colour"], accuracy["shape"]) >= 0.85 and accuracy["position"] >= 0.75, (guidance, accuracy)
