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
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from . import world
from .pretrain import PretrainRecipe, mask_tokens, pretrain_student  # noqa: F401 (kd.toymodels.* as before)
from .tiny import HIDDEN, TRAINED_DIR
from .toyeval import (  # noqa: F401 (kd.toymodels.* as before: the lessons measure the models they build)
    PHRASING_LABELS, PROMPTS, attribute_accuracy, compare_phrasings, evaluate, evaluate_course, generate_for,
    reference_cmmd, true_renders,
)
from .toyteacher import (  # noqa: F401 (kd.toymodels.* as before: lesson 11 encodes captions with the teacher)
    SCORER_MEAN, SCORER_STD, encode_captions, teacher_encoder, teacher_tokenizer, train_scorer, word_separation,
)
from .toyvae import (  # noqa: F401 (kd.toymodels.* as before)
    AVERAGE_COLOUR, finetune_decoder, new_vae, reconstructions, shape_pixels, shape_weighted_error, stretch_error,
    to_images, to_unit, train_vae,
)
from .trainloop import train_steps

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
    vae_linear: float = 1.0  # weight of the linear colour preview (SD's latent is close to a linear map of RGB; 0: off)
    vae_stretch: float = 3.0  # the decoder learns colours pushed up to this far past the average colour (1: off)
    vae_stretch_weight: float = 0.5
    unet_steps: int = 1800
    unet_batch: int = 32
    unet_lr: float = 6e-4
    ema_decay: float = 0.999
    # weight of the grounding term: the colour and shape words' cross-attention pulled onto the shape (0: off)
    unet_grounding: float = 0.01
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
        if values[name] < 0 or values[name] == 0 and name not in ("seed", "vae_linear", "unet_grounding"):
            raise ValueError(f"{cls.__name__}.{name} must be positive, not {text!r}")
    return cls(**values)


# ------------------------------------------------------------------ data
def render_dataset(n: int, seed: int) -> tuple[torch.Tensor, list]:
    """``n`` jittered renders of random scenes as a uint8 tensor ``(n, 3, 64, 64)``, and their scenes."""
    rng = np.random.default_rng(seed)
    scenes = world.sample_scenes(n, seed, held_out=True)  # the image model sees every combination
    pixels = np.stack([np.asarray(world.render(scene, rng)) for scene in scenes])
    return torch.from_numpy(pixels).permute(0, 3, 1, 2).contiguous(), scenes


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


def toy_scheduler():
    """The toy pipeline's scheduler: DPM-Solver++ (2nd order, multistep) with Karras sigmas, on SD v1.4's schedule.

    SD v1.4 ships PNDM. With PNDM the toy SD lost colours at high guidance (teacher English on held-out
    combinations: colour 0.58 at 7.5); DPM-Solver++ keeps 0.96 from 2 to 7.5 with the same weights. High-order
    solvers such as PNDM become unstable under large guidance; DPM-Solver++ was designed for guided sampling
    (Lu et al. 2022, arXiv:2211.01095). ``kd.pipeline.set_scheduler(pipe, "PNDM (SD v1.4 default)")`` puts PNDM
    back: the config keeps PNDM's settings.
    """
    from diffusers import DPMSolverMultistepScheduler

    return DPMSolverMultistepScheduler.from_config(sd_pndm_scheduler().config, algorithm_type="dpmsolver++",
                                                   solver_order=2, use_karras_sigmas=True)


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


# ------------------------------------------------------------------ grounding
GROUNDED = ("colour", "shape")  # the scene's words whose cross-attention the build pulls onto the shape


class AttentionWeights:
    """A cross-attention processor written out that keeps each call's weights in ``self.weights``:
    the mean of the heads, ``(batch, pixels, tokens)``, with their gradients (the grounding term reads them).
    Lesson 00 writes the same computation by hand to draw the maps; this one keeps them for training."""

    def __init__(self):
        self.weights: list[torch.Tensor] = []

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, **kwargs):
        query, key, value = (attn.to_q(hidden_states), attn.to_k(encoder_hidden_states),
                             attn.to_v(encoder_hidden_states))
        batch, pixels, inner = query.shape
        head = inner // attn.heads
        query, key, value = (x.view(batch, -1, attn.heads, head).transpose(1, 2) for x in (query, key, value))
        weights = (query @ key.transpose(-1, -2) * attn.scale).softmax(dim=-1)
        self.weights.append(weights.mean(dim=1))
        out = (weights @ value).transpose(1, 2).reshape(batch, pixels, inner)
        return attn.to_out[1](attn.to_out[0](out))


def probe_cross_attention(unet) -> AttentionWeights:
    """Put one ``AttentionWeights`` in every cross-attention layer (``attn2``) of ``unet`` and return it."""
    probe = AttentionWeights()
    unet.set_attn_processor({name: probe if name.endswith("attn2.processor") else processor
                             for name, processor in unet.attn_processors.items()})
    return probe


def shape_shares(pixels: torch.Tensor, sides=(8, 4)) -> dict[int, torch.Tensor]:
    """For each attention grid side, the share of each cell the shape covers: ``{side: (n, side * side)}``."""
    shares: dict[int, list] = {side: [] for side in sides}
    for i in range(0, len(pixels), 500):
        mask = shape_pixels(to_unit(pixels[i:i + 500]))
        for side in sides:
            shares[side].append(F.adaptive_avg_pool2d(mask, side).flatten(1))
    return {side: torch.cat(parts) for side, parts in shares.items()}


def word_positions(tokenizer, captions: list[str], words: list[str]) -> torch.Tensor:
    """Where ``words[i]`` sits in ``captions[i]`` under the teacher's tokenizer (each world word is one token)."""
    ids = tokenizer(captions, padding="max_length", max_length=tokenizer.model_max_length, truncation=True,
                    return_tensors="pt").input_ids
    wanted = torch.tensor(tokenizer.convert_tokens_to_ids([word + "</w>" for word in words]))
    found = ids == wanted[:, None]
    if not found.any(dim=1).all():
        missing = [w for w, hit in zip(words, found.any(dim=1).tolist()) if not hit]
        raise ValueError(f"the words {missing} are not single tokens of their captions")
    return found.float().argmax(dim=1)


def grounding_loss(weights: list[torch.Tensor], shares: dict[int, torch.Tensor], positions: list[torch.Tensor],
                   keep: torch.Tensor) -> torch.Tensor:
    """The token term of TokenCompose (Wang et al. 2024, arXiv:2312.03626): for each word at ``positions``, one
    minus the share of its cross-attention weight that falls on the shape, squared. The mean over the layers'
    ``weights``, the words and the captions in ``keep`` (a dropped caption names nothing)."""
    terms = []
    for layer in weights:
        on_shape = shares[int(layer.shape[1] ** 0.5)].to(layer)
        rows = torch.arange(len(keep), device=layer.device)
        for where in positions:
            word = layer[rows, :, where.to(layer.device)]  # (batch, pixels): where each caption's word is read
            terms.append(((1 - (word * on_shape).sum(1) / word.sum(1)) ** 2)[keep.to(layer.device)])
    return torch.cat(terms).mean() if keep.any() else weights[0].sum() * 0


def train_unet(vae, encoder, tokenizer, pixels: torch.Tensor, scenes: list, recipe: Recipe, progress: bool = True):
    """A ``UNet2DConditionModel`` trained to predict the noise (epsilon) of SD's schedule.

    Conditioned on the frozen teacher's last hidden states of a random English
    caption of each image, or of ``""`` with probability ``EMPTY_CAPTION_RATE``.
    With ``recipe.unet_grounding`` the loss adds that times ``grounding_loss`` for the colour and shape words:
    without it the toy UNet read every word evenly over its 8 x 8 cells (lesson 00), where SD v1.4's
    word maps gather on their objects. Returns the exponential moving average of the weights, as SD's training does.
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
    generator = torch.Generator().manual_seed(recipe.seed + 12)
    rng = np.random.default_rng(recipe.seed + 22)
    empty = encode_captions(encoder, tokenizer, [""])
    shares = shape_shares(pixels) if recipe.unet_grounding else {}
    probe = probe_cross_attention(unet) if recipe.unet_grounding else None

    def loss_at(step):
        idx = torch.randint(len(pixels), (recipe.unet_batch,), generator=generator)
        latents = (mean[idx] + std[idx] * torch.randn(mean[idx].shape, generator=generator)) * scale
        captions = [world.caption_en(scenes[i], rng) for i in idx.tolist()]
        context = drop_captions(encode_captions(encoder, tokenizer, captions), empty, generator)
        noise = torch.randn(latents.shape, generator=generator)
        t = torch.randint(0, noise_schedule.config.num_train_timesteps, (len(idx),), generator=generator)
        loss = denoising_loss(unet, noise_schedule, latents, context, noise, t)
        if probe is None:
            return loss
        weights, probe.weights = probe.weights, []  # this forward's layers; the next step records afresh
        kept = ~(context == empty).flatten(1).all(dim=1)  # drop_captions copies "" exactly
        positions = [word_positions(tokenizer, captions, [getattr(scenes[i], attribute) for i in idx.tolist()])
                     for attribute in GROUNDED]
        grounding = grounding_loss(weights, {side: v[idx] for side, v in shares.items()}, positions, kept)
        return loss + recipe.unet_grounding * grounding

    # The moving average with the decay warmup of diffusers' EMAModel (use_ema_warmup=False), kept by hand:
    # EMAModel's first update copies the weights (decay 0, here 0.1) and it updates with sub_ rather than
    # lerp_, so switching would change the committed weights that the build reproduces bit for bit.
    @torch.no_grad()
    def average(step):
        decay = min(recipe.ema_decay, (1 + step) / (10 + step))
        for e, p in zip(ema.parameters(), unet.parameters()):
            e.lerp_(p, 1 - decay)

    train_steps(unet.parameters(), recipe.unet_steps, recipe.unet_lr, loss_at, "UNet", progress, weight_decay=1e-4,
                warmup=100, clip=1.0, after_step=average)
    return ema



# ------------------------------------------------------------------ build
def _student(folder: Path, recipe: PretrainRecipe, progress: bool, keep: bool) -> dict:
    """The pretrained student's report: kept from ``folder`` when ``keep`` and its recipe is ``recipe``, else trained."""
    done = folder / "pretraining.json"
    if keep and (folder / "DONE").exists() and done.exists():
        report = json.loads(done.read_text())
        if report.get("recipe") == asdict(recipe):
            return {**report, "kept": True}
    return pretrain_student(folder, recipe, progress)


def _kept_vae_report(output: Path, vae_recipe: dict) -> "dict | None":
    """The report of the finished build under ``output`` if its VAE was trained with ``vae_recipe``, else None."""
    report = output / "build.json"
    if not ((output / "stable-diffusion" / "DONE").exists() and report.exists()):
        return None
    built = json.loads(report.read_text())
    return built if {k: built["recipe"].get(k) for k in vae_recipe} == vae_recipe else None


def build(output: str | Path = ASSETS, recipe: Recipe = Recipe(), progress: bool = True,
          student_recipe: "PretrainRecipe | None" = None, keep_student: bool = False, keep_vae: bool = False) -> dict:
    """Train every toy-world model (SD, scorer, pretrained student) in hub layout under ``output``; returns a build report.

    ``keep_student`` keeps a finished student under ``output`` that was pretrained with the same recipe: its
    pretraining reads no SD model, so a rebuild of the SD need not spend its minutes again. ``keep_vae`` keeps
    the VAE of the SD under ``output`` when that build's report has the same VAE recipe: the UNet trains on a
    frozen VAE, so a UNet-only change need not retrain it (the report marks it ``vae_kept``).
    """
    started = time.perf_counter()
    output = Path(output)
    threads = torch.get_num_threads()
    torch.set_num_threads(recipe.threads)
    student_recipe = student_recipe or PretrainRecipe(threads=recipe.threads)
    try:
        return _build(output, recipe, progress, started, student_recipe, keep_student, keep_vae)
    finally:
        torch.set_num_threads(threads)


def _build(output: Path, recipe: Recipe, progress: bool, started: float, student_recipe, keep_student: bool,
           keep_vae: bool) -> dict:
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
    built = _kept_vae_report(output, vae_recipe) if keep_vae else None
    if built is not None or saved is not None and {k: saved.get(k) for k in vae_recipe} == vae_recipe:
        from diffusers import AutoencoderKL

        folder = output / "stable-diffusion" / "vae" if built is not None else stage
        vae = AutoencoderKL.from_pretrained(str(folder)).eval().requires_grad_(False)
    else:
        vae = finetune_decoder(train_vae(pixels, recipe, progress), pixels, recipe, progress)
        vae.save_pretrained(str(stage))
        (stage / "recipe.json").write_text(json.dumps(asdict(recipe)))
    report["vae_seconds"] = round(time.perf_counter() - t, 1) if built is None else built["vae_seconds"]
    report["vae_kept"] = built is not None
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
        scheduler=toy_scheduler(),
        safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    )
    for folder in (output / "stable-diffusion", output / "clip-scorer"):
        shutil.rmtree(folder, ignore_errors=True)
    pipe.save_pretrained(str(output / "stable-diffusion"))
    scorer.save_pretrained(str(output / "clip-scorer"))
    processor = CLIPImageProcessor(size={"shortest_edge": world.IMAGE_SIZE}, do_center_crop=False,
                                   image_mean=list(SCORER_MEAN), image_std=list(SCORER_STD))
    CLIPProcessor(image_processor=processor, tokenizer=tokenizer).save_pretrained(str(output / "clip-scorer"))
    report["student"] = _student(output / "roberta-small", student_recipe, progress, keep_student)
    report["seconds"] = round(time.perf_counter() - started, 1)
    (output / "build.json").write_text(json.dumps(report, indent=2) + "\n")
    for folder in (output / "stable-diffusion", output / "clip-scorer"):
        (folder / "DONE").write_text("toy world\n")  # what kdutils.resolve checks
    shutil.rmtree(stage, ignore_errors=True)
    return report


