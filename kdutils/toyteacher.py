"""The toy world's two CLIPs: the frozen teacher text encoder that SD reads, and the scorer that judges images.

``toymodels.build`` saves the teacher inside ``tiny/stable-diffusion`` (its ``text_encoder`` and ``tokenizer``)
and the scorer as ``tiny/clip-scorer``. The scorer is never the teacher.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from . import world
from .tiny import HIDDEN, MAX_LENGTH, build_clip_tokenizer, text_config
from .trainloop import train_steps


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


def train_scorer(tokenizer, pixels: torch.Tensor, scenes: list, recipe, progress: bool = True):
    """A small ``CLIPModel`` trained contrastively on renders and their English captions."""
    from transformers import CLIPConfig, CLIPModel, CLIPVisionConfig

    vision = CLIPVisionConfig(hidden_size=HIDDEN, intermediate_size=4 * HIDDEN, num_hidden_layers=2,
                              num_attention_heads=4, image_size=world.IMAGE_SIZE, patch_size=8, projection_dim=HIDDEN)
    config = CLIPConfig(text_config=text_config(tokenizer).to_dict(), vision_config=vision.to_dict(),
                        projection_dim=HIDDEN)
    torch.manual_seed(recipe.seed + 3)
    model = CLIPModel(config).train()
    generator = torch.Generator().manual_seed(recipe.seed + 13)
    rng = np.random.default_rng(recipe.seed + 23)
    mean, std = torch.tensor(SCORER_MEAN).view(1, 3, 1, 1), torch.tensor(SCORER_STD).view(1, 3, 1, 1)

    def loss_at(step):
        idx = torch.randint(len(pixels), (recipe.scorer_batch,), generator=generator)
        images = (pixels[idx].float() / 255 - mean) / std
        captions = [world.caption_en(scenes[i], rng) for i in idx.tolist()]
        text = tokenizer(captions, padding=True, return_tensors="pt")
        out = model(input_ids=text.input_ids, attention_mask=text.attention_mask, pixel_values=images)
        # two captions of the same scene are both right: count every matching scene as a positive
        same = torch.tensor([[scenes[i] == scenes[j] for j in idx.tolist()] for i in idx.tolist()], dtype=torch.float)
        target = same / same.sum(1, keepdim=True)
        return 0.5 * (-(target * out.logits_per_image.log_softmax(1)).sum(1).mean()
                      - (target * out.logits_per_text.log_softmax(1)).sum(1).mean())

    train_steps(model.parameters(), recipe.scorer_steps, recipe.scorer_lr, loss_at, "scorer", progress,
                weight_decay=1e-4)
    return model.eval()


SCORER_MEAN = (0.5, 0.5, 0.5)
SCORER_STD = (0.5, 0.5, 0.5)
