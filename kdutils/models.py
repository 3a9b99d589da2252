"""Loading the teacher and counting parameters."""

from __future__ import annotations


def count_parameters(model) -> int:
    """Number of parameters (the study reports 123,060,080 for CLIP and 68,090,880 for roberta-small)."""
    return sum(p.numel() for p in model.parameters())
