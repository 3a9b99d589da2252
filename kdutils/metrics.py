"""Embedding and image metrics: masked pooling, cosine, retrieval, PSNR, CLIP score, CMMD and reranking."""

from __future__ import annotations

import torch


def masked_mean(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean over the positions where ``mask`` is 1: ``(B, T, H), (B, T) -> (B, H)``."""
    mask = mask.to(hidden.dtype).unsqueeze(-1)
    return (hidden * mask).sum(1) / mask.sum(1).clamp_min(1.0)


def mean_baseline(targets: torch.Tensor) -> float:
    """MSE x 100 of always answering the mean target: what a student that ignores the sentence gets."""
    targets = targets.float()
    return 100 * ((targets - targets.mean(0)) ** 2).mean().item()


def retrieval_accuracy(queries: torch.Tensor, candidates: torch.Tensor) -> float:
    """Top-1 accuracy of finding row i of ``candidates`` for row i of ``queries`` by cosine.

    Chance level is ``1 / len(candidates)``.
    """
    if len(queries) != len(candidates) or len(queries) == 0:
        raise ValueError(f"need the same non-zero number of queries and candidates, got "
                         f"{len(queries)} and {len(candidates)}")
    q = torch.nn.functional.normalize(queries.float(), dim=-1)
    c = torch.nn.functional.normalize(candidates.float(), dim=-1)
    hits = (q @ c.T).argmax(dim=1) == torch.arange(len(q), device=q.device)
    return hits.float().mean().item()


def psnr(a, b, max_value: float = 255.0) -> float:
    """Peak signal-to-noise ratio in dB between two images of the same size (inf if identical)."""
    import numpy as np

    x, y = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if x.shape != y.shape:
        raise ValueError(f"images differ in size: {x.shape} vs {y.shape}")
    mse = np.mean((x - y) ** 2)
    return float("inf") if mse == 0 else float(10 * np.log10(max_value ** 2 / mse))


def load_scorer(cfg, device: str | None = None):
    """The CLIP model that scores images (``cfg.scorer_id``, never the teacher): ``(processor, model)``."""
    from transformers import CLIPModel, CLIPProcessor

    from .tiny import resolve

    processor = CLIPProcessor.from_pretrained(resolve(cfg.scorer_id))
    model = CLIPModel.from_pretrained(resolve(cfg.scorer_id)).eval().to(device or cfg.torch_device)
    return processor, model


def _features(output) -> torch.Tensor:
    # transformers 5 returns a model output whose pooler_output holds the projected features
    return output if torch.is_tensor(output) else output.pooler_output


@torch.no_grad()
def image_embeddings(processor, model, images) -> torch.Tensor:
    """Unit-length CLIP image embeddings of PIL images."""
    pixels = processor(images=list(images), return_tensors="pt")["pixel_values"].to(model.device)
    return torch.nn.functional.normalize(_features(model.get_image_features(pixel_values=pixels)).float(), dim=-1)


@torch.no_grad()
def text_embeddings(processor, model, texts: list[str]) -> torch.Tensor:
    """Unit-length CLIP text embeddings (truncated to the scorer's 77 tokens)."""
    tokens = processor(text=list(texts), return_tensors="pt", padding=True, truncation=True).to(model.device)
    out = model.get_text_features(input_ids=tokens["input_ids"], attention_mask=tokens["attention_mask"])
    return torch.nn.functional.normalize(_features(out).float(), dim=-1)


def clip_score(processor, model, images, texts: list[str]) -> list[float]:
    """CLIP score per (image, text) pair: ``100 * max(cosine, 0)``, higher is better."""
    if len(images) != len(texts):
        raise ValueError(f"clip_score needs one text per image: {len(images)} images, {len(texts)} texts")
    cos = (image_embeddings(processor, model, images) * text_embeddings(processor, model, texts)).sum(-1)
    return (100 * cos.clamp_min(0)).tolist()


def image_similarity(processor, model, images_a, images_b) -> list[float]:
    """Cosine between the CLIP image embeddings of paired images (1.0 for the same image)."""
    if len(images_a) != len(images_b):
        raise ValueError(f"need paired images: {len(images_a)} vs {len(images_b)}")
    return (image_embeddings(processor, model, images_a) * image_embeddings(processor, model, images_b)).sum(-1).tolist()


def rerank(processor, model, images, text: str) -> tuple[list[int], list[float]]:
    """Order candidate ``images`` for one ``text`` by CLIP score, best first: ``(order, scores)``.

    DALL-E's reranking: sample many images for a prompt and keep the ones a
    contrastive model matches best with it. ``scores[i]`` is image ``i``'s
    CLIP score; ``order[:k]`` are the indices of the top ``k`` (ties keep
    their original order). Score with a model other than the text encoder
    the images were drawn with.
    """
    images = list(images)
    if not images:
        raise ValueError("rerank needs at least one candidate image")
    scores = clip_score(processor, model, images, [text] * len(images))
    order = sorted(range(len(images)), key=lambda i: -scores[i])
    return order, scores


def mmd_rbf(x: torch.Tensor, y: torch.Tensor, sigma: float = 10.0) -> float:
    """Squared maximum mean discrepancy between two samples (rows) under the kernel ``exp(-|a-b|^2 / (2 sigma^2))``.

    The plug-in estimate (every pair, the diagonals included), so it is 0 for two identical samples and never
    negative: ``mean k(x, x') + mean k(y, y') - 2 mean k(x, y)``.
    """
    x, y = x.double(), y.double()

    def mean_kernel(a, b):
        return torch.exp(-torch.cdist(a, b).pow(2) / (2 * sigma**2)).mean()

    return float(mean_kernel(x, x) + mean_kernel(y, y) - 2 * mean_kernel(x, y))


def cmmd(processor, model, images, reference_images, sigma: float = 10.0, scale: float = 1000.0) -> float:
    """CMMD (Jayasumana et al. 2024): ``scale`` x the RBF MMD between CLIP image embeddings of two image sets.

    Proposed to replace FID: it assumes no normal distribution of the embeddings and is stable with far fewer
    images. ``sigma`` 10 and ``scale`` 1000 are the paper's values for unit-length CLIP
    embeddings. Lower is closer; 0 for the same images. Use a CLIP other than the text encoder that drew them.
    """
    return scale * mmd_rbf(image_embeddings(processor, model, images), image_embeddings(processor, model, reference_images),
                           sigma)
