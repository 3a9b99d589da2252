"""The toy world's trained models: a tiny Stable Diffusion that draws captioned shapes.

The ``tiny`` profile loads these where the other profiles load hub models, with
the same ``from_pretrained`` calls:

- ``tiny/stable-diffusion``: an SD v1-style pipeline folder. Its text encoder is
  a small frozen ``CLIPTextModel`` whose tokenizer knows English words only
  (Korean falls into byte pieces, as with the real CLIP); its ``AutoencoderKL``
  and ``UNet2DConditionModel`` are trained here on the scenes of
  ``kdutils.world``, conditioned on that encoder's last hidden states, with
  the caption dropped 10% of the time so that classifier-free guidance works;
- ``tiny/clip-scorer``: a small ``CLIPModel`` trained contrastively on the same
  world. It scores images and is never the teacher.

``python -m kdutils tiny --train`` rebuilds the committed weights in
``kdutils/assets/tiny/`` with fixed seeds; ``python -m kdutils tiny --eval``
measures how well images follow their prompts with ``world.read_attributes``
(``kdutils.toyeval``, whose names this module passes on).
All numbers these models give are measurements of the toy world, not of SD v1.4.
"""

from __future__ import annotations

import json
import math
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from . import world
from .files import staging, swap_in
from .tiny import HIDDEN, MAX_LENGTH, TRAINED_DIR, build_clip_tokenizer, text_config
from .toyeval import (  # noqa: F401 (kd.toymodels.* as before: the lessons measure the models they build)
    PHRASING_LABELS, PROMPTS, attribute_accuracy, compare_phrasings, evaluate, evaluate_course, generate_for,
    reference_cmmd, true_renders,
)

ASSETS = TRAINED_DIR
EMPTY_CAPTION_RATE = 0.1  # how often the UNet trains on "" (what classifier-free guidance feeds it)


@dataclass(frozen=True)
class Recipe:
    """Sizes and step counts of one build; ``quick()`` is the few-step version tests run."""

    images: int = 6000
    vae_steps: int = 1000
    vae_batch: int = 16
    vae_lr: float = 2e-3
    decoder_steps: int = 600
    decoder_lr: float = 5e-4
    unet_steps: int = 1800
    unet_batch: int = 32
    unet_lr: float = 6e-4
    ema_decay: float = 0.999
    scorer_steps: int = 400
    scorer_batch: int = 64
    scorer_lr: float = 1e-3
    seed: int = 0
    # 2 threads on an idle 2-core machine; use 1 when other work shares it (two threads then stall at every op)
    threads: int = 2

    @classmethod
    def quick(cls) -> "Recipe":
        """A few steps of everything, for tests: one thread, which a few small steps do not stall on a busy machine."""
        return cls(images=64, vae_steps=2, vae_batch=8, decoder_steps=2, unet_steps=2, unet_batch=8, scorer_steps=2,
                   scorer_batch=8, threads=1)


def recipe_from(cls, settings: list[tuple[str, str]]):
    """``cls`` (``Recipe`` or ``PretrainRecipe``) with ``(field, text)`` settings from the command line, typed
    like each field's default; an unknown field or a value of the wrong type raises ``ValueError`` naming it."""
    from dataclasses import fields

    defaults = cls()
    known = [f.name for f in fields(cls)]
    values = {}
    for name, text in settings:
        if name not in known:
            raise ValueError(f"{cls.__name__} has no setting {name!r}; it has {', '.join(known)}")
        kind = type(getattr(defaults, name))
        try:
            values[name] = kind(text)
        except ValueError:
            article = "an" if kind.__name__[0] in "aeiou" else "a"
            raise ValueError(f"{cls.__name__}.{name} takes {article} {kind.__name__} (default "
                             f"{getattr(defaults, name)}), not {text!r}") from None
        if values[name] <= 0 and name != "seed":
            raise ValueError(f"{cls.__name__}.{name} must be positive, not {text!r}")
    return cls(**values)


# ------------------------------------------------------------------ the teacher
def teacher_tokenizer():
    """CLIP BPE whose merges are learned from the course's English and the world's captions.

    Every word a world caption uses becomes one token; Korean still falls into
    byte pieces, as with the real CLIP vocabulary.
    """
    captions = [text for scene in world.all_scenes() for text in world.every_caption(scene, "en")]
    return build_clip_tokenizer(extra_texts=captions)


def teacher_encoder(tokenizer, seed: int = 0):
    """A random, frozen CLIP text encoder whose every position carries its own word.

    Trained CLIP text encoders keep each word recognisable at its position.
    With default initialisation the tiny token embeddings vanish next to the
    random MLPs, so the embeddings are scaled to unit size per coordinate and
    the MLPs weakened; attention keeps its default scale, so each position
    mixes in a little of the words before it while its own word dominates.
    Different colour words then differ at their position (``word_separation``
    about 0.3, below 0.5); a ten times stronger value path blurs them into the
    running average (above 0.8), which is what made the first prototype's
    UNet confuse colours. Query and key weights are not zeroed: a copy of this
    encoder (experiment 1's student) could then never learn to attend, since
    each of their gradients is proportional to the other.
    """
    from transformers import CLIPTextModel

    torch.manual_seed(seed)
    encoder = CLIPTextModel(text_config(tokenizer))
    with torch.no_grad():
        encoder.embeddings.token_embedding.weight.mul_(50.0)
        for layer in encoder.encoder.layers:
            layer.mlp.fc2.weight.mul_(0.3)
    return encoder.requires_grad_(False).eval()


@torch.no_grad()
def word_separation(encoder, tokenizer, words=world.COLOURS, template: str = "a {} circle on the left") -> float:
    """Largest cosine between the encoder's outputs for different ``words`` at the word's position."""
    batch = tokenizer([template.format(w) for w in words], padding="max_length", max_length=MAX_LENGTH,
                      return_tensors="pt")
    position = len(tokenizer(template.split("{}")[0].strip())["input_ids"]) - 1  # after <bos> and the prefix
    hidden = F.normalize(encoder(batch.input_ids)[0][:, position], dim=-1)
    cosine = hidden @ hidden.T
    return float(cosine[~torch.eye(len(words), dtype=torch.bool)].max())


@torch.no_grad()
def encode_captions(encoder, tokenizer, captions: list[str]) -> torch.Tensor:
    ids = tokenizer(captions, padding="max_length", max_length=MAX_LENGTH, truncation=True,
                    return_tensors="pt").input_ids
    return encoder(ids.to(encoder.device))[0]  # on the encoder's device: lesson 11 runs on a GPU in class


# ------------------------------------------------------------------ data
def render_dataset(n: int, seed: int) -> tuple[torch.Tensor, list]:
    """``n`` jittered renders of random scenes as a uint8 tensor ``(n, 3, 64, 64)``, and their scenes."""
    rng = np.random.default_rng(seed)
    scenes = world.sample_scenes(n, seed, held_out=True)  # the image model sees every combination
    pixels = np.stack([np.asarray(world.render(scene, rng)) for scene in scenes])
    return torch.from_numpy(pixels).permute(0, 3, 1, 2).contiguous(), scenes


def to_unit(pixels: torch.Tensor) -> torch.Tensor:
    """uint8 pixels to floats in [-1, 1], the range the SD VAE works in."""
    return pixels.float() / 127.5 - 1.0


def to_images(batch: torch.Tensor) -> list:
    """Floats in [-1, 1] back to PIL images."""
    from PIL import Image

    array = ((batch.clamp(-1, 1) + 1) * 127.5).round().byte().permute(0, 2, 3, 1).numpy()
    return [Image.fromarray(a) for a in array]


def _cosine_lr(optimizer, step: int, total: int, base: float, warmup: int = 50) -> None:
    scale = (step + 1) / warmup if step < warmup else 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, total - warmup)))
    for group in optimizer.param_groups:
        group["lr"] = base * scale


def _bar(total: int, desc: str, progress: bool):
    from tqdm.auto import tqdm

    return tqdm(range(total), desc=desc, disable=not progress, unit="step")


# ------------------------------------------------------------------ VAE
def new_vae():
    from diffusers import AutoencoderKL

    return AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=4, sample_size=world.IMAGE_SIZE,
        block_out_channels=(16, 32, 64, 64), layers_per_block=1, norm_num_groups=16,
        down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
    )


def shape_weighted_error(recon: torch.Tensor, x: torch.Tensor, weight: float = 10.0) -> torch.Tensor:
    """Squared error with the shape's pixels counted ``weight`` times.

    The shape covers a small part of the picture and red, orange and yellow are close in RGB, so a plain
    pixel loss lets the autoencoder pull them towards orange; the picture's meaning is in those pixels.
    """
    border = torch.cat([x[..., 0, :], x[..., -1, :], x[..., :, 0], x[..., :, -1]], dim=-1).median(dim=-1).values
    shape = ((x - border[..., None, None]).abs().sum(1, keepdim=True) > 0.3).float()
    return ((1 + (weight - 1) * shape) * (recon - x) ** 2).mean()


def train_vae(pixels: torch.Tensor, recipe: Recipe, progress: bool = True):
    """An ``AutoencoderKL`` (64 px <-> 8x8x4) trained on shape-weighted reconstruction with a tiny KL term."""
    torch.manual_seed(recipe.seed + 1)
    vae = new_vae().train()
    optimizer = torch.optim.AdamW(vae.parameters(), lr=recipe.vae_lr, weight_decay=0.0)
    generator = torch.Generator().manual_seed(recipe.seed + 11)
    bar = _bar(recipe.vae_steps, "VAE", progress)
    for step in bar:
        _cosine_lr(optimizer, step, recipe.vae_steps, recipe.vae_lr)
        x = to_unit(pixels[torch.randint(len(pixels), (recipe.vae_batch,), generator=generator)])
        posterior = vae.encode(x).latent_dist
        recon = vae.decode(posterior.sample(generator)).sample
        loss = shape_weighted_error(recon, x) + 0.5 * F.l1_loss(recon, x) + 1e-6 * posterior.kl().mean()
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if step % 50 == 0:
            bar.set_postfix(loss=f"{loss.item():.4f}")
    vae.eval().requires_grad_(False)
    with torch.no_grad():  # SD scales latents to unit variance; its scaling_factor 0.18215 was found the same way
        latents = torch.cat([vae.encode(to_unit(pixels[i:i + 256])).latent_dist.mean for i in range(0, len(pixels), 256)])
    vae.register_to_config(scaling_factor=float(1.0 / latents.std()))
    return vae


def finetune_decoder(vae, pixels: torch.Tensor, recipe: Recipe, progress: bool = True):
    """Polish the VAE's decoder alone on the shape-weighted error (SD's own VAE got a decoder-only fine-tune too).

    The encoder, and so the latents the UNet learns on and the scaling factor, stay exactly as they are.
    """
    vae.requires_grad_(False)
    parts = [vae.decoder, vae.post_quant_conv]
    for part in parts:
        part.requires_grad_(True).train()
    params = [p for part in parts for p in part.parameters()]
    optimizer = torch.optim.AdamW(params, lr=recipe.decoder_lr, weight_decay=0.0)
    generator = torch.Generator().manual_seed(recipe.seed + 14)
    bar = _bar(recipe.decoder_steps, "VAE decoder", progress)
    for step in bar:
        _cosine_lr(optimizer, step, recipe.decoder_steps, recipe.decoder_lr)
        x = to_unit(pixels[torch.randint(len(pixels), (recipe.vae_batch,), generator=generator)])
        with torch.no_grad():
            z = vae.encode(x).latent_dist.sample(generator)
        loss = shape_weighted_error(vae.decode(z).sample, x)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if step % 50 == 0:
            bar.set_postfix(loss=f"{loss.item():.4f}")
    return vae.eval().requires_grad_(False)


@torch.no_grad()
def reconstructions(vae, pixels: torch.Tensor) -> list:
    return to_images(torch.cat([vae.decode(vae.encode(to_unit(pixels[i:i + 128])).latent_dist.mean).sample
                                for i in range(0, len(pixels), 128)]))


# ------------------------------------------------------------------ UNet
def new_unet():
    from diffusers import UNet2DConditionModel

    return UNet2DConditionModel(
        sample_size=world.IMAGE_SIZE // 8, in_channels=4, out_channels=4, layers_per_block=1,
        block_out_channels=(64, 128), down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D"), cross_attention_dim=HIDDEN,
        attention_head_dim=8, norm_num_groups=32,
    )


def sd_scheduler_config() -> dict:
    """SD v1.4's noise schedule (scaled linear betas 0.00085 -> 0.012 over 1000 steps)."""
    return dict(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", num_train_timesteps=1000)


def sd_pndm_scheduler():
    """The pipeline's scheduler, configured as SD v1.4's: PNDM, and ``clip_sample: false`` in its config,
    which PNDM ignores but a DDIM or DDPM scheduler made ``from_config`` reads (clipping is for pixels, not latents)."""
    from diffusers import PNDMScheduler

    scheduler = PNDMScheduler(**sd_scheduler_config(), skip_prk_steps=True, steps_offset=1, set_alpha_to_one=False)
    scheduler.register_to_config(clip_sample=False)
    return scheduler


def drop_captions(context: torch.Tensor, empty: torch.Tensor, generator, rate: float = EMPTY_CAPTION_RATE) -> torch.Tensor:
    """``context`` with each caption's hidden states replaced by the empty prompt's with probability ``rate``:
    the UNet learns to draw without text too, which classifier-free guidance needs."""
    drop = torch.rand(len(context), generator=generator) < rate  # drawn on the CPU, so every device draws the same
    return torch.where(drop[:, None, None].to(context.device), empty.to(context), context)


def denoising_loss(unet, noise_schedule, latents: torch.Tensor, context: torch.Tensor, noise: torch.Tensor,
                   timesteps: torch.Tensor) -> torch.Tensor:
    """SD's training objective: noise ``latents`` to ``timesteps``, predict that noise from the noisy latents and the
    text's hidden states, and take the mean squared error."""
    noisy = noise_schedule.add_noise(latents, noise, timesteps)
    return F.mse_loss(unet(noisy, timesteps, context).sample, noise)


def train_unet(vae, encoder, tokenizer, pixels: torch.Tensor, scenes: list, recipe: Recipe, progress: bool = True):
    """A ``UNet2DConditionModel`` trained to predict the noise (epsilon) of SD's schedule.

    Conditioned on the frozen teacher's last hidden states of a random English
    caption of each image, or of ``""`` with probability ``EMPTY_CAPTION_RATE``.
    Returns the exponential moving average of the weights, as SD's training does.
    """
    from diffusers import DDPMScheduler

    with torch.no_grad():
        moments = torch.cat([vae.encode(to_unit(pixels[i:i + 256])).latent_dist.parameters
                             for i in range(0, len(pixels), 256)])
    mean, logvar = moments.chunk(2, dim=1)
    std = torch.exp(0.5 * logvar.clamp(-30, 20))
    scale = vae.config.scaling_factor
    noise_schedule = DDPMScheduler(**sd_scheduler_config())
    torch.manual_seed(recipe.seed + 2)
    unet = new_unet().train()
    ema = new_unet().eval().requires_grad_(False)
    ema.load_state_dict(unet.state_dict())
    optimizer = torch.optim.AdamW(unet.parameters(), lr=recipe.unet_lr, weight_decay=1e-4)
    generator = torch.Generator().manual_seed(recipe.seed + 12)
    rng = np.random.default_rng(recipe.seed + 22)
    empty = encode_captions(encoder, tokenizer, [""])
    bar = _bar(recipe.unet_steps, "UNet", progress)
    for step in bar:
        _cosine_lr(optimizer, step, recipe.unet_steps, recipe.unet_lr, warmup=100)
        idx = torch.randint(len(pixels), (recipe.unet_batch,), generator=generator)
        latents = (mean[idx] + std[idx] * torch.randn(mean[idx].shape, generator=generator)) * scale
        captions = [world.caption_en(scenes[i], rng) for i in idx.tolist()]
        context = drop_captions(encode_captions(encoder, tokenizer, captions), empty, generator)
        noise = torch.randn(latents.shape, generator=generator)
        t = torch.randint(0, noise_schedule.config.num_train_timesteps, (len(idx),), generator=generator)
        loss = denoising_loss(unet, noise_schedule, latents, context, noise, t)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(unet.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        decay = min(recipe.ema_decay, (1 + step) / (10 + step))
        with torch.no_grad():
            for e, p in zip(ema.parameters(), unet.parameters()):
                e.lerp_(p, 1 - decay)
        if step % 50 == 0:
            bar.set_postfix(loss=f"{loss.item():.4f}")
    return ema


# ------------------------------------------------------------------ scorer
def train_scorer(tokenizer, pixels: torch.Tensor, scenes: list, recipe: Recipe, progress: bool = True):
    """A small ``CLIPModel`` trained contrastively on renders and their English captions."""
    from transformers import CLIPConfig, CLIPModel, CLIPVisionConfig

    vision = CLIPVisionConfig(hidden_size=HIDDEN, intermediate_size=4 * HIDDEN, num_hidden_layers=2,
                              num_attention_heads=4, image_size=world.IMAGE_SIZE, patch_size=8, projection_dim=HIDDEN)
    config = CLIPConfig(text_config=text_config(tokenizer).to_dict(), vision_config=vision.to_dict(),
                        projection_dim=HIDDEN)
    torch.manual_seed(recipe.seed + 3)
    model = CLIPModel(config).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=recipe.scorer_lr, weight_decay=1e-4)
    generator = torch.Generator().manual_seed(recipe.seed + 13)
    rng = np.random.default_rng(recipe.seed + 23)
    mean, std = torch.tensor(SCORER_MEAN).view(1, 3, 1, 1), torch.tensor(SCORER_STD).view(1, 3, 1, 1)
    bar = _bar(recipe.scorer_steps, "scorer", progress)
    for step in bar:
        _cosine_lr(optimizer, step, recipe.scorer_steps, recipe.scorer_lr)
        idx = torch.randint(len(pixels), (recipe.scorer_batch,), generator=generator)
        images = (pixels[idx].float() / 255 - mean) / std
        captions = [world.caption_en(scenes[i], rng) for i in idx.tolist()]
        text = tokenizer(captions, padding=True, return_tensors="pt")
        out = model(input_ids=text.input_ids, attention_mask=text.attention_mask, pixel_values=images)
        # two captions of the same scene are both right: count every matching scene as a positive
        same = torch.tensor([[scenes[i] == scenes[j] for j in idx.tolist()] for i in idx.tolist()], dtype=torch.float)
        target = same / same.sum(1, keepdim=True)
        loss = 0.5 * (-(target * out.logits_per_image.log_softmax(1)).sum(1).mean()
                      - (target * out.logits_per_text.log_softmax(1)).sum(1).mean())
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if step % 50 == 0:
            bar.set_postfix(loss=f"{loss.item():.3f}")
    return model.eval()


SCORER_MEAN = (0.5, 0.5, 0.5)
SCORER_STD = (0.5, 0.5, 0.5)


# ------------------------------------------------------------------ build
def build(output: str | Path = ASSETS, recipe: Recipe = Recipe(), progress: bool = True,
          student_recipe: "PretrainRecipe | None" = None) -> dict:
    """Train every toy-world model (SD, scorer, pretrained student) in hub layout under ``output``; returns a build report."""
    started = time.perf_counter()
    output = Path(output)
    threads = torch.get_num_threads()
    torch.set_num_threads(recipe.threads)
    student_recipe = student_recipe or PretrainRecipe(threads=recipe.threads)
    try:
        return _build(output, recipe, progress, started, student_recipe)
    finally:
        torch.set_num_threads(threads)


def _build(output: Path, recipe: Recipe, progress: bool, started: float, student_recipe) -> dict:
    from diffusers import StableDiffusionPipeline
    from transformers import CLIPImageProcessor, CLIPProcessor

    report: dict = {"recipe": asdict(recipe), "torch": torch.__version__, "threads": torch.get_num_threads()}
    tokenizer = teacher_tokenizer()
    encoder = teacher_encoder(tokenizer, recipe.seed)
    report["teacher_colour_word_cosine"] = word_separation(encoder, tokenizer)
    report["teacher_words_one_token"] = all(len(tokenizer.tokenize(w)) == 1 for w in world.english_vocabulary())
    pixels, scenes = render_dataset(recipe.images, recipe.seed)

    t = time.perf_counter()
    stage = output / ".stage-vae"  # a trained VAE survives a failed or retried UNet run of the same recipe
    vae_recipe = {k: v for k, v in asdict(recipe).items() if k.startswith(("vae_", "decoder_")) or k in ("images", "seed")}
    saved = json.loads((stage / "recipe.json").read_text()) if (stage / "recipe.json").exists() else None
    if saved is not None and {k: saved.get(k) for k in vae_recipe} == vae_recipe:
        from diffusers import AutoencoderKL

        vae = AutoencoderKL.from_pretrained(str(stage)).eval().requires_grad_(False)
    else:
        vae = finetune_decoder(train_vae(pixels, recipe, progress), pixels, recipe, progress)
        vae.save_pretrained(str(stage))
        (stage / "recipe.json").write_text(json.dumps(asdict(recipe)))
    report["vae_seconds"] = round(time.perf_counter() - t, 1)
    check, check_scenes = render_dataset(min(300, recipe.images), recipe.seed + 100)
    report["vae_reconstruction_accuracy"] = attribute_accuracy(reconstructions(vae, check), check_scenes)

    t = time.perf_counter()
    unet = train_unet(vae, encoder, tokenizer, pixels, scenes, recipe, progress)
    report["unet_seconds"] = round(time.perf_counter() - t, 1)

    t = time.perf_counter()
    scorer = train_scorer(tokenizer, pixels, scenes, recipe, progress)
    report["scorer_seconds"] = round(time.perf_counter() - t, 1)

    pipe = StableDiffusionPipeline(
        vae=vae, text_encoder=encoder, tokenizer=tokenizer, unet=unet,
        scheduler=sd_pndm_scheduler(),
        safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    )
    for folder in (output / "stable-diffusion", output / "clip-scorer"):
        shutil.rmtree(folder, ignore_errors=True)
    pipe.save_pretrained(str(output / "stable-diffusion"))
    scorer.save_pretrained(str(output / "clip-scorer"))
    processor = CLIPImageProcessor(size={"shortest_edge": world.IMAGE_SIZE}, do_center_crop=False,
                                   image_mean=list(SCORER_MEAN), image_std=list(SCORER_STD))
    CLIPProcessor(image_processor=processor, tokenizer=tokenizer).save_pretrained(str(output / "clip-scorer"))
    t = time.perf_counter()
    report["student"] = pretrain_student(output / "roberta-small", student_recipe, progress)
    report["student_seconds"] = round(time.perf_counter() - t, 1)
    report["seconds"] = round(time.perf_counter() - started, 1)
    (output / "build.json").write_text(json.dumps(report, indent=2) + "\n")
    for folder in (output / "stable-diffusion", output / "clip-scorer"):
        (folder / "DONE").write_text("toy world\n")  # what kdutils.resolve checks
    shutil.rmtree(stage, ignore_errors=True)
    return report


# ------------------------------------------------------------------ the student's pretraining
@dataclass(frozen=True)
class PretrainRecipe:
    """Masked-language-model pretraining of the toy world's ``klue/roberta-small``; ``quick()`` is for tests."""

    sentences: int = 40_000  # generated lines about the world, before the bundled corpus's Korean
    steps: int = 10_000
    batch: int = 128
    lr: float = 2e-3
    mask_rate: float = 0.15  # BERT's: of these, 80% become [MASK], 10% a random token, 10% stay
    seed: int = 0
    threads: int = 2

    @classmethod
    def quick(cls) -> "PretrainRecipe":
        return cls(sentences=300, steps=3, batch=8, threads=1)


def mask_tokens(ids: torch.Tensor, special: torch.Tensor, tokenizer, rate: float, generator) -> tuple:
    """BERT's masking: ``(inputs, labels)`` with ``rate`` of the ordinary tokens to predict (labels -100 elsewhere)."""
    chosen = (torch.rand(ids.shape, generator=generator) < rate) & ~special
    labels = torch.where(chosen, ids, torch.full_like(ids, -100))
    roll = torch.rand(ids.shape, generator=generator)
    inputs = torch.where(chosen & (roll < 0.8), torch.full_like(ids, tokenizer.mask_token_id), ids)
    first = len(tokenizer.all_special_ids)  # the specials come first in the vocabulary, ordinary pieces after
    random_ids = torch.randint(first, len(tokenizer), ids.shape, generator=generator)
    return torch.where(chosen & (roll >= 0.9), random_ids, inputs), labels


def _masked_lm_steps(model, tokenizer, encoded: list[list[int]], recipe: PretrainRecipe, progress: bool) -> list[float]:
    """``recipe.steps`` masked-LM steps on random batches of ``encoded`` sentences; the losses."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=recipe.lr, weight_decay=1e-4)
    generator = torch.Generator().manual_seed(recipe.seed + 15)
    losses = []
    bar = _bar(recipe.steps, "pretraining (masked LM)", progress)
    for step in bar:
        _cosine_lr(optimizer, step, recipe.steps, recipe.lr, warmup=min(200, recipe.steps // 10 + 1))
        rows = [encoded[i] for i in torch.randint(len(encoded), (recipe.batch,), generator=generator).tolist()]
        width = max(map(len, rows))
        ids = torch.tensor([r + [tokenizer.pad_token_id] * (width - len(r)) for r in rows])
        mask = ids != tokenizer.pad_token_id
        special = ~mask | (ids == tokenizer.cls_token_id) | (ids == tokenizer.sep_token_id)
        inputs, labels = mask_tokens(ids, special, tokenizer, recipe.mask_rate, generator)
        hidden = model.roberta(input_ids=inputs, attention_mask=mask.long())[0]
        chosen = labels != -100  # the vocabulary-wide head only where a token is to be predicted: 7x less work
        loss = F.cross_entropy(model.lm_head(hidden[chosen]), labels[chosen])
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(loss.item())
        if step % 50 == 0:
            bar.set_postfix(loss=f"{loss.item():.3f}")
    return losses


def pretrain_student(output: str | Path = ASSETS / "roberta-small", recipe: PretrainRecipe = PretrainRecipe(),
                     progress: bool = True) -> dict:
    """Learn a WordPiece vocabulary from the Korean corpus and pretrain the tiny RoBERTa on it (masked LM).

    Saves a ``RobertaModel`` (the encoder without its MLM head, as the students load it) and the tokenizer
    under ``output``, with ``pretraining.json``; the pooler keeps its fixed-seed initialisation, as
    masked-language modelling does not train it.
    """
    from transformers import RobertaForMaskedLM

    from .tiny import blank_student, build_student_tokenizer, korean_corpus, student_config

    started = time.perf_counter()
    output = Path(output)
    threads = torch.get_num_threads()
    torch.set_num_threads(recipe.threads)
    try:
        corpus = korean_corpus(recipe.sentences, recipe.seed)
        final, output = output, staging(output)  # written beside it, swapped in when complete: an interrupted run
        tokenizer = build_student_tokenizer(output, corpus)  # leaves the student that was there
        encoded = tokenizer(corpus, truncation=True, max_length=MAX_LENGTH)["input_ids"]
        torch.manual_seed(recipe.seed + 4)
        model = RobertaForMaskedLM(student_config(tokenizer)).train()
        model.roberta.load_state_dict(blank_student(tokenizer).state_dict(), strict=False)  # the blank student's start
        losses = _masked_lm_steps(model, tokenizer, encoded, recipe, progress)
        encoder = blank_student(tokenizer)
        missing = encoder.load_state_dict(model.roberta.state_dict(), strict=False).missing_keys
        assert all(key.startswith("pooler.") for key in missing), missing
        encoder.save_pretrained(str(output))
        tokenizer.save_pretrained(str(output))
        tail = losses[-min(100, len(losses)):]
        report = {"recipe": asdict(recipe), "torch": torch.__version__, "threads": torch.get_num_threads(),
                  "corpus_sentences": len(corpus), "corpus_tokens": sum(map(len, encoded)), "vocab_size": len(tokenizer),
                  "mlm_loss_first_100": round(float(np.mean(losses[:100])), 3), "mlm_loss_last_100": round(float(np.mean(tail)), 3),
                  "seconds": round(time.perf_counter() - started, 1)}
        (output / "pretraining.json").write_text(json.dumps(report, indent=2) + "\n")
        (output / "DONE").write_text("toy world\n")
        swap_in(final)
        return report
    finally:
        torch.set_num_threads(threads)
