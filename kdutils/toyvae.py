"""The toy world's autoencoder: an ``AutoencoderKL`` for 64-pixel scenes, trained by ``toymodels.build``.

Its latent keeps a shape's colour close to linear, as SD's does, so that classifier-free guidance,
which pushes a latent past its colour, saturates the colour instead of turning it into another
(``stretch_error``). ``recipe`` is a ``toymodels.Recipe``.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from . import world
from .trainloop import train_steps


def to_unit(pixels: torch.Tensor) -> torch.Tensor:
    """uint8 pixels to floats in [-1, 1], the range the SD VAE works in.

    Two lines by hand rather than diffusers' ``VaeImageProcessor``, which takes PIL images or floats in
    [0, 1] and would add a conversion per batch of uint8 renders (``to_images`` does what its ``postprocess`` does).
    """
    return pixels.float() / 127.5 - 1.0


def to_images(batch: torch.Tensor) -> list:
    """Floats in [-1, 1] back to PIL images."""
    from PIL import Image

    array = ((batch.clamp(-1, 1) + 1) * 127.5).round().byte().permute(0, 2, 3, 1).numpy()
    return [Image.fromarray(a) for a in array]


def new_vae():
    from diffusers import AutoencoderKL

    return AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=4, sample_size=world.IMAGE_SIZE,
        block_out_channels=(16, 32, 64, 64), layers_per_block=1, norm_num_groups=16,
        down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
    )


def shape_pixels(x: torch.Tensor) -> torch.Tensor:
    """1 where a pixel of the batch ``x`` (in [-1, 1]) differs clearly from its border's median colour: the shape.

    A loss weight for training batches; ``kd.world.shape_mask`` reads one generated picture, blob by blob.
    """
    border = torch.cat([x[..., 0, :], x[..., -1, :], x[..., :, 0], x[..., :, -1]], dim=-1).median(dim=-1).values
    return ((x - border[..., None, None]).abs().sum(1, keepdim=True) > 0.3).float()


def shape_weighted_error(recon: torch.Tensor, x: torch.Tensor, weight: float = 10.0) -> torch.Tensor:
    """Squared error with the shape's pixels counted ``weight`` times.

    The shape covers a small part of the picture and red, orange and yellow are close in RGB, so a plain
    pixel loss lets the autoencoder pull them towards orange; the picture's meaning is in those pixels.
    """
    return ((1 + (weight - 1) * shape_pixels(x)) * (recon - x) ** 2).mean()


AVERAGE_COLOUR = tuple(float(np.mean([rgb[i] for rgb in world.PALETTE.values()])) for i in range(3))


def stretch_error(vae, x: torch.Tensor, latents: torch.Tensor, recipe, generator) -> torch.Tensor:
    """How far the decoder strays when a shape's colour is pushed past itself, away from the average colour.

    Classifier-free guidance moves a latent from the unconditional prediction (a shape of no particular
    colour) through the conditional one and beyond it, ``guidance_scale`` times as far. SD's latent is
    close to a linear map of the colours, so that push saturates a colour; the first toy VAE had packed
    its colours along one curve, and the push turned red into orange or green. Here the decoder sees
    ``anchor + s * (latents - anchor)``, ``anchor`` the same picture with its shape in the average colour
    and ``s`` up to ``recipe.vae_stretch``, and must still draw ``x``.
    """
    mask = shape_pixels(x)
    average = to_unit(torch.tensor(AVERAGE_COLOUR)).view(1, 3, 1, 1)
    anchor = vae.encode(x * (1 - mask) + average * mask).latent_dist.mean
    s = 1 + (recipe.vae_stretch - 1) * torch.rand(len(x), 1, 1, 1, generator=generator)
    return shape_weighted_error(vae.decode(anchor + s * (latents - anchor)).sample, x)


def train_vae(pixels: torch.Tensor, recipe, progress: bool = True):
    """An ``AutoencoderKL`` (64 px <-> 8x8x4) trained on shape-weighted reconstruction with a tiny KL term,
    a linear colour preview and the stretched colours of ``stretch_error``."""
    torch.manual_seed(recipe.seed + 1)
    vae = new_vae().train()
    preview = torch.nn.Conv2d(4, 3, 1)  # latent -> 8x8 colours, fitted beside the VAE and then dropped
    generator = torch.Generator().manual_seed(recipe.seed + 11)

    def loss_at(step):
        x = to_unit(pixels[torch.randint(len(pixels), (recipe.vae_batch,), generator=generator)])
        posterior = vae.encode(x).latent_dist
        recon = vae.decode(posterior.sample(generator)).sample
        loss = shape_weighted_error(recon, x) + 0.5 * F.l1_loss(recon, x) + 1e-6 * posterior.kl().mean()
        if recipe.vae_linear:
            loss = loss + recipe.vae_linear * F.mse_loss(preview(posterior.mean), F.avg_pool2d(x, 8))
        if recipe.vae_stretch > 1:
            loss = loss + recipe.vae_stretch_weight * stretch_error(vae, x, posterior.mean, recipe, generator)
        return loss

    train_steps([*vae.parameters(), *preview.parameters()], recipe.vae_steps, recipe.vae_lr, loss_at, "VAE", progress)
    vae.eval().requires_grad_(False)
    with torch.no_grad():  # SD scales latents to unit variance; its scaling_factor 0.18215 was found the same way
        latents = torch.cat([vae.encode(to_unit(pixels[i:i + 256])).latent_dist.mean for i in range(0, len(pixels), 256)])
    vae.register_to_config(scaling_factor=float(1.0 / latents.std()))
    return vae


def finetune_decoder(vae, pixels: torch.Tensor, recipe, progress: bool = True):
    """Polish the VAE's decoder alone on the shape-weighted error (SD's own VAE got a decoder-only fine-tune too).

    The encoder, and so the latents the UNet learns on and the scaling factor, stay exactly as they are.
    """
    vae.requires_grad_(False)
    parts = [vae.decoder, vae.post_quant_conv]
    for part in parts:
        part.requires_grad_(True).train()
    generator = torch.Generator().manual_seed(recipe.seed + 14)

    def loss_at(step):
        x = to_unit(pixels[torch.randint(len(pixels), (recipe.vae_batch,), generator=generator)])
        with torch.no_grad():
            posterior = vae.encode(x).latent_dist
            z = posterior.sample(generator)
        loss = shape_weighted_error(vae.decode(z).sample, x)
        if recipe.vae_stretch > 1:
            loss = loss + recipe.vae_stretch_weight * stretch_error(vae, x, posterior.mean, recipe, generator)
        return loss

    params = [p for part in parts for p in part.parameters()]
    train_steps(params, recipe.decoder_steps, recipe.decoder_lr, loss_at, "VAE decoder", progress)
    return vae.eval().requires_grad_(False)


@torch.no_grad()
def reconstructions(vae, pixels: torch.Tensor) -> list:
    return to_images(torch.cat([vae.decode(vae.encode(to_unit(pixels[i:i + 128])).latent_dist.mean).sample
                                for i in range(0, len(pixels), 128)]))
