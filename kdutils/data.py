"""Korean-English sentence pairs: the bundled corpus, loaders, cleaning and splits.

``load_pairs`` turns the bundled corpus, local files (delimited text in UTF-8,
UTF-16 or CP949, Excel ``.xlsx``, JSON/JSONL, Parquet) or a hub dataset into a
``datasets.Dataset`` with the columns ``ko`` and ``en``. ``clean_pairs``
normalises and filters them with a count per reason, and ``prepare_splits``
saves a deterministic train/val/test split that every distillation notebook
reuses.
"""

from __future__ import annotations

import csv
import hashlib
import io
import itertools
import json
import re
import unicodedata
import warnings
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from .corpus import ASSETS, BUNDLED_PAIRS, EVAL_PROMPTS, read_bundled, read_jsonl  # noqa: F401 (kd.data.* as before)
from .files import folder_lock, read_json, recover, staging, swap_in

TEXT_TYPES = (".csv", ".tsv", ".tab", ".txt")  # delimiter and encoding are detected from the content
FILE_TYPES = TEXT_TYPES + (".xlsx", ".json", ".jsonl", ".parquet")
SPLITS = ("train", "val", "test")

# (Korean column, English column), compared case-insensitively
KNOWN_COLUMNS = [
    ("ko", "en"), ("원문", "번역문"), ("korean", "english"), ("korea", "english"), ("kor", "eng"),
    ("non_english", "english"), ("translation.ko", "translation.en"), ("한국어", "영어"), ("src", "tgt"),
]
_HANGUL = re.compile(r"[\uac00-\ud7a3\u1100-\u11ff\u3130-\u318f]")
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


def hangul_share(texts: Iterable[str | None]) -> float:
    """Share of non-empty texts that contain at least one Hangul character."""
    texts = [t for t in texts if isinstance(t, str) and t.strip()]
    return sum(bool(_HANGUL.search(t)) for t in texts) / len(texts) if texts else 0.0


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
        files = _data_files(path)
        frames = []
        for file in files:
            records = _read_file(file, encoding, sheet=sheet, ko_col=ko_col, en_col=en_col)
            ko, en = _pick_columns(records, ko_col, en_col, where=str(file))
            frames += [{"ko": _text(r.get(ko)), "en": _text(r.get(en)), "source": file.name} for r in records]
        rows = frames[:limit] if limit is not None else frames
    elif _looks_like_path(str(source)):
        raise FileNotFoundError(f"no such file or folder: {source} (pass a path to {'/'.join(FILE_TYPES)} "
                                f"data, a folder of them, 'bundled', or a hub dataset id)")
    else:
        records = _from_hub(str(source), config, split or "train", limit, seed)
        ko, en = _pick_columns(records, ko_col, en_col, where=f"hub dataset {source}")
        rows = [{"ko": _text(r.get(ko)), "en": _text(r.get(en)), "source": str(source)} for r in records]
    if not rows:
        raise ValueError(f"{source} has no rows")
    return Dataset.from_list(rows)


def _looks_like_path(source: str) -> bool:
    return source.startswith((".", "/", "~")) or source.lower().endswith(FILE_TYPES) or "\\" in source


# what to do with files that spreadsheet programs save but load_pairs does not read
_RESAVE = {
    ".xls": "open it in Excel and save it as an Excel Workbook (.xlsx)",
    ".ods": "save it as an Excel Workbook (.xlsx) or as CSV",
    ".numbers": "export it from Numbers as Excel (.xlsx) or CSV",
}


def _data_files(path: Path) -> list[Path]:
    if path.is_file():
        if path.suffix.lower() not in FILE_TYPES:
            what_to_do = _RESAVE.get(path.suffix.lower(), f"use one of {', '.join(FILE_TYPES)}")
            raise ValueError(f"{path.name}: unsupported file type {path.suffix!r}; {what_to_do}")
        return [path]
    # skip hidden files and folders (.ipynb_checkpoints holds copies) and Excel lock files
    files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in FILE_TYPES
                   and not p.name.startswith("~$")
                   and not any(part.startswith(".") for part in p.relative_to(path).parts))
    if not files:
        raise ValueError(f"folder {path} holds no data files of types {FILE_TYPES}")
    return files


def _text(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, float) and value != value:  # NaN from pandas
        return None
    return str(value)


def _decode(raw: bytes, name: str, encoding: str | None) -> str:
    """Text in ``encoding``, else in the encoding its BOM names, else UTF-16, UTF-8 or CP949.

    Excel saves "CSV UTF-8" with a UTF-8 BOM, "Unicode Text" as UTF-16LE with a
    BOM and plain "CSV" on Korean Windows as CP949 (a superset of EUC-KR).
    """
    if not raw.strip():
        raise ValueError(f"{name} is empty")
    if raw.startswith(b"PK\x03\x04"):  # a zip file: most likely a workbook saved under the wrong name
        raise ValueError(f"{name} is not text but a zip file, most likely an Excel workbook: rename it to .xlsx")
    if encoding:
        tried = [encoding]
    elif raw.startswith((b"\xff\xfe", b"\xfe\xff")):
        tried = ["utf-16"]  # the BOM gives the byte order
    elif raw.startswith(b"\xef\xbb\xbf"):
        tried = ["utf-8-sig"]
    elif b"\x00" in raw:  # UTF-16 without a BOM: every ASCII character has a zero byte
        tried = ["utf-16-le" if raw[1::2].count(0) > raw[::2].count(0) else "utf-16-be"]
    else:
        tried = ["utf-8", "cp949"]
    for enc in tried:
        try:
            text = raw.decode(enc).removeprefix("\ufeff")
        except (UnicodeDecodeError, LookupError):
            continue
        if not encoding and _garbled(text):
            continue
        if not text.strip():  # e.g. only the BOM that Excel writes
            raise ValueError(f"{name} is empty")
        return text
    raise ValueError(f"cannot read {name} as text in {' or '.join(tried)}; save it again as 'CSV UTF-8' "
                     f"(Excel: File > Save As) or pass the right encoding=..., e.g. encoding='cp949'")


def _garbled(text: str) -> bool:
    """Over 1% control, unassigned or private-use characters (or stray BOMs): the wrong encoding."""
    sample = text[:10_000]
    odd = sum(ch == "\ufeff" or (ch not in "\t\r\n" and unicodedata.category(ch) in ("Cc", "Cn", "Co", "Cs"))
              for ch in sample)
    return odd > len(sample) / 100


def _sniff_delimiter(text: str, name: str) -> str:
    """Tab, comma, semicolon or ``|``: the one that splits the header into two or more
    columns and gives the most of the first 100 rows as many fields (quotes respected)."""
    best, best_share = None, 0.0
    for delimiter in "\t,;|":  # on a tie the earlier one wins
        try:
            reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
            rows = [row for row in itertools.islice(reader, 100) if row]
        except csv.Error:  # e.g. a quote that never closes under the wrong delimiter
            continue
        width = len(rows[0])
        share = sum(len(row) == width for row in rows) / len(rows)
        if width >= 2 and share > best_share:
            best, best_share = delimiter, share
    if best is None:
        first_line = text.strip().splitlines()[0][:80]
        raise ValueError(f"{name}: cannot find two columns (tried tab, comma, semicolon and |; first line: "
                         f"{first_line!r}); save it with the Korean and the English text in two columns of "
                         f"a spreadsheet, as CSV or Excel Workbook (.xlsx)")
    return best


def _delimited(text: str, name: str) -> list[dict]:
    """Rows of delimited text as dicts keyed by the header row; empty cells become None."""
    delimiter = _sniff_delimiter(text, name)
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    header = next(row for row in reader if row)
    records = []
    try:
        for row in reader:
            if len(row) > len(header) and any(row[len(header):]):  # empty trailing cells are harmless
                raise ValueError(f"{name} line {reader.line_num} has {len(row)} cells but the header has "
                                 f"{len(header)}; put cells that contain {delimiter!r} in double quotes, as "
                                 f"spreadsheet programs do when they save CSV")
            if row:
                records.append({column: cell or None for column, cell in zip(header, row)})
    except csv.Error as error:  # e.g. a double quote that is never closed swallows the rest of the file
        raise ValueError(f"{name} line {reader.line_num}: {error}; check that every quoted cell "
                         f"ends with a double quote") from None
    return records


def _pick_sheet(sheets: dict, sheet: str | int | None, ko_col: str | None, en_col: str | None,
                name: str) -> list[dict]:
    """Records of ``sheet``, else of the only sheet, else of the first sheet with Korean/English columns."""
    names = list(sheets)
    listed = ", ".join(map(repr, names))
    if sheet is not None:
        key = names[sheet] if isinstance(sheet, int) and 0 <= sheet < len(names) else sheet
        if key not in sheets:
            raise ValueError(f"{name} has no sheet {sheet!r} (sheets: {listed}); pass one of them as sheet=")
        return sheets[key]
    if len(names) == 1:
        return sheets[names[0]]
    for records in sheets.values():  # e.g. a cover or notes sheet comes first
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # load_pairs warns again about the sheet it uses
                _pick_columns(records, ko_col, en_col, where=name)
        except ValueError:
            continue
        return records
    raise ValueError(f"{name}: no sheet has Korean/English columns (sheets: {listed}); pass the sheet with the "
                     f"pairs as sheet='...' (and ko_col=/en_col= if its column names are not recognised)")


def _read_file(path: Path, encoding: str | None, *, sheet: str | int | None = None, ko_col: str | None = None,
               en_col: str | None = None) -> list[dict]:
    import pandas as pd

    suffix = path.suffix.lower()
    if suffix in TEXT_TYPES:
        records = _delimited(_decode(path.read_bytes(), path.name, encoding), path.name)
    elif suffix == ".xlsx":
        if path.stat().st_size == 0:
            raise ValueError(f"{path.name} is empty")
        sheets = {name: frame.to_dict("records") for name, frame in
                  pd.read_excel(path, sheet_name=None, dtype=str).items()}
        records = _pick_sheet(sheets, sheet, ko_col, en_col, path.name)
    elif suffix == ".parquet":
        records = pd.read_parquet(path).to_dict("records")
    else:
        text = _decode(path.read_bytes(), path.name, encoding)
        if suffix == ".jsonl":
            records = _json_lines(text, path.name)
        else:
            try:
                data = json.loads(text)
            except json.JSONDecodeError as error:
                try:  # a .json file that holds one record per line (JSON Lines) is common
                    data = _json_lines(text, path.name)
                except ValueError:
                    raise ValueError(f"{path.name} is not valid JSON (line {error.lineno}, column {error.colno}: "
                                     f"{error.msg}) and not JSON Lines either") from None
            if isinstance(data, dict):  # e.g. {"data": [...]} as some AI Hub JSON files ship
                lists = [v for v in data.values() if isinstance(v, list)]
                if len(lists) != 1:
                    raise ValueError(f"{path.name}: expected a list of records or one list inside an object")
                data = lists[0]
            records = data
    records = [_flatten(r) for r in records]
    if not records:
        raise ValueError(f"{path.name} has a header but no rows")
    return records


def _json_lines(text: str, name: str) -> list[dict]:
    """One JSON object per non-empty line; a bad line is named in the error."""
    records = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            raise ValueError(f"{name} line {number} is not valid JSON ({error.msg})") from None
        if not isinstance(record, dict):
            raise ValueError(f"{name} line {number} is not a JSON object with ko/en fields")
        records.append(record)
    return records


def _flatten(record: dict, prefix: str = "") -> dict:
    """``{"translation": {"ko": .., "en": ..}}`` becomes ``{"translation.ko": .., "translation.en": ..}``."""
    flat: dict = {}
    for key, value in record.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(_flatten(value, name + "."))
        else:
            flat[name] = value
    return flat


def _pick_columns(records: list[dict], ko_col: str | None, en_col: str | None, where: str) -> tuple[str, str]:
    columns = list(dict.fromkeys(k for r in records[:50] for k in r))
    sample = records[:500]
    if ko_col or en_col:
        missing = [c for c in (ko_col, en_col) if c is None or c not in columns]
        if missing:
            raise ValueError(f"{where}: pass both ko_col= and en_col= naming existing columns "
                             f"(columns: {', '.join(map(str, columns))})")
        ko_share, en_share = (hangul_share(r.get(c) for r in sample) for c in (ko_col, en_col))
        if en_share > ko_share:
            raise ValueError(f"{where}: ko_col={ko_col!r} has less Hangul ({ko_share:.0%}) than "
                             f"en_col={en_col!r} ({en_share:.0%}); the columns look swapped")
        return ko_col, en_col
    lower = {str(c).strip().lower(): c for c in columns}
    for ko_name, en_name in KNOWN_COLUMNS:
        if ko_name in lower and en_name in lower:
            ko, en = lower[ko_name], lower[en_name]
            ko_share, en_share = (hangul_share(r.get(c) for r in sample) for c in (ko, en))
            if max(ko_share, en_share) < 0.3:
                raise ValueError(f"{where}: neither {ko!r} ({ko_share:.0%}) nor {en!r} ({en_share:.0%}) "
                                 f"looks Korean (share of rows with Hangul); pass ko_col=/en_col=")
            if en_share > ko_share:
                warnings.warn(f"{where}: column {en!r} holds the Korean text ({en_share:.0%} Hangul) and "
                              f"{ko!r} the English; using them swapped", stacklevel=3)
                ko, en = en, ko
            return ko, en
    raise ValueError(f"{where}: no Korean/English column pair found (columns: {', '.join(map(str, columns))}); "
                     f"pass ko_col=... and en_col=...")


def _from_hub(dataset_id: str, config: str | None, split: str, limit: int | None, seed: int) -> list[dict]:
    from datasets import load_dataset

    try:
        if limit is None:
            ds = load_dataset(dataset_id, config, split=split)
        else:  # stream and shuffle in a buffer: a million-pair set is never loaded whole
            ds = load_dataset(dataset_id, config, split=split, streaming=True)
            ds = ds.shuffle(seed=seed, buffer_size=10_000).take(limit)
    except Exception as err:
        raise ValueError(f"could not load hub dataset {dataset_id!r} (config {config!r}, split {split!r}): "
                         f"{err}. Offline? Use a local file or 'bundled'.") from err
    return [_flatten(r) for r in ds]


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
