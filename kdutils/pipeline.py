"""Stable Diffusion with a distilled Korean text encoder: build, export, sample.

``korean_pipeline`` puts a trained student (a ``best/`` checkpoint) into SD in
place of CLIP; ``export_pipeline`` saves the result as a folder that plain
``StableDiffusionPipeline.from_pretrained`` loads. ``fixed_latents`` and
``generate`` make images from the same starting noise, so that differences
between encoders come from the text alone. ``img2img_pipeline`` and ``img2img``
start from a picture instead, sharing the loaded components; ``unet_calls``
records what the sampler asked the UNet.
"""

from __future__ import annotations

import json
import logging
import warnings
from contextlib import contextmanager
from pathlib import Path

import torch

from .files import folder_lock, read_json, staging, swap_in
from .precision import sampling_dtype
from .sampling_memory import (  # noqa: F401 (kd.pipeline.* as before)
    CUDA_FREE_FRACTION, SD14_HEADS, SD14_PARAMETERS, fit_memory, sd_sampling_bytes,
)
from .tiny import resolve

SCHEDULERS = {
    "PNDM (SD v1.4 default)": ("PNDMScheduler", {}),
    # SD's DDIM must not clip the predicted x0 to [-1, 1] (a pixel-space default); latents are not pixels
    "DDIM": ("DDIMScheduler", {"clip_sample": False}),
    "Euler": ("EulerDiscreteScheduler", {}),
    "Euler ancestral": ("EulerAncestralDiscreteScheduler", {}),
    "DPM++ 2M": ("DPMSolverMultistepScheduler", {}),
    "DPM++ 2M Karras": ("DPMSolverMultistepScheduler", {"use_karras_sigmas": True}),
}


def _is_encoder_swap_notice(record: logging.LogRecord) -> bool:
    message = record.getMessage()
    return message.startswith("Expected types for text_encoder:") and "CLIPTextModel" in message


@contextmanager
def quiet_encoder_swap():
    """Hide diffusers' one known notice about a text encoder that is not CLIP, and nothing else.

    Loading SD with a student logs "Expected types for text_encoder:
    CLIPTextModel, got RobertaModel". The course swaps the encoder on purpose
    (notebook 07 explains the notice), so its own loads run inside this;
    every other message still shows.
    """
    logger = logging.getLogger("diffusers.pipelines.pipeline_utils")

    def keep(record):
        return not _is_encoder_swap_notice(record)

    logger.addFilter(keep)
    try:
        yield
    finally:
        logger.removeFilter(keep)


def load_sd_pipeline(cfg, *, safety_checker: bool = True, text_encoder=None, tokenizer=None, device: str | None = None):
    """SD from ``cfg.sd_id`` (fp16 on CUDA), optionally with another text encoder and tokenizer.

    The safety checker of the hub pipeline stays on unless ``safety_checker=False``
    (the tiny pipeline has none).
    """
    from diffusers import StableDiffusionPipeline

    device = device or cfg.torch_device
    kwargs = {"dtype": sampling_dtype(device)}
    if text_encoder is not None:
        kwargs.update(text_encoder=text_encoder.to(sampling_dtype(device)), tokenizer=tokenizer)
    if not safety_checker:
        kwargs.update(safety_checker=None, requires_safety_checker=False)
    with quiet_encoder_swap():
        pipe = StableDiffusionPipeline.from_pretrained(resolve(cfg.sd_id), **kwargs).to(device)
    fit_memory(pipe, device, cfg.image_size, cfg.sample_batch_size)
    return pipe


def load_trained_student(student_dir: str | Path, max_length: int = 77):
    """A ``best/`` checkpoint written by ``kd.distill``: ``(student_tokenizer, student, meta)``."""
    from transformers import AutoModel, AutoTokenizer, CLIPTextModel

    from safetensors import SafetensorError

    folder = Path(student_dir)
    meta_file = folder / "kdsd_meta.json"
    if not meta_file.exists():
        raise FileNotFoundError(f"{folder} is not a student checkpoint (no kdsd_meta.json); pass the best/ folder "
                                f"that kd.distill or `python -m kdutils train` wrote")
    fix = ("copy the folder again from where it was trained, or train the student again "
           "(an interrupted run: resume it, and its best/ is written again)")
    meta = read_json(meta_file, fix)
    model_cls = CLIPTextModel if meta.get("experiment") == "clip" else AutoModel
    try:
        student = model_cls.from_pretrained(str(folder)).eval()
        tokenizer = AutoTokenizer.from_pretrained(str(folder))
    except (SafetensorError, OSError, ValueError, RuntimeError) as err:
        raise ValueError(f"the student in {folder} cannot be loaded: a file is missing or damaged "
                         f"({type(err).__name__}: {err}); {fix}") from None
    tokenizer.model_max_length = max_length
    return tokenizer, student, meta


def korean_pipeline(cfg, student_dir: str | Path, *, base=None, safety_checker: bool = True,
                    device: str | None = None):
    """SD whose text encoder and tokenizer are the trained student in ``student_dir``.

    With ``base`` (an SD pipeline already loaded), the new pipeline shares its
    UNet, VAE, scheduler and safety checker, so comparing several encoders
    loads SD once. Raises if the student's hidden size differs from the UNet's
    cross-attention width. Free training models before this on a 12 GB GPU.
    """
    from diffusers import StableDiffusionPipeline, UNet2DConditionModel

    tokenizer, student, _ = load_trained_student(student_dir, cfg.max_length)
    unet_config = base.unet.config if base is not None else UNet2DConditionModel.load_config(
        resolve(cfg.sd_id), subfolder="unet")
    cross = unet_config["cross_attention_dim"]
    if student.config.hidden_size != cross:
        raise ValueError(f"student hidden size {student.config.hidden_size} != UNet cross-attention dim {cross}; "
                         f"the student must be distilled from this SD's text encoder")
    if base is None:
        return load_sd_pipeline(cfg, safety_checker=safety_checker, text_encoder=student, tokenizer=tokenizer,
                                device=device)
    student = student.to(base.device, base.unet.dtype)
    return StableDiffusionPipeline(**{**base.components, "text_encoder": student, "tokenizer": tokenizer},
                                   requires_safety_checker=base.config.requires_safety_checker)


def export_pipeline(cfg, student_dir: str | Path, output_dir: str | Path, *, safety_checker: bool = True,
                    overwrite: bool = False, fp16: bool = False) -> Path:
    """Save SD with the student as a complete folder for ``StableDiffusionPipeline.from_pretrained``.

    Saved from the CPU in fp32, or with ``fp16`` in half precision: half the bytes (SD v1.4 with the
    safety checker: about 2.7 GB instead of 5.5 GB), for sharing and for Drive, where a GPU samples in
    fp16 anyway. ``kdsd_export.json`` names the student, its metrics and the saved dtype.
    ``output_dir`` must be new or empty; a pipeline exported there before is
    replaced only with ``overwrite=True``, and a folder that holds anything
    else is never written into. The folder is written beside its final name
    and swapped in, so a crash leaves the earlier export whole.
    """
    out = Path(output_dir).expanduser()
    check_export_folder(out, overwrite)
    pipe = korean_pipeline(cfg, student_dir, safety_checker=safety_checker, device="cpu")
    if fp16:  # module by module: the pipeline's own .to() warns that fp16 cannot run on the CPU
        for component in pipe.components.values():
            if isinstance(component, torch.nn.Module):
                component.to(torch.float16)
    meta = read_json(Path(student_dir) / "kdsd_meta.json", "")
    with folder_lock(out, "export"):
        tmp = staging(out)
        pipe.save_pretrained(str(tmp))
        (tmp / "kdsd_export.json").write_text(json.dumps({"sd": cfg.sd_id, "student_checkpoint": str(student_dir),
                                                          **meta, "saved_dtype": "float16" if fp16 else "float32"},
                                                         indent=2, ensure_ascii=False) + "\n")
        return swap_in(out)


def check_export_folder(out: Path, overwrite: bool) -> None:
    """Refuse to export into a file, into a folder with other content, or over an export without ``overwrite``."""
    if out.exists() and not out.is_dir():
        raise FileExistsError(f"the export folder {out} is a file; give a new or empty folder (--output)")
    names = sorted(p.name for p in out.iterdir()) if out.is_dir() else []
    if not names:
        return
    if not (out / "kdsd_export.json").is_file():
        raise FileExistsError(f"the export folder {out} is not empty and holds no exported pipeline "
                              f"({', '.join(names[:5])}{' ...' if len(names) > 5 else ''}); export writes only into "
                              f"a new or empty folder (--output)")
    if not overwrite:
        raise FileExistsError(f"the export folder {out} already holds an exported pipeline; replace it with "
                              f"--overwrite (overwrite=True), or give another folder (--output)")


def set_scheduler(pipe, name: str):
    """Swap the sampler by name (see ``SCHEDULERS``); returns the pipeline."""
    import diffusers

    if name not in SCHEDULERS:
        raise ValueError(f"unknown scheduler {name!r}; choose one of {list(SCHEDULERS)}")
    cls_name, extra = SCHEDULERS[name]
    pipe.scheduler = getattr(diffusers, cls_name).from_config(pipe.scheduler.config, **extra)
    return pipe


def fixed_latents(pipe, cfg, n: int, seed: int | None = None) -> torch.Tensor:
    """``n`` initial latents drawn on the CPU from ``seed``: the same on every device and run."""
    seed = cfg.seed if seed is None else seed
    size = cfg.image_size // pipe.vae_scale_factor
    shape = (n, pipe.unet.config.in_channels, size, size)
    latents = torch.randn(shape, generator=torch.Generator("cpu").manual_seed(seed))
    return latents.to(pipe.device, pipe.unet.dtype)


def _texts(texts, name: str = "prompts") -> list[str]:
    """A list of strings from one string or a list of them; anything else is refused, naming the entry."""
    if isinstance(texts, str):
        return [texts]  # one prompt, not one prompt per character
    try:
        texts = list(texts)
    except TypeError:
        raise TypeError(f"{name} must be a string or a list of strings, not {type(texts).__name__}") from None
    for i, text in enumerate(texts):
        if not isinstance(text, str):
            raise TypeError(f"{name}[{i}] is {type(text).__name__} {text!r}, not a string")
    if not texts:
        raise ValueError(f"{name} is empty; give at least one prompt")
    return texts


def _negatives(negative_prompt, num_prompts: int) -> list[str] | None:
    """One negative prompt per prompt: a string applies to all; a list must have one per prompt."""
    if negative_prompt is None:
        return None
    if isinstance(negative_prompt, str):
        return [negative_prompt] * num_prompts
    negatives = _texts(negative_prompt, "negative_prompt")
    if len(negatives) != num_prompts:
        raise ValueError(f"negative_prompt has {len(negatives)} entries for {num_prompts} prompts; give one string "
                         f"for all prompts, or a list with one per prompt")
    return negatives


def _check_counts(batch_size: int, num_inference_steps: int) -> None:
    for name, value in (("batch_size", batch_size), ("num_inference_steps", num_inference_steps)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a whole number >= 1, got {value!r}")


def _start_images(images, num_prompts: int, size: int) -> list:
    """RGB images of ``size`` x ``size``, one per prompt: one image applies to all prompts, other modes
    (RGBA, grey, palette) become RGB, a square of another size is resized; others are refused."""
    from PIL import Image

    if isinstance(images, Image.Image):
        images = [images] * num_prompts
    images = list(images)
    if len(images) != num_prompts:
        raise ValueError(f"need one starting image per prompt: {num_prompts} prompts, {len(images)} images")
    ready = []
    for i, image in enumerate(images):
        if not isinstance(image, Image.Image):
            raise TypeError(f"images[{i}] is {type(image).__name__}, not a PIL image; open files with "
                            f"PIL.Image.open(path)")
        if image.width != image.height:
            raise ValueError(f"images[{i}] is {image.width}x{image.height}, but this pipeline makes {size}x{size} "
                             f"images; crop it to a square first, e.g. PIL.ImageOps.fit(image, ({size}, {size}))")
        image = image.convert("RGB") if image.mode != "RGB" else image
        ready.append(image.resize((size, size), Image.LANCZOS) if image.size != (size, size) else image)
    return ready


def _is_clip(text_encoder) -> bool:
    return type(text_encoder).__name__.startswith("CLIPText")


@torch.no_grad()
def _clip_skip_embeds(pipe, prompts: list[str], clip_skip: int) -> torch.Tensor:
    """CLIP embeddings from ``clip_skip`` layers before the last, through the final LayerNorm.

    Done here because diffusers 0.42 reaches for ``text_encoder.text_model``,
    which transformers 5 no longer has.
    """
    tokens = pipe.tokenizer(prompts, padding="max_length", max_length=pipe.tokenizer.model_max_length,
                            truncation=True, return_tensors="pt")
    out = pipe.text_encoder(tokens.input_ids.to(pipe.device), output_hidden_states=True)
    return pipe.text_encoder.final_layer_norm(out.hidden_states[-(clip_skip + 1)])


def generate(pipe, prompts: list[str] | str, latents: torch.Tensor, *, negative_prompt: str | list[str] | None = None,
             num_inference_steps: int = 50, guidance_scale: float = 7.5, clip_skip: int | None = None,
             batch_size: int = 4, seed: int = 0, progress: bool | None = None) -> list:
    """Images for ``prompts`` from the given initial ``latents`` (one per prompt), in batches.

    The same pipeline, prompts and latents give the same images. ``clip_skip``
    only applies to CLIP text encoders. ``progress=None`` shows a bar over the
    batches when there is more than one (it disappears when done); ``True`` or
    ``False`` force it. One string is one prompt; ``negative_prompt`` is one
    string for all prompts or a list with one per prompt. The image size
    follows the latents (``fixed_latents`` makes them from ``cfg.image_size``).
    """
    prompts = _texts(prompts)
    _check_counts(batch_size, num_inference_steps)
    channels = pipe.unet.config.in_channels
    if not torch.is_tensor(latents) or latents.ndim != 4 or latents.shape[1] != channels:
        got = tuple(latents.shape) if torch.is_tensor(latents) else type(latents).__name__
        raise ValueError(f"latents must be a tensor of shape (n, {channels}, height, width), got {got}; "
                         f"make them with kd.pipeline.fixed_latents(pipe, cfg, n)")
    if len(latents) != len(prompts):
        raise ValueError(f"need one latent per prompt: {len(prompts)} prompts, {len(latents)} latents")
    height, width = (n * pipe.vae_scale_factor for n in latents.shape[2:])
    if clip_skip is not None and not _is_clip(pipe.text_encoder):
        raise ValueError(f"clip_skip picks a CLIP hidden layer; this pipeline's text encoder is "
                         f"{type(pipe.text_encoder).__name__}, so leave clip_skip=None")

    def call(part, **kwargs):
        if clip_skip is None:
            return pipe(part, **kwargs)
        embeds = _clip_skip_embeds(pipe, part, clip_skip)
        negative = _clip_skip_embeds(pipe, kwargs.pop("negative_prompt", [""] * len(part)), clip_skip)
        return pipe(prompt_embeds=embeds, negative_prompt_embeds=negative, **kwargs)

    return _in_batches(pipe, prompts, {"latents": latents}, call, batch_size=batch_size, seed=seed,
                       negative_prompt=negative_prompt, desc="sampling", progress=progress, height=height,
                       width=width, num_inference_steps=num_inference_steps, guidance_scale=guidance_scale)


def _in_batches(pipe, prompts: list[str], per_prompt: dict, call, *, batch_size: int, seed: int,
                negative_prompt: str | list[str] | None, desc: str, progress: bool | None, **settings) -> list:
    """The batching loop ``generate`` and ``img2img`` share: ``per_prompt`` maps a pipeline argument to one
    value per prompt; each batch gets a CPU generator seeded ``seed + start``, so images do not depend on the
    device or the batch size's history; a blacked-out image warns."""
    from tqdm.auto import tqdm

    negatives = _negatives(negative_prompt, len(prompts))
    if negatives is not None:
        per_prompt = {**per_prompt, "negative_prompt": negatives}
    pipe.set_progress_bar_config(disable=True)
    images = []
    starts = range(0, len(prompts), batch_size)
    show = len(starts) > 1 if progress is None else progress
    for start in tqdm(starts, desc=desc, disable=not show, leave=False, mininterval=1.0):
        part = prompts[start:start + batch_size]
        kwargs = {**settings, **{name: values[start:start + batch_size] for name, values in per_prompt.items()},
                  "generator": torch.Generator("cpu").manual_seed(seed + start)}
        result = call(part, **kwargs)
        if getattr(result, "nsfw_content_detected", None) and any(result.nsfw_content_detected):
            warnings.warn("the safety checker blacked out some images", stacklevel=2)
        images.extend(result.images)
    return images


@contextmanager
def unet_calls(pipe):
    """Record the batch size of every UNet call made inside the block: ``with unet_calls(pipe) as calls: ...``.

    Shows what a sampler does: one entry per step, of twice the image count
    when classifier-free guidance runs the prompt and the negative (or empty)
    prompt together.
    """
    calls: list[int] = []

    def record(module, args, kwargs):
        calls.append(len(args[0] if args else kwargs["sample"]))

    handle = pipe.unet.register_forward_pre_hook(record, with_kwargs=True)
    try:
        yield calls
    finally:
        handle.remove()


def img2img_pipeline(pipe):
    """A ``StableDiffusionImg2ImgPipeline`` that shares every component of ``pipe`` (nothing is loaded again).

    Swapping its scheduler (``set_scheduler``) leaves ``pipe``'s own untouched.
    """
    from diffusers import StableDiffusionImg2ImgPipeline

    with quiet_encoder_swap():
        i2i = StableDiffusionImg2ImgPipeline(**pipe.components,
                                             requires_safety_checker=pipe.config.requires_safety_checker)
    return i2i


def img2img(pipe, prompts: list[str] | str, images: list, *, strength: float,
            negative_prompt: str | list[str] | None = None,
            num_inference_steps: int = 50, guidance_scale: float = 7.5, batch_size: int = 4, seed: int = 0,
            progress: bool | None = None) -> list:
    """Images for ``prompts`` that start from ``images`` (one per prompt) noised to ``strength``, in batches.

    ``pipe`` is an img2img pipeline (``img2img_pipeline``). The VAE's sample and
    the added noise come from a CPU generator seeded per batch, so the same
    inputs give the same images on every device. One PIL image serves every
    prompt; images become RGB at the pipeline's size (a square of another
    size is resized, another shape is refused).
    """
    prompts = _texts(prompts)
    _check_counts(batch_size, num_inference_steps)
    images = _start_images(images, len(prompts), pipe.unet.config.sample_size * pipe.vae_scale_factor)
    if not 0.0 < strength <= 1.0:
        raise ValueError(f"strength={strength} is outside (0, 1]: it is the share of the steps that are run")
    return _in_batches(pipe, prompts, {"image": images}, pipe, batch_size=batch_size, seed=seed,
                       negative_prompt=negative_prompt, desc=f"img2img strength {strength}", progress=progress,
                       strength=strength, num_inference_steps=num_inference_steps, guidance_scale=guidance_scale)
