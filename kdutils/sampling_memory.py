"""How much memory Stable Diffusion needs to sample, and the slicing that makes it fit a card or a Mac.

``load_sd_pipeline`` calls ``fit_memory`` on every pipeline it builds. ``sd_sampling_bytes`` is an
estimate by arithmetic (no GPU was at hand), pessimistic about attention; README "class 프로필의 크기"
uses it for the class profile's sampling batch.
"""

from __future__ import annotations

import os

import torch

from .sizing import PARAMS


def memory_bytes() -> int:
    """This machine's RAM (on a Mac the Apple GPU shares it)."""
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


# SD v1.4's parameter counts: UNet, VAE, the CLIP ViT-L/14 text encoder and the safety checker, as
# kdutils.sizing counted them on full-size configurations (one table for the sizing and this estimate)
SD14_PARAMETERS = {"unet": PARAMS["unet"], "vae": PARAMS["vae"], "text_encoder": PARAMS["clip_text"],
                   "safety_checker": PARAMS["safety_checker"]}
SD14_HEADS = 8  # attention heads in every UNet attention block of SD v1.x
CUDA_FREE_FRACTION = 0.85  # of a card's memory, what sampling may plan to use: the CUDA context and fragmentation take the rest


def sd_sampling_bytes(image_size: int = 512, batch_size: int = 1, *, bytes_per_value: int = 2,
                      parameters: float | None = None, heads: int = SD14_HEADS) -> dict[str, float]:
    """An estimate of the GPU memory SD v1.x needs to sample, by part, in bytes (and their ``total``).

    The estimate is deliberately pessimistic about attention: it counts the
    self-attention scores of the UNet's full-resolution blocks as if they were
    materialised (``2 * batch`` rows for classifier-free guidance, ``heads``
    maps of ``N x N`` for ``N = (image_size / 8) ** 2`` latent pixels, scores
    plus their softmax). PyTorch 2's memory-efficient attention kernels never
    hold that matrix, so what a card really needs is less. Other parts:
    weights at ``bytes_per_value`` (fp16 on CUDA), the UNet's feature maps
    (about 20 live maps of 320 channels), and decoding one image at a time
    through the VAE (about 10 live maps of 128 channels at full size, plus its
    single-head attention at latent size).
    """
    if image_size <= 0 or image_size % 8 or batch_size < 1:
        raise ValueError(f"image_size must be a positive multiple of 8 and batch_size at least 1; "
                         f"got {image_size} and {batch_size}")
    rows = 2 * batch_size  # the prompt and the empty prompt
    tokens = (image_size // 8) ** 2
    parts = {
        "weights": (parameters if parameters is not None else sum(SD14_PARAMETERS.values())) * bytes_per_value,
        "attention scores": rows * heads * tokens ** 2 * bytes_per_value * 2,
        "unet feature maps": rows * 320 * tokens * bytes_per_value * 20,
        "vae decode": (10 * 128 * image_size ** 2 + 2 * tokens ** 2) * bytes_per_value,
    }
    parts["total"] = sum(parts.values())
    return parts


def _parameters(pipe) -> float | None:
    """The parameter count of a loaded pipeline's models, or None when it has none to count (a stand-in)."""
    modules = [m for m in getattr(pipe, "components", {}).values() if isinstance(m, torch.nn.Module)]
    return float(sum(p.numel() for m in modules for p in m.parameters())) if modules else None


def fit_memory(pipe, device: str, image_size: int = 512, batch_size: int = 1) -> None:
    """Batched VAE decoding in slices, and sliced attention where memory calls for it.

    On CUDA, attention is sliced only when :func:`sd_sampling_bytes` (fp16, at
    the profile's image size and batch, pessimistic about attention) exceeds
    ``CUDA_FREE_FRACTION`` of the card. For SD v1.4 at 512 px and 2 images per
    batch (the ``class`` profile) that is about 5.4 GiB, so a T4 (about 15 GiB)
    or a 12 GiB card samples at full speed; slicing would only slow it. At 8
    images per batch (about 12 GiB) a 12 GiB card slices and a T4 does not. On Macs under 64 GB attention is
    sliced as diffusers advises for Apple GPUs, which share the machine's memory.
    """
    pipe.vae.enable_slicing()
    kind = torch.device(device).type
    if kind == "cuda":
        need = sd_sampling_bytes(image_size, batch_size, parameters=_parameters(pipe))["total"]
        if need > CUDA_FREE_FRACTION * torch.cuda.get_device_properties(0).total_memory:
            pipe.enable_attention_slicing()
    elif kind == "mps" and memory_bytes() < 64 * 1024 ** 3:
        pipe.enable_attention_slicing()
