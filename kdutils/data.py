"""Korean-English sentence pairs: the bundled corpus, loaders and cleaning."""

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


def read_eval_prompts() -> list[dict]:
    """Korean prompts with English references, grouped by ``category``."""
    return read_jsonl(EVAL_PROMPTS)
