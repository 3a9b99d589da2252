"""Reading pair files as a learner saves them: delimited text in any common encoding, Excel, JSON, Parquet, the hub.

``kdutils.data.load_pairs`` calls these. Encodings (UTF-8 with or without BOM, UTF-16, CP949/EUC-KR) and
delimiters are detected from the content, by hand and on purpose: the files come from a short list of
programs (Excel's "CSV UTF-8", "Unicode Text" and plain "CSV" on Korean Windows), which a BOM, zero bytes
and a strict UTF-8 attempt tell apart, so a general detection library would add a dependency and guesses.
"""

from __future__ import annotations

import csv
import io
import itertools
import json
import re
import unicodedata
import warnings
from pathlib import Path
from typing import Any, Iterable

TEXT_TYPES = (".csv", ".tsv", ".tab", ".txt")  # delimiter and encoding are detected from the content
FILE_TYPES = TEXT_TYPES + (".xlsx", ".json", ".jsonl", ".parquet")

# (Korean column, English column), compared case-insensitively
KNOWN_COLUMNS = [
    ("ko", "en"), ("원문", "번역문"), ("korean", "english"), ("korea", "english"), ("kor", "eng"),
    ("non_english", "english"), ("translation.ko", "translation.en"), ("한국어", "영어"), ("src", "tgt"),
]
_HANGUL = re.compile(r"[\uac00-\ud7a3\u1100-\u11ff\u3130-\u318f]")


def hangul_share(texts: Iterable[str | None]) -> float:
    """Share of non-empty texts that contain at least one Hangul character."""
    texts = [t for t in texts if isinstance(t, str) and t.strip()]
    return sum(bool(_HANGUL.search(t)) for t in texts) / len(texts) if texts else 0.0


def looks_like_path(source: str) -> bool:
    return source.startswith((".", "/", "~")) or source.lower().endswith(FILE_TYPES) or "\\" in source


# what to do with files that spreadsheet programs save but load_pairs does not read
_RESAVE = {
    ".xls": "open it in Excel and save it as an Excel Workbook (.xlsx)",
    ".ods": "save it as an Excel Workbook (.xlsx) or as CSV",
    ".numbers": "export it from Numbers as Excel (.xlsx) or CSV",
}


def data_files(path: Path) -> list[Path]:
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


def cell_text(value: Any) -> str | None:
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
                pick_columns(records, ko_col, en_col, where=name)
        except ValueError:
            continue
        return records
    raise ValueError(f"{name}: no sheet has Korean/English columns (sheets: {listed}); pass the sheet with the "
                     f"pairs as sheet='...' (and ko_col=/en_col= if its column names are not recognised)")


def read_file(path: Path, encoding: str | None, *, sheet: str | int | None = None, ko_col: str | None = None,
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


def pick_columns(records: list[dict], ko_col: str | None, en_col: str | None, where: str) -> tuple[str, str]:
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


def read_hub(dataset_id: str, config: str | None, split: str, limit: int | None, seed: int) -> list[dict]:
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
