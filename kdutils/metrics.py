"""Embedding and image metrics: masked pooling, cosine, retrieval, PSNR."""

from __future__ import annotations

import torch


def masked_mean(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean over the positions where ``mask`` is 1: ``(B, T, H), (B, T) -> (B, H)``."""
    mask = mask.to(hidden.dtype).unsqueeze(-1)
    return (hidden * mask).sum(1) / mask.sum(1).clamp_min(1.0)


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
