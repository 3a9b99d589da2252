"""The Korean pipeline: export round trip, fixed latents, image metrics, clear errors."""

import logging
import os
import subprocess
import sys
import types

import numpy as np
import pytest
import torch

import kdutils as kd
from kdutils import distill as D
from kdutils import metrics as M
from kdutils import pipeline as P
from kdutils import sampling_memory as SM


@pytest.fixture(scope="module")
def pipe(cfg, student_dir):
    return P.korean_pipeline(cfg, student_dir)


RELOAD = """
import sys, torch
from diffusers import StableDiffusionPipeline
pipe = StableDiffusionPipeline.from_pretrained(sys.argv[1])
assert "kdutils" not in sys.modules
latents = torch.load(sys.argv[2])
image = pipe(["한복을 입은 여자"], latents=latents, num_inference_steps=2, output_type="np").images[0]
torch.save(torch.from_numpy(image), sys.argv[3])
print(type(pipe.text_encoder).__name__, pipe.text_encoder.config.use_attention_mask)
"""


@pytest.mark.slow
def test_export_reloads_in_a_plain_process_and_gives_the_same_image(cfg, student_dir, pipe, tmp_path):
    out = P.export_pipeline(cfg, student_dir, tmp_path / "exported")
    assert (out / "model_index.json").exists() and (out / "kdsd_export.json").exists()
    latents = P.fixed_latents(pipe, cfg, 1)
    torch.save(latents, tmp_path / "latents.pt")
    result = subprocess.run([sys.executable, "-c", RELOAD, str(out), str(tmp_path / "latents.pt"),
                             str(tmp_path / "image.pt")], capture_output=True, text=True, timeout=300,
                            env={"HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin", "HOME": str(tmp_path),
                                 # the same thread count as here, or float sums may round differently
                                 **{k: os.environ[k] for k in ("OMP_NUM_THREADS",) if k in os.environ}})
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip().endswith("RobertaModel True")
    here = pipe(["한복을 입은 여자"], latents=latents, num_inference_steps=2, output_type="np").images[0]
    assert np.array_equal(torch.load(tmp_path / "image.pt").numpy(), here)


def test_same_latents_and_encoder_give_identical_images(cfg, pipe):
    latents = P.fixed_latents(pipe, cfg, 2)
    assert latents.shape == (2, 4, cfg.image_size // 8, cfg.image_size // 8)
    assert torch.equal(latents, P.fixed_latents(pipe, cfg, 2))
    prompts = ["빨간 사과", "파란 하늘"]
    a = P.generate(pipe, prompts, latents, num_inference_steps=2)
    again = P.generate(pipe, prompts, latents, num_inference_steps=2)
    assert all(np.array_equal(np.asarray(x), np.asarray(y)) for x, y in zip(a, again))
    one_by_one = P.generate(pipe, prompts, latents, num_inference_steps=2, batch_size=1)
    diffs = [np.abs(np.asarray(x, int) - np.asarray(y, int)).max() for x, y in zip(a, one_by_one)]
    assert max(diffs) <= 2, "batching may only change rounding"
    other = P.generate(pipe, prompts, P.fixed_latents(pipe, cfg, 2, seed=cfg.seed + 1), num_inference_steps=2)
    assert not np.array_equal(np.asarray(a[0]), np.asarray(other[0]))


def test_a_shared_base_swaps_only_the_text_side_and_gives_the_same_images(cfg, student_dir, pipe):
    base = P.load_sd_pipeline(cfg)
    shared = P.korean_pipeline(cfg, student_dir, base=base)
    assert shared.unet is base.unet and shared.vae is base.vae  # SD is not loaded again
    assert type(shared.text_encoder).__name__ == "RobertaModel" and type(base.text_encoder).__name__ == "CLIPTextModel"
    latents = P.fixed_latents(pipe, cfg, 2)
    prompts = ["빨간 사과", "파란 하늘"]
    alone = P.generate(pipe, prompts, latents, num_inference_steps=2)
    together = P.generate(shared, prompts, latents, num_inference_steps=2)
    assert all(np.array_equal(np.asarray(x), np.asarray(y)) for x, y in zip(alone, together))


def test_image_metrics_are_maximal_for_the_same_image_and_lower_when_shuffled(cfg, pipe):
    images = P.generate(pipe, ["빨간 사과", "고양이", "바다", "산"], P.fixed_latents(pipe, cfg, 4),
                        num_inference_steps=2)
    processor, scorer = M.load_scorer(cfg)
    same = M.image_similarity(processor, scorer, images, images)
    shuffled = M.image_similarity(processor, scorer, images, images[1:] + images[:1])
    assert all(s == pytest.approx(1.0, abs=1e-5) for s in same)
    assert max(shuffled) < min(same)
    assert M.psnr(images[0], images[0]) == float("inf") and M.psnr(images[0], images[1]) < 60
    scores = M.clip_score(processor, scorer, images, ["a red apple", "a cat", "the sea", "a mountain"])
    assert all(0.0 <= s <= 100.0 for s in scores)
    with pytest.raises(ValueError, match="one text per image"):
        M.clip_score(processor, scorer, images, ["a red apple"])


def test_long_prompts_are_truncated_with_a_warning_naming_the_cut_text(pipe, caplog):
    long_prompt = " ".join(["아주 아름다운 한옥 마을의 풍경"] * 30)
    logger = logging.getLogger("diffusers")
    logger.propagate = True
    try:
        with caplog.at_level(logging.WARNING, logger="diffusers"):
            embeds, _ = pipe.encode_prompt([long_prompt], "cpu", 1, False)
    finally:
        logger.propagate = False
    assert embeds.shape[1] == 77
    assert "truncated" in caplog.text and "한옥" in caplog.text


def test_options_that_cannot_apply_fail_clearly(cfg, pipe, student_dir, tmp_path):
    latents = P.fixed_latents(pipe, cfg, 1)
    with pytest.raises(ValueError, match="clip_skip picks a CLIP hidden layer"):
        P.generate(pipe, ["빨간 사과"], latents, clip_skip=1)
    with pytest.raises(ValueError, match="one latent per prompt"):
        P.generate(pipe, ["a", "b"], latents)
    with pytest.raises(ValueError, match="unknown scheduler"):
        P.set_scheduler(pipe, "magic")
    with pytest.raises(FileNotFoundError, match="not a student checkpoint"):
        P.korean_pipeline(cfg, tmp_path)


def test_clip_skip_works_for_the_clip_teacher(cfg):
    pipe = P.load_sd_pipeline(cfg)
    latents = P.fixed_latents(pipe, cfg, 1)
    plain = P.generate(pipe, ["a red apple"], latents, num_inference_steps=2)[0]
    skipped = P.generate(pipe, ["a red apple"], latents, num_inference_steps=2, clip_skip=1)[0]
    assert not np.array_equal(np.asarray(plain), np.asarray(skipped))


def test_a_student_of_the_wrong_width_is_refused(cfg, tmp_path):
    from transformers import RobertaConfig, RobertaModel

    tokenizer, _ = kd.load_student(cfg, "roberta")
    narrow = RobertaModel(RobertaConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=1,
                                        num_attention_heads=2, intermediate_size=64, max_position_embeddings=80))
    folder = D.save_checkpoint(tmp_path / "narrow", narrow, tokenizer, {"experiment": "roberta"})
    with pytest.raises(ValueError, match="hidden size 32 != UNet cross-attention dim 64"):
        P.korean_pipeline(cfg, folder)


@pytest.mark.parametrize("name", list(P.SCHEDULERS))
def test_every_scheduler_samples(cfg, pipe, name):
    own = pipe.scheduler
    P.set_scheduler(pipe, name)
    image = P.generate(pipe, ["빨간 사과"], P.fixed_latents(pipe, cfg, 1), num_inference_steps=2)[0]
    pipe.scheduler = own
    assert image.size == (cfg.image_size, cfg.image_size)


def test_the_course_loads_its_korean_pipelines_without_the_known_encoder_notice(cfg, student_dir, tmp_path, caplog):
    from diffusers import StableDiffusionPipeline

    folder = P.export_pipeline(cfg, student_dir, tmp_path / "exported")
    logger = logging.getLogger("diffusers")
    logger.propagate = True
    try:
        with caplog.at_level(logging.WARNING, logger="diffusers"):
            StableDiffusionPipeline.from_pretrained(str(folder))  # plain diffusers: the notice shows
            # distinct records: after some earlier tests pytest's capture handler sits on both "diffusers" and the
            # root logger, and then sees each propagated record twice
            seen_plain = len({id(r) for r in caplog.records if "Expected types for text_encoder" in r.getMessage()})
            caplog.clear()
            P.korean_pipeline(cfg, student_dir)
            with P.quiet_encoder_swap():
                StableDiffusionPipeline.from_pretrained(str(folder))
                logging.getLogger("diffusers.pipelines.pipeline_utils").warning("another warning")
    finally:
        logger.propagate = False
    assert seen_plain >= 1  # once, or twice when the process already holds a loaded pipeline (diffusers 0.42)
    assert "Expected types for text_encoder" not in caplog.text
    assert "another warning" in caplog.text, "only the one known notice is hidden"


def test_ddim_keeps_latents_unclipped(pipe):
    """DDIMScheduler's default clips the predicted x0 to [-1, 1], which is meant for pixels, not SD latents."""
    own = pipe.scheduler
    P.set_scheduler(pipe, "DDIM")
    assert pipe.scheduler.config.clip_sample is False
    pipe.scheduler = own


def test_unet_calls_records_one_call_per_timestep_doubled_by_guidance(cfg, pipe):
    latents = P.fixed_latents(pipe, cfg, 2)
    with P.unet_calls(pipe) as guided:
        P.generate(pipe, ["빨간 원", "파란 네모"], latents, num_inference_steps=3, guidance_scale=4.0)
    assert len(guided) == len(pipe.scheduler.timesteps) and set(guided) == {4}
    with P.unet_calls(pipe) as plain:
        P.generate(pipe, ["빨간 원", "파란 네모"], latents, num_inference_steps=3, guidance_scale=1.0)
    assert set(plain) == {2} and len(plain) == len(guided)
    P.generate(pipe, ["빨간 원"], latents[:1], num_inference_steps=2)
    assert set(plain) == {2} and len(plain) == len(guided), "the hook is gone after the block"


def test_img2img_shares_the_components_and_runs_the_strength_share_of_the_steps(cfg, pipe):
    i2i = P.img2img_pipeline(pipe)
    assert i2i.unet is pipe.unet and i2i.vae is pipe.vae and i2i.text_encoder is pipe.text_encoder
    before = pipe.scheduler
    P.set_scheduler(i2i, "DDIM")
    assert pipe.scheduler is before, "swapping the img2img scheduler leaves the text-to-image pipeline alone"
    start = [kd.world.render(kd.world.Scene("circle", "red", "left", "large"))] * 2
    prompts = ["오른쪽에 있는 작은 파란 사각형", "가운데에 있는 큰 초록색 삼각형"]
    with P.unet_calls(i2i) as calls:
        images = P.img2img(i2i, prompts, start, strength=0.5, num_inference_steps=4)
    assert len(calls) == int(4 * 0.5) and images[0].size == (cfg.image_size, cfg.image_size)
    again = P.img2img(i2i, prompts, start, strength=0.5, num_inference_steps=4)
    assert all(np.array_equal(np.asarray(a), np.asarray(b)) for a, b in zip(images, again))
    with pytest.raises(ValueError, match="strength=0"):
        P.img2img(i2i, prompts, start, strength=0.0)
    with pytest.raises(ValueError, match="one starting image per prompt"):
        P.img2img(i2i, prompts, start[:1], strength=0.5)


def test_rerank_puts_the_picture_that_matches_the_caption_first(cfg):
    processor, scorer = M.load_scorer(cfg)
    scenes = [kd.world.Scene("square", "blue", "right", "large"), kd.world.Scene("circle", "red", "left", "large"),
              kd.world.Scene("triangle", "yellow", "top", "large")]
    images = [kd.world.render(scene) for scene in scenes]
    order, scores = M.rerank(processor, scorer, images, kd.world.canonical_en(scenes[1]))
    assert order[0] == 1 and sorted(order) == [0, 1, 2]
    assert [scores[i] for i in order] == sorted(scores, reverse=True)
    assert scores == M.clip_score(processor, scorer, images, [kd.world.canonical_en(scenes[1])] * 3)
    with pytest.raises(ValueError, match="at least one candidate"):
        M.rerank(processor, scorer, [], "a red circle")


def test_setup_hides_the_load_bars_and_keeps_the_download_bars(tmp_path, student_dir):
    from diffusers.utils import logging as diffusers_logging
    from huggingface_hub.utils import are_progress_bars_disabled
    from transformers.utils import logging as hf_logging

    kd.setup("tiny", quiet=True, output_dir=str(tmp_path))
    assert not hf_logging.is_progress_bar_enabled() and not diffusers_logging.is_progress_bar_enabled()
    assert not are_progress_bars_disabled(), "SD's multi-GB download must show its progress"
    # saving a checkpoint silences transformers' shard bar for a moment, and must hand the hub's bars back
    tokenizer, student = kd.load_student(kd.get_profile("tiny"), "roberta")
    D.save_checkpoint(tmp_path / "ckpt", student, tokenizer, {"experiment": "roberta"})
    assert not are_progress_bars_disabled()


def test_sampling_shows_a_bar_over_batches_only_when_there_are_several(cfg, pipe, monkeypatch):
    import tqdm.auto

    shown = []
    real = tqdm.auto.tqdm

    def spy(*args, **kwargs):
        shown.append(not kwargs.get("disable", False))
        return real(*args, **kwargs)

    monkeypatch.setattr(tqdm.auto, "tqdm", spy)
    prompts = ["빨간 원", "파란 네모"]
    latents = P.fixed_latents(pipe, cfg, 2)
    P.generate(pipe, prompts, latents, num_inference_steps=1, batch_size=1)
    P.generate(pipe, prompts, latents, num_inference_steps=1, batch_size=2)
    P.generate(pipe, prompts, latents, num_inference_steps=1, batch_size=1, progress=False)
    P.generate(pipe, prompts, latents, num_inference_steps=1, batch_size=2, progress=True)
    assert shown == [True, False, False, True]


class _FakePipe:
    """A pipeline stand-in that records which memory savers were switched on."""

    def __init__(self):
        self.calls = []
        self.vae = types.SimpleNamespace(enable_slicing=lambda: self.calls.append("vae"))

    def enable_attention_slicing(self):
        self.calls.append("attention")


@pytest.mark.parametrize("batch, gib, sliced", [
    (2, 12, False), (2, 15, False), (2, 24, False),  # the class profile: 512 px, 2 per batch, about 5.4 GiB
    (8, 12, True), (8, 15, False), (8, 24, False),  # 8 per batch: about 12 GiB
])
def test_cuda_slices_attention_only_when_the_estimate_does_not_fit(monkeypatch, batch, gib, sliced):
    props = types.SimpleNamespace(total_memory=gib * 1024 ** 3)
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda index=0: props)
    pipe = _FakePipe()
    SM.fit_memory(pipe, "cuda", 512, batch)
    assert pipe.calls == (["vae", "attention"] if sliced else ["vae"])


def test_the_sampling_estimate_adds_up_and_grows_with_the_batch():
    class_size = P.sd_sampling_bytes(512, 2)
    assert 5.0 < class_size["total"] / 1024 ** 3 < 6.0
    assert class_size["total"] == pytest.approx(sum(v for k, v in class_size.items() if k != "total"))
    assert class_size["weights"] == pytest.approx(2 * sum(P.SD14_PARAMETERS.values()))
    assert P.sd_sampling_bytes(512, 4)["attention scores"] == 2 * class_size["attention scores"]
    assert P.sd_sampling_bytes(64, 16, parameters=1e6)["total"] < 0.1 * 1024 ** 3, "the toy SD never slices"
    with pytest.raises(ValueError, match="multiple of 8"):
        P.sd_sampling_bytes(500, 2)


@pytest.mark.parametrize("device, gib, sliced", [("mps", 16, True), ("mps", 96, False), ("cpu", 16, False)])
def test_apple_gpus_under_64_gb_slice_attention(monkeypatch, device, gib, sliced):
    monkeypatch.setattr(SM, "memory_bytes", lambda: gib * 1024 ** 3)
    pipe = _FakePipe()
    SM.fit_memory(pipe, device)
    assert pipe.calls == (["vae", "attention"] if sliced else ["vae"])


def test_prompts_and_negative_prompts_are_checked_at_the_boundary(cfg, pipe):
    latents = P.fixed_latents(pipe, cfg, 2)
    settings = {"num_inference_steps": 2, "guidance_scale": 2.5}
    one = P.generate(pipe, "빨간 원", latents[:1], **settings)
    assert len(one) == 1, "one string is one prompt, not one prompt per character"
    prompts, negatives = ["왼쪽에 있는 빨간 원", "위에 있는 파란 사각형"], ["파란색", "빨간색"]
    each = P.generate(pipe, prompts, latents, negative_prompt=negatives, **settings)
    for i, prompt in enumerate(prompts):  # a list gives each prompt its own negative prompt
        gap = {n: np.abs(np.asarray(each[i], float) - np.asarray(
            P.generate(pipe, [prompt], latents[i:i + 1], negative_prompt=n, **settings)[0], float)).max()
            for n in negatives}
        assert gap[negatives[i]] <= 1 < gap[negatives[1 - i]], gap  # batched vs alone: rounding only
    with pytest.raises(ValueError, match="negative_prompt has 3 entries for 2 prompts; give one string for all"):
        P.generate(pipe, prompts, latents, negative_prompt=negatives + ["초록색"], **settings)
    with pytest.raises(TypeError, match=r"prompts\[1\] is NoneType None, not a string"):
        P.generate(pipe, ["빨간 원", None], latents, **settings)
    with pytest.raises(TypeError, match=r"negative_prompt\[0\] is int 3, not a string"):
        P.generate(pipe, prompts, latents, negative_prompt=[3, "x"], **settings)
    with pytest.raises(ValueError, match=r"latents must be a tensor of shape \(n, 4, height, width\), got \(2, 3, 8, 8\)"):
        P.generate(pipe, prompts, latents[:, :3], **settings)
    with pytest.raises(ValueError, match="batch_size must be a whole number >= 1, got 0"):
        P.generate(pipe, prompts, latents, batch_size=0, **settings)
    with pytest.raises(ValueError, match="prompts is empty"):
        P.generate(pipe, [], latents[:0], **settings)


def test_img2img_converts_images_where_the_intent_is_clear_and_refuses_the_rest(cfg, pipe):
    from PIL import Image

    i2i = P.img2img_pipeline(pipe)
    picture = kd.world.render(kd.world.Scene("circle", "red", "left", "large"))
    settings = {"strength": 0.5, "num_inference_steps": 2}
    rgb = P.img2img(i2i, ["파란 원"], [picture], **settings)[0]
    for other in (picture.convert("RGBA"), picture.convert("P"),
                  picture.resize((4 * cfg.image_size, 4 * cfg.image_size), Image.NEAREST)):
        image = P.img2img(i2i, ["파란 원"], [other], **settings)[0]
        assert image.size == rgb.size and np.abs(np.asarray(image, float) - np.asarray(rgb, float)).mean() < 8, \
            f"{other.mode} {other.size} starts from the same picture"
    both = P.img2img(i2i, ["파란 원", "파란 원"], picture, **settings)
    listed = P.img2img(i2i, ["파란 원", "파란 원"], [picture, picture], **settings)
    assert len(both) == 2 and all(np.array_equal(np.asarray(a), np.asarray(b)) for a, b in zip(both, listed)), \
        "one image serves every prompt"
    with pytest.raises(ValueError, match=r"images\[0\] is 64x32, but this pipeline makes 64x64 images; crop it"):
        P.img2img(i2i, ["파란 원"], [picture.crop((0, 0, 64, 32))], **settings)
    with pytest.raises(TypeError, match=r"images\[0\] is ndarray, not a PIL image"):
        P.img2img(i2i, ["파란 원"], [np.asarray(picture)], **settings)


def test_export_writes_only_into_a_new_or_empty_folder_and_replaces_an_export_only_when_asked(cfg, student_dir,
                                                                                              tmp_path):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "essay.txt").write_text("keep me")
    for overwrite in (False, True):
        with pytest.raises(FileExistsError, match=r"is not empty and holds no exported pipeline \(essay.txt\)"):
            P.export_pipeline(cfg, student_dir, mine, overwrite=overwrite)
    with pytest.raises(FileExistsError, match=r"holds no exported pipeline \(config.json, kdsd_meta.json"):
        P.export_pipeline(cfg, student_dir, student_dir, overwrite=True)  # not over the student itself
    (tmp_path / "empty").mkdir()
    first = P.export_pipeline(cfg, student_dir, tmp_path / "empty")
    stamp = (first / "kdsd_export.json").stat().st_mtime_ns
    with pytest.raises(FileExistsError, match="already holds an exported pipeline; replace it with --overwrite"):
        P.export_pipeline(cfg, student_dir, first)
    assert (first / "kdsd_export.json").stat().st_mtime_ns == stamp
    P.export_pipeline(cfg, student_dir, first, overwrite=True)
    assert (first / "kdsd_export.json").stat().st_mtime_ns != stamp
    assert sorted(p.name for p in tmp_path.iterdir()) == [".empty.lock", "empty", "mine"], "no leftovers"
    assert sorted(p.name for p in mine.iterdir()) == ["essay.txt"]


def test_a_damaged_student_names_the_file_and_what_to_do(cfg, student_dir, tmp_path):
    import shutil

    copy = tmp_path / "best"
    shutil.copytree(student_dir, copy)
    weights = copy / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:500])
    with pytest.raises(ValueError, match=rf"the student in {copy} cannot be loaded: a file is missing or damaged "
                                         rf".*copy the folder again"):
        P.korean_pipeline(cfg, copy)
