"""kdutils.data: loading every source format, column detection, cleaning, splits and the saved copy.

Every fixture file is written into ``tmp_path`` by the helpers below; the
tokenizers are the tiny offline ones from ``kdutils.tiny``.
"""

import codecs
import csv
import io
import json
import unicodedata
from pathlib import Path

import datasets
import pandas as pd
import pytest
from datasets import Dataset

import kdutils
from kdutils import data
from kdutils.tiny import resolve

PAIRS = [
    ("고양이가 창가에서 잔다", "A cat sleeps by the window"),
    ("빨간 우산을 든 소녀", "A girl holding a red umbrella"),
    ("눈 덮인 산 위의 오두막", "A cabin on a snowy mountain"),
]
KO = [ko for ko, _ in PAIRS]
EN = [en for _, en in PAIRS]


# ------------------------------------------------------------------ helpers
def write_csv(path, header=("ko", "en"), rows=PAIRS, sep=",", encoding="utf-8"):
    lines = [sep.join(header)] + [sep.join(row) for row in rows]
    path.write_bytes(("\n".join(lines) + "\n").encode(encoding))
    return path


def write_json(path, obj):
    path.write_text(json.dumps(obj, ensure_ascii=False), encoding="utf-8")
    return path


def write_jsonl(path, records):
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
    return path


def records(ko_name="ko", en_name="en", rows=PAIRS):
    return [{ko_name: ko, en_name: en} for ko, en in rows]


def pairs_of(ds):
    return list(zip(ds["ko"], ds["en"]))


def dataset(rows, **extra_columns):
    """A Dataset with ko/en (and optional extra columns) as load_pairs returns it."""
    return Dataset.from_dict({"ko": [r[0] for r in rows], "en": [r[1] for r in rows], **extra_columns})


def numbered(n):
    return [(f"고양이 {i}번이 잔다", f"cat number {i} sleeps") for i in range(n)]


def assert_counted(report):
    assert report.rows_in == report.rows_out + sum(report.dropped.values())


@pytest.fixture(scope="module")
def teacher_tokenizer():
    from transformers import CLIPTokenizer

    return CLIPTokenizer.from_pretrained(resolve("tiny/stable-diffusion"), subfolder="tokenizer")


@pytest.fixture(scope="module")
def student_tokenizer():
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(resolve("tiny/roberta-small"))


# ----------------------------------------------------------- source formats
def test_csv_utf8(tmp_path):
    ds = data.load_pairs(write_csv(tmp_path / "pairs.csv"))
    assert pairs_of(ds) == PAIRS
    assert set(ds["source"]) == {"pairs.csv"}


def test_csv_with_bom(tmp_path):
    ds = data.load_pairs(write_csv(tmp_path / "pairs.csv", encoding="utf-8-sig"))
    assert ds.column_names[:2] == ["ko", "en"]
    assert pairs_of(ds) == PAIRS


def test_csv_in_cp949_comes_back_exactly(tmp_path):
    ds = data.load_pairs(write_csv(tmp_path / "excel.csv", encoding="cp949"))
    assert list(ds["ko"]) == KO


def test_tsv(tmp_path):
    rows = [("쉼표, 가 들어간 문장", "a sentence, with a comma")] + PAIRS
    ds = data.load_pairs(write_csv(tmp_path / "pairs.tsv", rows=rows, sep="\t"))
    assert pairs_of(ds) == rows


def test_xlsx_with_ai_hub_columns(tmp_path):
    frame = pd.DataFrame({"SID": [1, 2, 3], "원문": KO, "번역문": EN})
    frame.to_excel(tmp_path / "aihub.xlsx", index=False)
    ds = data.load_pairs(tmp_path / "aihub.xlsx")
    assert pairs_of(ds) == PAIRS


def test_json_list(tmp_path):
    ds = data.load_pairs(write_json(tmp_path / "pairs.json", records()))
    assert pairs_of(ds) == PAIRS


def test_json_data_object(tmp_path):
    ds = data.load_pairs(write_json(tmp_path / "pairs.json", {"version": "1.0", "data": records()}))
    assert pairs_of(ds) == PAIRS


def test_jsonl_with_nested_translation(tmp_path):
    rows = [{"id": i, "translation": {"en": en, "ko": ko}} for i, (ko, en) in enumerate(PAIRS)]
    ds = data.load_pairs(write_jsonl(tmp_path / "opus.jsonl", rows))
    assert pairs_of(ds) == PAIRS


def test_json_lines_saved_as_json_load_and_broken_json_is_named(tmp_path):
    lines = write_jsonl(tmp_path / "lines.jsonl", records())
    as_json = tmp_path / "lines.json"
    as_json.write_bytes(lines.read_bytes())
    assert pairs_of(data.load_pairs(as_json)) == PAIRS
    broken = tmp_path / "broken.json"
    broken.write_text('[{"ko": "사과", "en": "an apple"},\n {"ko": "배" "en": "a pear"}]', encoding="utf-8")
    with pytest.raises(ValueError, match=r"broken.json is not valid JSON \(line 2"):
        data.load_pairs(broken)
    bad_line = tmp_path / "bad.jsonl"
    bad_line.write_text('{"ko": "사과", "en": "an apple"}\n{"ko": "배", "en": \n', encoding="utf-8")
    with pytest.raises(ValueError, match="bad.jsonl line 2 is not valid JSON"):
        data.load_pairs(bad_line)


def test_parquet(tmp_path):
    pd.DataFrame(records()).to_parquet(tmp_path / "pairs.parquet")
    assert pairs_of(data.load_pairs(tmp_path / "pairs.parquet")) == PAIRS


def test_folder_concatenates_files_and_names_the_source(tmp_path):
    write_csv(tmp_path / "a.csv", rows=PAIRS[:1])
    write_jsonl(tmp_path / "b.jsonl", records(rows=PAIRS[1:2]))
    pd.DataFrame(records("원문", "번역문", PAIRS[2:])).to_excel(tmp_path / "c.xlsx", index=False)
    (tmp_path / "README.md").write_text("not data")
    ds = data.load_pairs(tmp_path)
    assert pairs_of(ds) == PAIRS
    assert list(ds["source"]) == ["a.csv", "b.jsonl", "c.xlsx"]


def test_folder_skips_hidden_folders_such_as_notebook_checkpoints(tmp_path):
    write_csv(tmp_path / "pairs.csv")
    (tmp_path / ".ipynb_checkpoints").mkdir()
    write_csv(tmp_path / ".ipynb_checkpoints" / "pairs-checkpoint.csv")
    assert len(data.load_pairs(tmp_path)) == len(PAIRS)


def test_bundled():
    ds = data.load_pairs("bundled")
    assert len(ds) == 733
    assert {"ko", "en", "split"} <= set(ds.column_names)
    assert data.hangul_share(ds["ko"]) == 1.0 and data.hangul_share(ds["en"]) == 0.0


# --------------------------------------------------------- column detection
@pytest.mark.parametrize("ko_name, en_name", [
    ("ko", "en"), ("korean", "english"), ("Korean", "English"), ("korea", "english"),
    ("non_english", "english"), ("원문", "번역문"),
])
def test_known_column_names(tmp_path, ko_name, en_name):
    rows = [{"id": i, **r} for i, r in enumerate(records(ko_name, en_name))]
    assert pairs_of(data.load_pairs(write_json(tmp_path / "pairs.json", rows))) == PAIRS


def test_flattened_translation_columns(tmp_path):
    rows = [{"translation.ko": ko, "translation.en": en} for ko, en in PAIRS]
    assert pairs_of(data.load_pairs(write_json(tmp_path / "pairs.json", rows))) == PAIRS


def test_swapped_columns_are_swapped_back_with_a_warning(tmp_path):
    path = write_csv(tmp_path / "swapped.csv", header=("ko", "en"), rows=[(en, ko) for ko, en in PAIRS])
    with pytest.warns(UserWarning, match="holds the Korean text"):
        ds = data.load_pairs(path)
    assert pairs_of(ds) == PAIRS


def test_explicit_columns(tmp_path):
    path = write_csv(tmp_path / "pairs.csv", header=("text_a", "text_b"))
    assert pairs_of(data.load_pairs(path, ko_col="text_a", en_col="text_b")) == PAIRS


def test_explicit_but_swapped_columns_raise(tmp_path):
    path = write_csv(tmp_path / "pairs.csv", header=("text_a", "text_b"))
    with pytest.raises(ValueError, match=r"ko_col='text_b'.*look swapped"):
        data.load_pairs(path, ko_col="text_b", en_col="text_a")


def test_explicit_column_that_does_not_exist_raises(tmp_path):
    path = write_csv(tmp_path / "pairs.csv")
    with pytest.raises(ValueError, match=r"columns: ko, en"):
        data.load_pairs(path, ko_col="korean", en_col="en")


# ---------------------------------------------- bad input fails with a reason
def test_missing_path(tmp_path):
    missing = tmp_path / "nowhere.csv"
    with pytest.raises(FileNotFoundError, match="nowhere.csv"):
        data.load_pairs(missing)


def test_empty_file(tmp_path):
    (tmp_path / "empty.csv").write_bytes(b"")
    with pytest.raises(ValueError, match="empty.csv is empty"):
        data.load_pairs(tmp_path / "empty.csv")


def test_file_with_only_a_bom_is_empty(tmp_path):
    (tmp_path / "bom.csv").write_bytes(b"\xef\xbb\xbf\r\n")
    with pytest.raises(ValueError, match="bom.csv is empty"):
        data.load_pairs(tmp_path / "bom.csv")


@pytest.mark.parametrize("name", ["header.csv", "header.xlsx", "header.json"])
def test_header_only_file(tmp_path, name):
    path = tmp_path / name
    if name.endswith(".csv"):
        write_csv(path, rows=[])
    elif name.endswith(".xlsx"):
        pd.DataFrame(columns=["SID", "원문", "번역문"]).to_excel(path, index=False)
    else:
        write_json(path, {"data": []})
    with pytest.raises(ValueError, match="no rows"):
        data.load_pairs(path)


def test_unknown_columns(tmp_path):
    path = write_csv(tmp_path / "pairs.csv", header=("sentence", "caption"))
    with pytest.raises(ValueError, match=r"columns: sentence, caption.*ko_col="):
        data.load_pairs(path)


def test_unreadable_encoding(tmp_path):
    (tmp_path / "utf16ish.csv").write_bytes(b"\xff\xfe\xfa\xfb\xfc\xfd" * 50)
    with pytest.raises(ValueError, match="encoding"):
        data.load_pairs(tmp_path / "utf16ish.csv")


def test_unsupported_extension(tmp_path):
    write_csv(tmp_path / "pairs.pdf")
    with pytest.raises(ValueError, match=r"unsupported file type '\.pdf'; use one of .*\.csv"):
        data.load_pairs(tmp_path / "pairs.pdf")


def test_cleaning_everything_away_raises():
    with pytest.raises(ValueError, match="removed all 2 pairs"):
        data.clean_pairs(dataset([("", "a"), ("가", None)]))


# ----------------------------------------------------------------- cleaning
def test_nfd_hangul_becomes_nfc_and_is_counted():
    ko = unicodedata.normalize("NFD", KO[0])
    assert ko != KO[0]
    out, report = data.clean_pairs(dataset([(ko, EN[0])] + PAIRS[1:]))
    assert list(out["ko"]) == KO
    assert report.fixed["unicode NFC"] == 1


def test_zero_width_and_double_spaces_are_removed_and_counted():
    rows = [("고양이가\u200b 창가에서  잔다", " A cat sleeps\u200b by the  window\ufeff")] + PAIRS[1:]
    out, report = data.clean_pairs(dataset(rows))
    assert pairs_of(out) == PAIRS
    assert report.fixed["whitespace / zero-width"] == 1


def test_normalize_text_is_nfc_even_around_zero_width_characters():
    decomposed = "\u1112\u200b\u1161\u11ab"  # 한 in jamo with a zero-width space inside
    assert data.normalize_text(decomposed) == "한"


def test_null_and_empty_sides_are_dropped_and_counted():
    rows = PAIRS + [(None, "a dog"), ("개", None), ("   ", "a dog"), ("개", "\u200b")]
    out, report = data.clean_pairs(dataset(rows))
    assert pairs_of(out) == PAIRS
    assert report.dropped == {"null or empty": 4}
    assert_counted(report)


def test_duplicates_after_normalisation_are_dropped_and_counted():
    rows = PAIRS + [(unicodedata.normalize("NFD", KO[0]), EN[0] + "  "), PAIRS[1]]
    out, report = data.clean_pairs(dataset(rows))
    assert pairs_of(out) == PAIRS
    assert report.dropped == {"duplicate": 2}
    assert_counted(report)


def test_long_english_is_dropped_under_the_teacher_tokenizer(teacher_tokenizer):
    long_en = "a red cat on a blue sofa " * 20
    assert data.token_lengths(teacher_tokenizer, [long_en])[0] > 77
    out, report = data.clean_pairs(dataset(PAIRS + [("긴 문장", long_en)]), teacher_tokenizer=teacher_tokenizer)
    assert pairs_of(out) == PAIRS
    assert report.dropped["en over 77 teacher tokens"] == 1
    assert_counted(report)


def test_long_korean_is_dropped_under_the_student_tokenizer(teacher_tokenizer, student_tokenizer):
    long_ko = "빨간 고양이가 파란 소파 위에 앉아 있다 " * 20
    out, report = data.clean_pairs(dataset(PAIRS + [(long_ko, "a cat")]), teacher_tokenizer=teacher_tokenizer,
                                   student_tokenizer=student_tokenizer)
    assert pairs_of(out) == PAIRS
    assert report.dropped == {"en over 77 teacher tokens": 0, "over 77 student tokens": 1}
    assert_counted(report)


def test_long_english_counts_under_the_student_tokenizer_too(student_tokenizer):
    out, report = data.clean_pairs(dataset(PAIRS + [("고양이", "a red cat on a blue sofa " * 20)]),
                                   student_tokenizer=student_tokenizer)
    assert len(out) == len(PAIRS)
    assert report.dropped["over 77 student tokens"] == 1


def test_max_length_is_respected(teacher_tokenizer):
    lengths = data.token_lengths(teacher_tokenizer, EN)
    out, report = data.clean_pairs(dataset(PAIRS), teacher_tokenizer=teacher_tokenizer, max_length=min(lengths))
    assert len(out) == sum(n <= min(lengths) for n in lengths)
    assert report.dropped[f"en over {min(lengths)} teacher tokens"] == len(PAIRS) - len(out)


def test_length_ratio_outliers_are_dropped():
    outlier = ("고양이 " * 40, "a cat")
    out, report = data.clean_pairs(dataset(numbered(10) + [outlier]), max_ratio=3.0)
    assert pairs_of(out) == numbered(10)
    assert report.dropped == {"length ratio over 3.0x median": 1}


def test_every_row_is_counted_and_other_columns_follow_their_rows():
    rows = PAIRS + [("", "x"), PAIRS[0], ("개", None), ("고양이 " * 40, "a cat")]
    ds = dataset(rows, id=list(range(len(rows))))
    out, report = data.clean_pairs(ds, max_ratio=3.0)
    assert_counted(report)
    assert report.rows_in == len(rows) and report.rows_out == len(out) == len(PAIRS)
    assert out.column_names == ["ko", "en", "id"]
    assert list(out["id"]) == [0, 1, 2]


def test_cleaning_a_dataset_with_only_ko_and_en():
    out, _ = data.clean_pairs(Dataset.from_dict({"ko": KO, "en": EN}))
    assert pairs_of(out) == PAIRS


# ------------------------------------------------------------------- splits
def split_ids(splits):
    return {name: list(splits[name]["id"]) for name in data.SPLITS}


def test_same_seed_gives_the_same_split():
    ds = dataset(numbered(200), id=list(range(200)))
    assert split_ids(data.split_pairs(ds, seed=1)) == split_ids(data.split_pairs(ds, seed=1))


def test_different_seed_gives_a_different_split():
    ds = dataset(numbered(200), id=list(range(200)))
    assert split_ids(data.split_pairs(ds, seed=1)) != split_ids(data.split_pairs(ds, seed=2))


def test_splits_are_disjoint_and_cover_every_row():
    ds = dataset(numbered(200), id=list(range(200)))
    ids = split_ids(data.split_pairs(ds, seed=0))
    assert sorted(ids["train"] + ids["val"] + ids["test"]) == list(range(200))
    assert len(ids["val"]) == len(ids["test"]) == 10


def test_eval_splits_are_capped_by_max_eval():
    splits = data.split_pairs(dataset(numbered(400)), val_fraction=0.2, test_fraction=0.2, max_eval=15)
    assert (len(splits["train"]), len(splits["val"]), len(splits["test"])) == (370, 15, 15)


def test_too_few_pairs_to_split_raise():
    with pytest.raises(ValueError, match="too few"):
        data.split_pairs(dataset(numbered(2)))


def test_bundled_keeps_its_fixed_split():
    splits = data.split_pairs(data.load_pairs("bundled"), seed=123)
    assert {name: len(part) for name, part in splits.items()} == {"train": 596, "val": 69, "test": 68}
    assert "split" not in splits["train"].column_names


def test_unknown_split_labels_raise_instead_of_losing_rows():
    ds = dataset(numbered(4), split=["train", "val", "test", "validation"])
    with pytest.raises(ValueError, match="validation"):
        data.split_pairs(ds)


def test_fingerprint_changes_with_the_pairs():
    splits = data.split_pairs(dataset(numbered(40)))
    other = data.split_pairs(dataset(numbered(40)), seed=5)
    assert data.fingerprint(splits) == data.fingerprint(data.split_pairs(dataset(numbered(40))))
    assert data.fingerprint(splits) != data.fingerprint(other)


# ----------------------------------------------------------- prepare_splits
@pytest.fixture
def tiny_cfg(tmp_path):
    """The tiny profile on the bundled corpus alone (its default, "toyworld", adds the toy world's captions)."""
    return kdutils.get_profile("tiny", output_dir=str(tmp_path), data_source="bundled")


def read_info(cfg):
    return json.loads((data.splits_dir(cfg) / "info.json").read_text())


def test_prepare_splits_saves_the_bundled_splits(tiny_cfg, no_network):
    splits = data.prepare_splits(tiny_cfg)
    assert (data.splits_dir(tiny_cfg) / "info.json").exists()
    assert {name: len(part) for name, part in splits.items()} == {"train": 596, "val": 69, "test": 68}


def test_prepare_splits_loads_the_saved_copy(tiny_cfg, no_network, monkeypatch):
    first = data.prepare_splits(tiny_cfg)
    monkeypatch.setattr(data, "load_pairs", lambda *a, **k: pytest.fail("rebuilt instead of loading"))
    second = data.prepare_splits(tiny_cfg)
    assert data.fingerprint(second) == data.fingerprint(first) == read_info(tiny_cfg)["fingerprint"]


def test_info_json_holds_sizes_and_the_cleaning_report(tiny_cfg, no_network):
    splits = data.prepare_splits(tiny_cfg)
    info = read_info(tiny_cfg)
    assert info["sizes"] == {name: len(part) for name, part in splits.items()}
    cleaning = info["cleaning"]
    assert cleaning["rows_in"] == 733
    assert cleaning["rows_out"] == sum(info["sizes"].values())
    assert cleaning["rows_in"] == cleaning["rows_out"] + sum(cleaning["dropped"].values())
    assert set(cleaning["fixed"]) == {"unicode NFC", "whitespace / zero-width"}


def test_prepare_splits_rebuilds_when_max_length_changes(tiny_cfg, no_network):
    data.prepare_splits(tiny_cfg)
    shorter = tiny_cfg.replace(max_length=12)
    splits = data.prepare_splits(shorter)
    info = read_info(shorter)
    assert info["max_length"] == 12
    assert sum(len(part) for part in splits.values()) == info["cleaning"]["rows_out"] < 733


# ------------------------------------------------------- hub, without network
def fake_hub(monkeypatch, n=50):
    """Replace datasets.load_dataset; return the list of calls it receives."""
    calls = []

    def rows():
        for i in range(n):
            yield {"id": str(i), "translation": {"en": f"sentence {i}", "ko": f"문장 {i}"}}

    def load_dataset(path, name=None, **kwargs):
        calls.append({"path": path, "name": name, **kwargs})
        if kwargs.get("streaming"):
            return datasets.IterableDataset.from_generator(rows)
        return Dataset.from_list(list(rows()))

    monkeypatch.setattr(datasets, "load_dataset", load_dataset)
    return calls


def test_hub_limit_gives_exactly_that_many_rows(monkeypatch, no_network):
    fake_hub(monkeypatch)
    ds = data.load_pairs("someone/en-ko-pairs", config="en-ko", limit=7)
    assert len(ds) == 7
    for ko, en in pairs_of(ds):
        assert ko.startswith("문장 ") and en.startswith("sentence ")
        assert ko.split()[1] == en.split()[1]
    assert set(ds["source"]) == {"someone/en-ko-pairs"}


def test_hub_limit_streams(monkeypatch, no_network):
    calls = fake_hub(monkeypatch)
    data.load_pairs("someone/en-ko-pairs", config="en-ko", limit=7)
    assert calls == [{"path": "someone/en-ko-pairs", "name": "en-ko", "split": "train", "streaming": True}]


def test_hub_without_limit_loads_everything(monkeypatch, no_network):
    calls = fake_hub(monkeypatch, n=30)
    ds = data.load_pairs("someone/en-ko-pairs", split="validation")
    assert len(ds) == 30
    assert "streaming" not in calls[0] and calls[0]["split"] == "validation"


def test_hub_failure_says_what_to_do(monkeypatch, no_network):
    def offline(*args, **kwargs):
        raise ConnectionError("no network")

    monkeypatch.setattr(datasets, "load_dataset", offline)
    with pytest.raises(ValueError, match="could not load hub dataset 'someone/en-ko-pairs'.*bundled"):
        data.load_pairs("someone/en-ko-pairs", limit=5)


# ------------------------------------ files as spreadsheet and office programs save them
# Cells with a delimiter, quotes or a line break inside, quoted as those programs quote them.
TRICKY = [("쉼표, 세미콜론; 파이프| 탭\t 모두", 'a "quoted" cell, with; every | delimiter'),
          ("줄바꿈이\n있는 셀", "a cell with\na line break")] + PAIRS


def write_export(path, sep, encoding, newline="\r\n", bom=b"", rows=TRICKY, quoting=csv.QUOTE_MINIMAL):
    buffer = io.StringIO()
    csv.writer(buffer, delimiter=sep, lineterminator=newline, quoting=quoting).writerows([("ko", "en"), *rows])
    path.write_bytes(bom + buffer.getvalue().encode(encoding))
    return path


@pytest.mark.parametrize("name, sep, encoding, newline, bom, quoting", [
    # Excel "Unicode Text" (saved as .txt: see test_excel_unicode_text_saved_as_txt_loads)
    ("unicode.tsv", "\t", "utf-16-le", "\r\n", codecs.BOM_UTF16_LE, csv.QUOTE_MINIMAL),
    ("excel.csv", ",", "cp949", "\r\n", b"", csv.QUOTE_MINIMAL),  # Excel "CSV" on Korean Windows
    ("excel.csv", ",", "euc-kr", "\r\n", b"", csv.QUOTE_MINIMAL),  # older Korean tools
    ("excel.csv", ",", "utf-8", "\r\n", codecs.BOM_UTF8, csv.QUOTE_MINIMAL),  # Excel "CSV UTF-8"
    ("europe.csv", ";", "utf-8", "\r\n", codecs.BOM_UTF8, csv.QUOTE_MINIMAL),  # Excel in a decimal-comma locale
    ("numbers.csv", ",", "utf-8", "\n", b"", csv.QUOTE_MINIMAL),  # Numbers (macOS): UTF-8 without BOM
    ("numbers.csv", ";", "utf-8", "\n", b"", csv.QUOTE_MINIMAL),  # Numbers in a decimal-comma locale
    ("calc.csv", ",", "utf-8", "\n", b"", csv.QUOTE_ALL),  # LibreOffice Calc, "quote all text cells"
    ("calc.tab", "\t", "utf-8", "\n", b"", csv.QUOTE_MINIMAL),  # LibreOffice Calc, tab-separated
    ("pipes.csv", "|", "utf-8", "\n", b"", csv.QUOTE_MINIMAL),  # a |-separated dump, named .csv
    ("big-endian.tsv", "\t", "utf-16-be", "\r\n", codecs.BOM_UTF16_BE, csv.QUOTE_MINIMAL),
    ("no-bom.tsv", "\t", "utf-16-le", "\r\n", b"", csv.QUOTE_MINIMAL),  # UTF-16 without a BOM
], ids=["excel-unicode-text", "excel-csv-cp949", "euc-kr", "excel-csv-utf8", "excel-semicolon",
        "numbers", "numbers-semicolon", "libreoffice-quote-all", "libreoffice-tab", "pipe", "utf16-be",
        "utf16-le-no-bom"])
def test_exports_of_spreadsheet_programs_load(tmp_path, name, sep, encoding, newline, bom, quoting):
    path = write_export(tmp_path / name, sep, encoding, newline, bom, quoting=quoting)
    assert pairs_of(data.load_pairs(path)) == TRICKY


def test_the_delimiter_comes_from_the_content_not_the_extension(tmp_path):
    assert pairs_of(data.load_pairs(write_export(tmp_path / "tabs.csv", "\t", "utf-8"))) == TRICKY
    assert pairs_of(data.load_pairs(write_export(tmp_path / "commas.tsv", ",", "utf-8"))) == TRICKY


def test_excel_unicode_text_saved_as_txt_loads(tmp_path):
    path = write_export(tmp_path / "pairs.txt", "\t", "utf-16-le", bom=codecs.BOM_UTF16_LE)
    assert pairs_of(data.load_pairs(path)) == TRICKY
    assert pairs_of(data.load_pairs(str(path))) == TRICKY  # a string path too, not taken for a hub id


def test_explicit_encoding_wins(tmp_path):
    path = write_export(tmp_path / "pairs.csv", ",", "cp949")
    assert pairs_of(data.load_pairs(path, encoding="cp949")) == TRICKY


def write_workbook(path, sheets):
    """An .xlsx with openpyxl: ``sheets`` maps each sheet's title to its rows."""
    from openpyxl import Workbook

    book = Workbook()
    book.remove(book.active)
    for title, rows in sheets.items():
        sheet = book.create_sheet(title)
        for row in rows:
            sheet.append(list(row))
    book.save(path)
    return path


COVER = [("한국어-영어 문장 쌍 (수업용)",), ("만든 사람: 홍길동",), (), ("설명", "문장은 두 번째 시트에 있습니다")]


def test_xlsx_pairs_on_the_second_sheet_after_a_cover_sheet(tmp_path):
    rows = [("번호", "한국어", "영어")] + [(i, ko, en) for i, (ko, en) in enumerate(PAIRS, 1)]
    path = write_workbook(tmp_path / "book.xlsx", {"표지": COVER, "문장 쌍": rows})
    assert pairs_of(data.load_pairs(path)) == PAIRS
    assert pairs_of(data.load_pairs(path, sheet="문장 쌍")) == PAIRS
    assert pairs_of(data.load_pairs(path, sheet=1)) == PAIRS


def test_xlsx_without_a_recognisable_sheet_names_the_sheets(tmp_path):
    rows = [("문장", "번역")] + PAIRS
    path = write_workbook(tmp_path / "book.xlsx", {"Cover": COVER, "Data": rows})
    with pytest.raises(ValueError, match=r"no sheet has Korean/English columns \(sheets: 'Cover', 'Data'\); "
                                         r"pass the sheet with the pairs as sheet="):
        data.load_pairs(path)
    with pytest.raises(ValueError, match=r"has no sheet 'Pairs' \(sheets: 'Cover', 'Data'\)"):
        data.load_pairs(path, sheet="Pairs", ko_col="문장", en_col="번역")
    assert pairs_of(data.load_pairs(path, sheet="Data", ko_col="문장", en_col="번역")) == PAIRS


def test_a_workbook_renamed_to_csv_says_to_rename_it_back(tmp_path):
    path = write_workbook(tmp_path / "book.xlsx", {"Sheet1": [("ko", "en"), *PAIRS]})
    with pytest.raises(ValueError, match=r"book.csv is not text but a zip file.*rename it to \.xlsx"):
        data.load_pairs(path.rename(tmp_path / "book.csv"))


def test_text_in_an_unknown_encoding_says_how_to_save_it(tmp_path):
    path = tmp_path / "western.csv"
    path.write_bytes("ko,en\r\ncafé,coffee\r\n".encode("cp1252"))  # Excel "CSV" on a Western Windows
    with pytest.raises(ValueError, match=r"cannot read western.csv as text in utf-8 or cp949; "
                                         r"save it again as 'CSV UTF-8'.*encoding="):
        data.load_pairs(path)


def test_one_column_text_says_to_use_two_columns(tmp_path):
    path = tmp_path / "sentences.csv"
    path.write_text("고양이가 창가에서 잔다 - A cat sleeps by the window\n빨간 우산 - A red umbrella\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"sentences.csv: cannot find two columns.*two columns"):
        data.load_pairs(path)


def test_unquoted_delimiter_in_a_cell_says_to_quote_it(tmp_path):
    path = tmp_path / "hand-written.csv"
    path.write_text("ko,en\n고양이가 잔다,A cat, asleep\n빨간 우산,A red umbrella\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"hand-written.csv line 2 has 3 cells but the header has 2; "
                                         r"put cells that contain ',' in double quotes"):
        data.load_pairs(path)


def test_the_toy_world_source_adds_translated_captions_and_keeps_held_out_combinations_out_of_training():
    from kdutils import world

    ds = data.load_pairs("toyworld")
    rows = ds.to_list()
    assert sum(r["source"] == "bundled" for r in rows) == len(data.read_bundled())
    toy = [r for r in rows if r["source"] == "toyworld"]
    assert sum(r["split"] == "train" for r in toy) == data.TOYWORLD_PAIRS["train"]
    held_out_korean = {text for scene in world.all_scenes() if world.is_held_out(scene)
                       for text in world.every_caption(scene, "ko")}
    assert not {r["ko"] for r in toy if r["split"] == "train"} & held_out_korean
    for split in ("val", "test"):  # every held-out combination can be scored
        assert any(r["ko"] in held_out_korean for r in toy if r["split"] == split)
    # each English side is the translation of its Korean side, so the English word order follows from the Korean
    ko_to_en = {}
    for r in toy:
        assert ko_to_en.setdefault(r["ko"], r["en"]) == r["en"], r["ko"]


def test_the_toy_world_eval_prompts_say_what_each_image_should_show():
    from kdutils import world

    prompts = data.read_eval_prompts("toyworld")
    assert len(prompts) == 48 and sum(p["category"] == "held out" for p in prompts) == 24
    for p in prompts:
        scene = world.Scene.from_dict(p["scene"])
        assert (p["ko"], p["en"]) == (world.canonical_ko(scene), world.canonical_en(scene))
        assert (p["category"] == "held out") == world.is_held_out(scene)
    assert data.read_eval_prompts() == data.read_eval_prompts("bundled") and len(data.read_eval_prompts()) == 72


@pytest.mark.slow
def test_rebuilding_splits_that_a_process_holds_open_does_not_crash_it(tmp_path):
    """Before, save_to_disk rewrote the arrow files in place: a kernel reading the old splits read garbage
    (here a UnicodeDecodeError) or, where the new file is shorter, died of SIGBUS."""
    import subprocess
    import sys

    script = f"""
import kdutils
from kdutils import data
cfg = kdutils.get_profile("tiny", output_dir={str(tmp_path)!r}, data_source="bundled")
data.prepare_splits(cfg)  # built and saved
held = data.prepare_splits(cfg)  # loaded: memory-mapped from the saved files
assert held["train"].cache_files
data.prepare_splits(cfg.replace(num_pairs=200))  # other settings: smaller splits into the same folder
print(len(held["train"]), sum(len(ko) for ko in held["train"]["ko"]) > 0)
"""
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, f"exit {result.returncode}: {result.stderr[-2000:]}"
    assert result.stdout.split()[-2:] == ["596", "True"]
    assert sorted(p.name for p in (tmp_path / "data").iterdir()) == [".pairs.lock", "pairs"], "no leftovers"


def test_splits_are_swapped_in_whole_and_a_damaged_copy_is_built_again(tiny_cfg, no_network, monkeypatch):
    import os

    first = data.prepare_splits(tiny_cfg)
    folder = data.splits_dir(tiny_cfg)
    real = os.replace

    def killed_at_swap(src, dst):
        if Path(dst) == folder:
            raise KeyboardInterrupt  # stopped after parking the old copy, before the new one is in place
        return real(src, dst)

    monkeypatch.setattr(os, "replace", killed_at_swap)
    with pytest.raises(KeyboardInterrupt):
        data.save_splits(first, tiny_cfg)
    monkeypatch.setattr(os, "replace", real)
    assert not folder.exists()
    monkeypatch.setattr(data, "load_pairs", lambda *a, **k: pytest.fail("rebuilt instead of recovering"))
    assert data.fingerprint(data.prepare_splits(tiny_cfg)) == data.fingerprint(first)
    monkeypatch.undo()
    (folder / "info.json").write_text('{"source": "bund')
    with pytest.warns(UserWarning, match=r"info.json is damaged .*; building them again"):
        again = data.prepare_splits(tiny_cfg)
    assert data.fingerprint(again) == data.fingerprint(first) == read_info(tiny_cfg)["fingerprint"]
