"""The course's bundled Korean–English data: where it lies and how it reads.

A leaf module (it imports nothing of kdutils): the toy world's student
(``tiny``) reads the bundled pairs too, and importing them from ``data``, which
imports ``models``, which imports ``tiny``, made an import circle.
"""

from __future__ import annotations

import json
from pathlib import Path

ASSETS = Path(__file__).resolve().parent / "assets"
BUNDLED_PAIRS = ASSETS / "pairs.jsonl"
EVAL_PROMPTS = ASSETS / "eval_prompts.jsonl"


def read_jsonl(path: str | Path) -> list[dict]:
    """Rows of a JSON-lines file (blank lines skipped)."""
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def read_bundled() -> list[dict]:
    """The course's own pairs with their fixed ``split`` (train/val/test)."""
    return read_jsonl(BUNDLED_PAIRS)
