"""Korean-English sentence pairs: the bundled corpus, loaders, cleaning and splits.

``load_pairs`` turns the bundled corpus, local files (delimited text in UTF-8,
UTF-16 or CP949, Excel ``.xlsx``, JSON/JSONL, Parquet) or a hub dataset into a
``datasets.Dataset`` with the columns ``ko`` and ``en``. ``clean_pairs``
normalises and filters them with a count per reason, and ``prepare_splits``
saves a deterministic train/val/test split that every distillation notebook
reuses.
"""

from __future__ import annotations

import hashlib
import json
import re
import unicodedata
import warnings
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from .corpus import ASSETS, BUNDLED_PAIRS, EVAL_PROMPTS, read_bundled, read_jsonl  # noqa: F401 (kd.data.* as before)
from .files import folder_lock, read_json, recover, staging, swap_in
from .readers import (FILE_TYPES, KNOWN_COLUMNS, TEXT_TYPES, cell_text, data_files,  # noqa: F401 (kd.data.* as before)
                      hangul_share, looks_like_path, pick_columns, read_file, read_hub)

SPLITS = ("train", "val", "test")
_ZERO_WIDTH = re.compile(r"[\u200b\u200c\u200d\u2060\ufeff]")
_SPACES = re.compile(r"\s+")


TOYWORLD_PAIRS = {"train": 3000, "val": 300, "test": 300}  # caption pairs of the toy world per split


def read_toyworld(sizes: dict[str, int] = TOYWORLD_PAIRS, seed: int = 0) -> list[dict]:
    """The toy world's Korean captions with their English translations (``kdutils.world``), with splits.

    Training captions never describe a held-out combination of colour, shape
    and position; val and test include every held-out one, so their scores say
    whether a student composes meaning or recalls sentences.
    """
    from . import world

    rows = []
    for offset, (split, n) in enumerate(sizes.items()):
        pairs = world.caption_pairs(n, seed + offset, "train" if split == "train" else "eval", translate=True)
        rows += [{"ko": p["ko"], "en": p["en"], "id": f"world-{split}-{i}",
                  "category": "world (held out)" if p["held_out"] else "world", "split": split}
                 for i, p in enumerate(pairs)]
    return rows


def read_eval_prompts(source: str = "bundled") -> list[dict]:
    """Korean prompts with English references, grouped by ``category``.

    For ``source="toyworld"`` (the tiny profile's data) they are the toy
    world's fixed captions of ``world.eval_scenes()``, each with its
    ``scene`` so that images can be read back: category ``held out`` (no
    Korean training caption describes that combination) or ``seen``.
    Otherwise the course's 72 general prompts.
    """
    if source != "toyworld":
        return read_jsonl(EVAL_PROMPTS)
    from . import world

    return [{"id": f"w{i:03d}", "category": "held out" if world.is_held_out(scene) else "seen",
             "ko": world.canonical_ko(scene), "en": world.canonical_en(scene), "scene": scene.to_dict()}
            for i, scene in enumerate(world.eval_scenes())]


# ------------------------------------------------------------------ loading
def load_pairs(source: str | Path, *, ko_col: str | None = None, en_col: str | None = None,
               config: str | None = None, split: str | None = None, limit: int | None = None,
               encoding: str | None = None, sheet: str | int | None = None, seed: int = 0):
    """Load Korean-English pairs as a ``datasets.Dataset`` with columns ``ko``, ``en``, ``source``.

    ``source`` is ``"bundled"`` (the course's 733 pairs), ``"toyworld"`` (those
    plus the toy world's caption translations, see ``read_toyworld``), a file
    or folder of files, or a hub dataset id
    (``config``/``split`` as in ``load_dataset``; with ``limit`` the set is
    streamed, shuffled in a buffer and cut, never loaded whole). Columns are
    detected from known names and the Korean side is checked by its Hangul share.

    Text files (``.csv``, ``.tsv``, ``.tab``) may be UTF-8 (with or without BOM),
    UTF-16 (Excel's "Unicode Text") or CP949/EUC-KR; ``encoding`` overrides the
    detection. The delimiter (tab, comma, semicolon or ``|``) is detected from
    the content, whatever the extension. In an ``.xlsx`` workbook the first sheet
    with Korean/English columns is used; ``sheet`` (a name or a 0-based index)
    picks one.
    """
    from datasets import Dataset

    if str(source) in ("bundled", "toyworld"):
        rows = [{**r, "source": "bundled"} for r in read_bundled()]
        if str(source) == "toyworld":
            rows += [{**r, "source": "toyworld"} for r in read_toyworld(seed=seed)]
        if limit is not None:
            rows = rows[:limit]
        return Dataset.from_list([{"ko": r["ko"], "en": r["en"], "source": r["source"], "id": r["id"],
                                   "category": r["category"], "split": r["split"]} for r in rows])
    path = Path(source).expanduser()
    if path.exists():
        files = data_files(path)
        frames = []
        for file in files:
            records = read_file(file, encoding, sheet=sheet, ko_col=ko_col, en_col=en_col)
            ko, en = pick_columns(records, ko_col, en_col, where=str(file))
            frames += [{"ko": cell_text(r.get(ko)), "en": cell_text(r.get(en)), "source": file.name} for r in records]
        rows = frames[:limit] if limit is not None else frames
    elif looks_like_path(str(source)):
        raise FileNotFoundError(f"no such file or folder: {source} (pass a path to {'/'.join(FILE_TYPES)} "
                                f"data, a folder of them, 'bundled', or a hub dataset id)")
    else:
        records = read_hub(str(source), config, split or "train", limit, seed)
        ko, en = pick_columns(records, ko_col, en_col, where=f"hub dataset {source}")
        rows = [{"ko": cell_text(r.get(ko)), "en": cell_text(r.get(en)), "source": str(source)} for r in records]
    if not rows:
        raise ValueError(f"{source} has no rows")
    return Dataset.from_list(rows)


# ----------------------------------------------------------------- cleaning
@dataclass
class CleaningReport:
    """How many rows cleaning changed (``fixed``) and removed (``dropped``), by reason."""

    rows_in: int
    rows_out: int = 0
    fixed: dict[str, int] = field(default_factory=dict)
    dropped: dict[str, int] = field(default_factory=dict)
    # training pairs each experiment leaves out (see left_out_by_experiment); filled after splitting
    left_out: dict[str, int] = field(default_factory=dict)

    def to_frame(self):
        """A table with one row per reason, for notebooks."""
        import pandas as pd

        rows = [("fixed", k, v) for k, v in self.fixed.items()] + [("dropped", k, v) for k, v in self.dropped.items()]
        rows += [("kept", "rows kept", self.rows_out)]
        rows += [("left out of training", f"experiment {k}: a side its tokenizer would cut", v)
                 for k, v in self.left_out.items()]
        return pd.DataFrame(rows, columns=["action", "reason", "rows"])

    def __str__(self) -> str:
        return (f"{self.rows_in} rows in, {self.rows_out} kept; dropped {self.dropped}; fixed {self.fixed}")


def normalize_text(text: str) -> str:
    """NFC (macOS gives decomposed Hangul), no zero-width characters, single spaces, stripped."""
    text = _ZERO_WIDTH.sub("", text)
    text = _SPACES.sub(" ", text).strip()
    return unicodedata.normalize("NFC", text)


def token_lengths(tokenizer, texts: list[str]) -> list[int]:
    """Tokens per text including special tokens, without truncation."""
    if not texts:
        return []
    return [len(ids) for ids in tokenizer(list(texts), add_special_tokens=True, truncation=False,
                                          verbose=False)["input_ids"]]


def overlong(tokenizer, ds, max_length: int = 77) -> list[bool]:
    """Per pair: is the Korean or the English side longer than ``max_length`` tokens of ``tokenizer``?

    Such a side would be cut at ``max_length`` when that tokenizer reads it.
    """
    return [ko > max_length or en > max_length
            for ko, en in zip(token_lengths(tokenizer, list(ds["ko"])), token_lengths(tokenizer, list(ds["en"])))]


def left_out_by_experiment(train, teacher_tokenizer, student_tokenizer, max_length: int = 77) -> dict[str, int]:
    """How many training pairs each experiment leaves out because its student's tokenizer would cut a side.

    Cleaning filters by the teacher's tokenizer (English) and the Korean
    student's (both sides), so experiments 2 and 3 lose nothing more. The
    CLIP student of experiment 1 reads Korean with CLIP's byte-level BPE,
    about 2 tokens per Hangul syllable: ``kd.distill.distill`` leaves those
    pairs out of its training and says how many.
    """
    from .models import EXPERIMENTS

    counts = {"clip": sum(overlong(teacher_tokenizer, train, max_length))}
    student = sum(overlong(student_tokenizer, train, max_length))
    return {experiment: counts.get(experiment, student) for experiment in EXPERIMENTS}


def clean_pairs(ds, *, teacher_tokenizer=None, student_tokenizer=None, max_length: int = 77,
                max_ratio: float | None = None):
    """Normalise and filter pairs; return ``(dataset, CleaningReport)``.

    Drops, in order: null or empty sides, exact duplicate pairs, English over
    ``max_length`` teacher tokens, either side over ``max_length`` student
    tokens, and (with ``max_ratio``) pairs whose Korean/English length ratio is
    more than ``max_ratio`` times off the median. Raises if nothing is left.
    """
    fixed: Counter = Counter()
    dropped: Counter = Counter()
    keep = _normalised_unique(ds["ko"], ds["en"], fixed, dropped)
    keep = _within_limits(keep, dropped, teacher_tokenizer, student_tokenizer, max_length, max_ratio)
    if not keep:
        raise ValueError(f"cleaning removed all {len(ds)} pairs ({dict(dropped)}); check the columns "
                         f"(ko_col=/en_col=) or loosen max_length/max_ratio")
    from datasets import Dataset

    kos, ens = [k for _, k, _ in keep], [e for _, _, e in keep]
    rest = ds.select([i for i, _, _ in keep]).remove_columns(["ko", "en"])
    if rest.column_names:
        out = rest.add_column("ko", kos).add_column("en", ens)
        out = out.select_columns(["ko", "en"] + [c for c in out.column_names if c not in ("ko", "en")])
    else:  # add_column on a dataset without columns fails (its row count is lost)
        out = Dataset.from_dict({"ko": kos, "en": ens})
    fixed = {k: fixed.get(k, 0) for k in ("unicode NFC", "whitespace / zero-width")}
    return out, CleaningReport(rows_in=len(ds), rows_out=len(out), fixed=fixed, dropped=dict(dropped))


def _normalised_unique(kos, ens, fixed: Counter, dropped: Counter) -> list[tuple[int, str, str]]:
    """``(row, ko, en)`` of the rows with two non-empty sides, normalised, first copy of each pair only."""
    keep, seen = [], set()
    for i, (ko, en) in enumerate(zip(kos, ens)):
        if ko is None or en is None or not str(ko).strip() or not str(en).strip():
            dropped["null or empty"] += 1
            continue
        new_ko, new_en = normalize_text(ko), normalize_text(en)
        nfc_ko, nfc_en = unicodedata.normalize("NFC", ko), unicodedata.normalize("NFC", en)
        if (nfc_ko, nfc_en) != (ko, en):
            fixed["unicode NFC"] += 1
        if (new_ko, new_en) != (nfc_ko, nfc_en):
            fixed["whitespace / zero-width"] += 1
        if not new_ko or not new_en:
            dropped["null or empty"] += 1
            continue
        if (new_ko, new_en) in seen:
            dropped["duplicate"] += 1
            continue
        seen.add((new_ko, new_en))
        keep.append((i, new_ko, new_en))
    return keep


def _within_limits(keep, dropped: Counter, teacher_tokenizer, student_tokenizer, max_length: int,
                   max_ratio: float | None) -> list[tuple[int, str, str]]:
    """The rows of ``keep`` within the token limits and (with ``max_ratio``) the length-ratio limit."""
    def over(tokenizer, texts):
        return [n > max_length for n in token_lengths(tokenizer, texts)]

    if teacher_tokenizer is not None and keep:
        too_long = over(teacher_tokenizer, [en for _, _, en in keep])
        dropped[f"en over {max_length} teacher tokens"] += sum(too_long)
        keep = [k for k, bad in zip(keep, too_long) if not bad]
    if student_tokenizer is not None and keep:
        too_long = [a or b for a, b in zip(over(student_tokenizer, [ko for _, ko, _ in keep]),
                                           over(student_tokenizer, [en for _, _, en in keep]))]
        dropped[f"over {max_length} student tokens"] += sum(too_long)
        keep = [k for k, bad in zip(keep, too_long) if not bad]
    if max_ratio is not None and keep:
        import statistics

        ratios = [len(ko) / len(en) for _, ko, en in keep]
        median = statistics.median(ratios)
        bad = [max(r / median, median / r) > max_ratio for r in ratios]
        dropped[f"length ratio over {max_ratio}x median"] += sum(bad)
        keep = [k for k, b in zip(keep, bad) if not b]
    return keep


# ------------------------------------------------------------------- splits
def split_pairs(ds, *, seed: int = 0, val_fraction: float = 0.05, test_fraction: float = 0.05,
                max_eval: int = 2000):
    """A ``DatasetDict`` with train/val/test.

    A ``split`` column (the bundled corpus) is used as it is; otherwise a
    permutation from ``seed`` assigns rows, with val and test capped at
    ``max_eval`` pairs each. The same data and seed always give the same split.
    """
    import numpy as np
    from datasets import DatasetDict

    if "split" in ds.column_names:
        labels = list(ds["split"])
        unknown = sorted({str(s) for s in labels} - set(SPLITS))
        if unknown:
            raise ValueError(f"the split column holds {unknown}; use only {list(SPLITS)} "
                             f"or remove the column to split by seed")
        parts = {name: ds.select([i for i, s in enumerate(labels) if s == name]).remove_columns("split")
                 for name in SPLITS}
    else:
        n = len(ds)
        n_val = min(max_eval, max(1, round(n * val_fraction)))
        n_test = min(max_eval, max(1, round(n * test_fraction)))
        if n < n_val + n_test + 1:
            raise ValueError(f"{n} pairs are too few to split into train/val/test")
        order = np.random.default_rng(seed).permutation(n)
        parts = {"val": ds.select(sorted(order[:n_val])), "test": ds.select(sorted(order[n_val:n_val + n_test])),
                 "train": ds.select(sorted(order[n_val + n_test:]))}
    empty = [name for name, part in parts.items() if len(part) == 0]
    if empty:
        raise ValueError(f"split(s) {empty} are empty; the data has too few pairs")
    return DatasetDict({name: parts[name] for name in SPLITS})


def fingerprint(splits) -> str:
    """A short hash of the pairs in every split, stored with checkpoints (a missing split is skipped)."""
    h = hashlib.sha256()
    for name in (name for name in SPLITS if name in splits):
        for ko, en in zip(splits[name]["ko"], splits[name]["en"]):
            h.update(f"{name}\t{ko}\t{en}\n".encode())
    return h.hexdigest()[:16]


def splits_dir(cfg) -> Path:
    """Where ``prepare_splits`` saves the cleaned splits of a profile."""
    return Path(cfg.output_dir) / "data" / "pairs"


def _build_settings(cfg) -> dict:
    """The profile values that decide the splits; a saved copy is reused only if they all match."""
    from . import world

    settings = {"source": cfg.data_source, "config": cfg.data_config, "num_pairs": cfg.num_pairs,
                "seed": cfg.seed, "max_length": cfg.max_length, "sd_id": cfg.sd_id, "student_id": cfg.student_id}
    if cfg.data_source == "toyworld":
        settings["world_version"] = world.VERSION  # its generated pairs change with the world's templates
    return settings


def save_splits(splits, cfg, report: CleaningReport | None = None) -> Path:
    """Save the splits with ``datasets`` plus a JSON with counts, fingerprint and cleaning report.

    They are written beside the saved ones and swapped in by renames
    (``kdutils.files.swap_in``): a kernel that holds the old splits
    memory-mapped keeps reading them (rewriting their files in place killed it
    with SIGBUS), and a crash leaves one complete copy. One process at a time writes.
    """
    folder = splits_dir(cfg)
    with folder_lock(folder, "process writing the data splits", wait=True):
        tmp = staging(folder)
        splits.save_to_disk(str(tmp))
        _write_info(tmp, splits, cfg, report)
        return swap_in(folder)


def _write_info(folder: Path, splits, cfg, report: CleaningReport | None) -> None:
    info = {**_build_settings(cfg), "sizes": {k: len(v) for k, v in splits.items()},
            "fingerprint": fingerprint(splits),
            "cleaning": None if report is None else {"rows_in": report.rows_in, "rows_out": report.rows_out,
                                                     "fixed": report.fixed, "dropped": report.dropped,
                                                     "left_out_of_training": report.left_out}}
    (folder / "info.json").write_text(json.dumps(info, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")


def prepare_splits(cfg, *, rebuild: bool = False):
    """The cleaned train/val/test splits of the profile: loaded if saved, else built and saved.

    Built = ``load_pairs(cfg.data_source)``, ``clean_pairs`` under the teacher's
    and the student's tokenizers, ``split_pairs(seed=cfg.seed)``; ``info.json``
    also records how many training pairs each experiment leaves out.
    """
    from datasets import load_from_disk

    from .models import load_tokenizers

    folder = splits_dir(cfg)
    info_file = folder / "info.json"
    with folder_lock(folder, "process writing the data splits", wait=True):  # not while another one swaps them
        recover(folder)
        if info_file.exists() and not rebuild:
            try:
                info = read_json(info_file, "")
                if all(info.get(k) == v for k, v in _build_settings(cfg).items()):
                    return load_from_disk(str(folder))
            except (ValueError, OSError) as err:  # a cache: build it again
                warnings.warn(f"the saved splits in {folder} cannot be read ({err}); building them again",
                              stacklevel=2)
    teacher_tokenizer, student_tokenizer = load_tokenizers(cfg)
    pairs = load_pairs(cfg.data_source, config=cfg.data_config, limit=cfg.num_pairs, seed=cfg.seed)
    pairs, report = clean_pairs(pairs, teacher_tokenizer=teacher_tokenizer, student_tokenizer=student_tokenizer,
                                max_length=cfg.max_length)
    splits = split_pairs(pairs, seed=cfg.seed)
    report.left_out = left_out_by_experiment(splits["train"], teacher_tokenizer, student_tokenizer, cfg.max_length)
    save_splits(splits, cfg, report)
    return splits
