"""Fast tests for the data reader (rnncli.data.dataset): no TensorFlow, no Keras model.

Three parts: golden files in tests/data/ (one odd input per file, its expected outcome in
<stem>.expected.json beside it), focused unit tests, and hypothesis property tests that
write rows with Python's own csv/json modules and read them back.
"""

from __future__ import annotations

import csv
import gzip
import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rnncli.core import errors
from rnncli.core.errors import DataError
from rnncli.data.columns import choose_columns, map_labels, normalize_label
from rnncli.data.dataset import Dataset, Table, load_dataset, read_table, split_dataset, write_split

DATA = Path(__file__).parent / "data"
SUFFIX = ".expected.json"

# --------------------------------------------------------------------------- golden files
#
# <stem>.expected.json holds one of:
#   {"error": "DataError", "match": "<regex searched in the message>"}
#   {"texts": N, "labels": {"<label name>": count, ...}}            the outcome, plus optional
#       "positive": name, "columns": [text, label], "skipped": {reason: n} (default {}),
#       "skipped_lines": {reason: [line, ...]}, "text_values": [exact texts, in order],
#       "notes_match": "<regex searched in the notes, one per line>"
# and optionally in both: "options": {keyword arguments for load_dataset},
#   "xfail": "<why: a known bug in rnncli/data/dataset.py>" (run as a strict xfail).


def _golden_cases():
    cases = []
    for expected_path in sorted(DATA.glob("*" + SUFFIX)):
        stem = expected_path.name[: -len(SUFFIX)]
        inputs = [p for p in DATA.glob(stem + ".*") if p != expected_path]
        assert len(inputs) == 1, f"{expected_path.name}: need one input file, found {inputs}"
        expected = json.loads(expected_path.read_text(encoding="utf-8"))
        marks = []
        if "xfail" in expected:
            marks.append(pytest.mark.xfail(strict=True, reason=expected["xfail"]))
        cases.append(pytest.param(inputs[0], expected, id=stem, marks=marks))
    return cases


GOLDEN = _golden_cases()


def test_golden_cases_were_found():
    assert len(GOLDEN) >= 30


@pytest.mark.parametrize(("path", "expected"), GOLDEN)
def test_golden(path: Path, expected: dict):
    options = expected.get("options", {})
    if "error" in expected:
        with pytest.raises(getattr(errors, expected["error"])) as info:
            load_dataset(path, **options)
        assert re.search(expected["match"], info.value.message), info.value.message
        return
    data = load_dataset(path, **options)
    assert len(data.texts) == expected["texts"] == len(data.labels)
    counts = {name: int(np.sum(data.labels == i)) for i, name in enumerate(data.label_names)}
    assert counts == expected["labels"]
    assert data.skipped == expected.get("skipped", {})
    if "positive" in expected:
        assert data.positive_label == expected["positive"]
    if "class_order" in expected:
        assert list(data.label_names) == expected["class_order"]
    if "columns" in expected:
        assert [data.text_col, data.label_col] == expected["columns"]
    if "skipped_lines" in expected:
        assert data.skipped_lines == expected["skipped_lines"]
    if "text_values" in expected:
        assert data.texts == expected["text_values"]
    if "notes_match" in expected:
        assert re.search(expected["notes_match"], "\n".join(data.notes)), data.notes


# --------------------------------------------------------------------------- labels


@pytest.mark.parametrize(("raw", "key"), [
    (" Pos ", "pos"), ("POSITIVE", "positive"), ("1", "1"), ("1.0", "1"), (" 1", "1"),
    ("+1", "1"), ("01", "1"), ("1e0", "1"), ("-1", "-1"), ("0.0", "0"), ("-0", "0"),
    ("0.5", "0.5"), ("nan", "nan"), ("Inf", "inf"), ("", ""),
])
def test_normalize_label(raw, key):
    assert normalize_label(raw) == key


P = Path("labels.csv")


def test_map_labels_guesses_positive_and_keeps_the_common_spelling():
    labels, names = map_labels(P, ["Pos", "neg", "Pos", " pos ", "NEG", "neg"])
    assert labels.dtype == np.int8
    assert labels.tolist() == [1, 0, 1, 1, 0, 0]
    assert names == ("neg", "Pos")


@pytest.mark.parametrize(("raw", "names", "labels"), [
    (["1", "0", "1.0", " 1"], ("0", "1"), [1, 0, 1, 1]),
    (["-1", "1", "+1"], ("-1", "1"), [0, 1, 1]),
    (["yes", "no"], ("no", "yes"), [1, 0]),
    (["false", "true"], ("false", "true"), [0, 1]),
    (["positive", "negative"], ("negative", "positive"), [1, 0]),
    (["正面", "负面", "正面"], ("负面", "正面"), [1, 0, 1]),
    (["消极", "积极"], ("消极", "积极"), [0, 1]),
    (["差评", "好评"], ("差评", "好评"), [0, 1]),
    (["負向", "正向"], ("負向", "正向"), [0, 1]),
    (["ポジティブ", "ネガティブ"], ("ネガティブ", "ポジティブ"), [1, 0]),
])
def test_map_labels_known_spellings(raw, names, labels):
    got, got_names = map_labels(P, raw)
    assert got_names == names
    assert got.tolist() == labels


def test_map_labels_unguessable_asks_for_positive_label():
    with pytest.raises(DataError, match=r"labels 'cat', 'dog' is positive.*--positive-label"):
        map_labels(P, ["cat", "dog"])


@pytest.mark.parametrize(("given", "names", "labels"), [
    ("cat", ("dog", "cat"), [1, 0, 1]),
    (" Dog ", ("cat", "dog"), [0, 1, 0]),
])
def test_map_labels_positive_label(given, names, labels):
    got, got_names = map_labels(P, ["cat", "dog", "cat"], positive_label=given)
    assert got_names == names
    assert got.tolist() == labels


def test_map_labels_positive_label_overrides_the_guess_and_matches_spelling():
    got, names = map_labels(P, ["1", "0", "1"], positive_label="0.0")
    assert names == ("1", "0")
    assert got.tolist() == [0, 1, 0]


def test_map_labels_positive_label_not_present():
    with pytest.raises(DataError, match=r"--positive-label 'bird' is not one of the labels"):
        map_labels(P, ["cat", "dog"], positive_label="bird")


@pytest.mark.parametrize(("raw", "match"), [
    (["pos", "pos"], r"only one label value \('pos' \(2 rows\)\)"),
    (["a", "b", "c", "a"], r"3 distinct values in 4 rows \('a' \(2 rows\), 'b' \(1 row\), "
                           r"'c' \(1 row\)\); so many values for so few rows look like a text "
                           r"or id column, not labels: check which column holds the labels "
                           r"\(--label-col\)"),
    ([str(i) for i in range(101)] * 3, r"101 distinct values in 303 rows \('0' \(3 rows\), "
                                       r"'1' \(3 rows\), .*, \.\.\.\); rnncli learns at most "
                                       r"100 classes, so this looks like a text or id column"),
])
def test_map_labels_refuses_one_value_or_a_column_of_ids(raw, match):
    with pytest.raises(DataError, match=match):
        map_labels(P, raw)


def test_map_labels_known_maps_by_spelling_insensitive_name():
    got, names = map_labels(P, ["POS", "neg", " pos"], known=("neg", "pos"))
    assert names == ("neg", "pos")
    assert got.tolist() == [1, 0, 1]
    got, names = map_labels(P, ["1.0", "0", " 1"], known=("0", "1"))
    assert names == ("0", "1")
    assert got.tolist() == [1, 0, 1]


def test_map_labels_known_accepts_a_single_class():
    got, _ = map_labels(P, ["pos", "pos"], known=("neg", "pos"))
    assert got.tolist() == [1, 1]


def test_map_labels_known_rejects_other_labels():
    with pytest.raises(DataError,
                       match=r"2 rows have labels that are not the model's \('neg', 'pos'\): "
                             r"'maybe' \(1 row\), 'meh' \(1 row\) \(first at line 3\)"):
        map_labels(P, ["pos", "maybe", "neg", "meh"], known=("neg", "pos"), lines=[2, 3, 4, 5])


def test_a_label_is_one_line_of_text(tmp_path):
    """A line break or tab inside a label would break one-line outputs; a zero-width
    space alone is an empty label; full-width letters spell the same label."""
    path = tmp_path / "x.csv"
    path.write_text('text,label\ngood,pos\nbad,"neg\nreally"\n', encoding="utf-8")
    with pytest.raises(DataError, match=r"line 3: the label 'neg\\nreally' holds a control "
                                         r"character \('\\n'\); a label must be one line"):
        load_dataset(path)
    path.write_text("text,label\ngood,pos\nbad,neg\nmeh,\u200b\nok,ｐｏｓ\n",
                    encoding="utf-8")
    data = load_dataset(path, positive_label="pos")
    assert data.skipped == {"empty label": 1} and data.label_names == ("neg", "pos")
    assert data.labels.tolist() == [1, 0, 1]
    path.write_text("text,label\ngood,pos\nbad,neg\u2028x\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"line 3: .* holds a control character"):
        load_dataset(path)


def test_unknown_labels_are_quoted_as_the_file_spells_them():
    with pytest.raises(DataError, match=r"3 rows have labels that are not the model's "
                                         r"\('neg', 'pos'\): 'Maybe' \(2 rows\), 'maybe' "
                                         r"\(1 row\) \(first at line 3\)"):
        map_labels(P, ["pos", "Maybe", "maybe", "Maybe"], known=("neg", "pos"),
                   lines=[2, 3, 4, 5])


def test_a_class_name_never_keeps_an_invisible_character():
    _, names = map_labels(P, ["pos\u200b", "pos\u200b", "neg", "pos"])
    assert names == ("neg", "pos")


def test_classes_an_older_rnncli_kept_apart_are_refused():
    """Names that now read as one class cannot be matched: a model error, not a guess."""
    from rnncli.core.errors import ModelError

    with pytest.raises(ModelError, match=r"differ only in case, width or invisible "
                                          r"characters.*retrain the model"):
        map_labels(P, ["a", "b"], known=("a", "a\u200b", "b"))


# --------------------------------------------------------------------------- columns


def _table(*header: str) -> Table:
    return Table(Path("t.csv"), list(header), rows=[], lines=[], fingerprint="")


def test_choose_columns_explicit():
    text, label, notes = choose_columns(_table("id", "body", "stars"), "body", "stars")
    assert (text, label, notes) == ("body", "stars", [])


def test_choose_columns_detected_case_insensitively():
    text, label, notes = choose_columns(_table("ID", "Review", "Sentiment"), None, None)
    assert (text, label) == ("Review", "Sentiment")
    assert any("text column: 'Review' (detected" in n for n in notes)
    assert any("label column: 'Sentiment' (detected" in n for n in notes)


@pytest.mark.parametrize(("header", "text", "label"), [
    (("评论", "标签"), "评论", "标签"),
    (("id", "内容", "情感"), "内容", "情感"),
    (("文本", "类别"), "文本", "类别"),
    (("评价", "极性"), "评价", "极性"),
    (("評論", "標籤"), "評論", "標籤"),
    (("レビュー", "ラベル"), "レビュー", "ラベル"),
])
def test_choose_columns_knows_chinese_and_japanese_names(header, text, label):
    assert choose_columns(_table(*header), None, None)[:2] == (text, label)


def test_choose_columns_without_label():
    assert choose_columns(_table("text"), None, None, need_label=False) == ("text", None, [
        "text column: 'text' (detected; set --text-col to override)"])


@pytest.mark.parametrize(("header", "text_col", "label_col", "match"), [
    (("a", "b"), "text", None, r"no column named 'text'; columns found: 'a', 'b'"),
    (("text", "b"), None, "label", r"no column named 'label'; columns found: 'text', 'b'"),
    (("id", "stars"), None, None,
     r"no text column found among 'id', 'stars'; name it with --text-col"),
    (("text", "stars"), None, None, r"no label column found among 'text', 'stars'; .*--label-col"),
    (("text", "label", "class"), None, None,
     r"more than one label column found among 'text', 'label', 'class'; name it with --label-col"),
    (("text", "label"), "text", "text", r"text and label cannot both be column 'text'"),
])
def test_choose_columns_errors_list_the_columns(header, text_col, label_col, match):
    with pytest.raises(DataError, match=match):
        choose_columns(_table(*header), text_col, label_col)


# --------------------------------------------------------------------------- splits


def _dataset(n_pos: int, n_neg: int) -> Dataset:
    texts = [f"pos {i}" for i in range(n_pos)] + [f"neg {i}" for i in range(n_neg)]
    labels = np.array([1] * n_pos + [0] * n_neg, dtype=np.int8)
    return Dataset(texts=texts, labels=labels, label_names=("neg", "pos"), text_col="text",
                   label_col="label", fingerprint="x", rows_read=len(texts), skipped={},
                   skipped_lines={})


def test_split_is_stratified_disjoint_and_complete():
    data = _dataset(60, 40)
    train, val, test = split_dataset(data, val_split=0.2, test_split=0.1, seed=7)
    per_class = [(int((p.labels == 1).sum()), int((p.labels == 0).sum()))
                 for p in (train, val, test)]
    assert per_class == [(42, 28), (12, 8), (6, 4)]
    sets = [set(part.texts) for part in (train, val, test)]
    assert not (sets[0] & sets[1] or sets[0] & sets[2] or sets[1] & sets[2])
    assert sets[0] | sets[1] | sets[2] == set(data.texts)
    for part in (train, val, test):
        assert part.label_names == data.label_names
        assert part.rows_read == len(part.texts)
        assert all(t.startswith("pos") == bool(y) for t, y in zip(part.texts, part.labels))


def test_split_is_reproducible_for_a_seed():
    data = _dataset(30, 30)
    first = split_dataset(data, val_split=0.2, test_split=0.2, seed=3)
    again = split_dataset(data, val_split=0.2, test_split=0.2, seed=3)
    other = split_dataset(data, val_split=0.2, test_split=0.2, seed=4)
    assert [p.texts for p in first] == [p.texts for p in again]
    assert [p.labels.tolist() for p in first] == [p.labels.tolist() for p in again]
    assert [p.texts for p in first] != [p.texts for p in other]


@pytest.mark.parametrize(("n_pos", "n_neg", "val", "test"), [
    (3, 3, 0.1, 0.1),     # rounds to empty validation/test sets
    (2, 50, 0.2, 0.2),    # a class with fewer than 3 rows
    (10, 10, 0.5, 0.5),   # nothing left to train on
])
def test_split_too_few_rows(n_pos, n_neg, val, test):
    with pytest.raises(DataError,
                       match=r"too few rows to split: \d+ rows .*--val-split/--test-split"):
        split_dataset(_dataset(n_pos, n_neg), val_split=val, test_split=test, seed=0)


# --------------------------------------------------------------------------- round trips

ODD_TEXTS = [
    "plain",
    "two\nlines",
    "windows\r\nline",
    'she said "wow", then \'ok\'',
    "tab\there, comma, semicolon;",
    "caf\u00e9 \u00fcber \u65e5\u672c\u8a9e \U0001f600",
    "  leading and trailing spaces  ",
    "NA",
    "{\"looks\": \"like json\"}",
    "back\\slash",
]


def _odd_dataset(texts: list[str]) -> Dataset:
    labels = np.array([i % 2 for i in range(len(texts))], dtype=np.int8)
    return Dataset(texts=list(texts), labels=labels, label_names=("neg", "pos"), text_col="text",
                   label_col="label", fingerprint="x", rows_read=len(texts), skipped={},
                   skipped_lines={})


def test_write_split_round_trip(tmp_path):
    data = _odd_dataset(ODD_TEXTS)
    path = tmp_path / "train.jsonl.gz"
    write_split(path, data)
    assert gzip.open(path, "rt", encoding="utf-8").readline().startswith('{"text": "plain"')
    back = load_dataset(path)
    assert back.texts == data.texts
    assert back.labels.tolist() == data.labels.tolist()
    assert back.label_names == data.label_names
    assert back.skipped.get("empty text", 0) == 0
    known = load_dataset(path, known_labels=("neg", "pos"))
    assert known.labels.tolist() == data.labels.tolist()


# str.splitlines() breaks on these too, and JSON allows them raw inside strings.
UNICODE_LINE_BREAKS = ["\x85", "\u2028", "\u2029", "\x1c", "\x0b", "\x0c"]


@pytest.mark.parametrize("char", UNICODE_LINE_BREAKS)
def test_write_split_round_trip_unicode_line_breaks(tmp_path, char):
    data = _odd_dataset([f"before{char}after", "plain"])
    path = tmp_path / "train.jsonl.gz"
    write_split(path, data)
    assert load_dataset(path).texts == data.texts


@pytest.mark.parametrize("char", UNICODE_LINE_BREAKS)
def test_jsonl_raw_unicode_line_breaks_stay_inside_the_text(tmp_path, char):
    path = tmp_path / "raw.jsonl"
    rows = [{"text": f"before{char}after", "label": "pos"}, {"text": "plain", "label": "neg"}]
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows),
                    encoding="utf-8")
    assert load_dataset(path).texts == [f"before{char}after", "plain"]


@pytest.mark.parametrize("ending", ["\n", "\r\n"])
def test_jsonl_final_newline_is_not_a_blank_line(tmp_path, ending):
    path = tmp_path / "plain.jsonl"
    lines = ['{"text": "a", "label": "pos"}', '{"text": "b", "label": "neg"}', ""]
    path.write_text(ending.join(lines), encoding="utf-8", newline="")
    data = load_dataset(path)
    assert data.skipped == {}
    assert data.summary() == "2 rows read, 2 used"


def test_a_10_mb_cell_is_read_whole(tmp_path):
    chunk = 'word, "quoted"\nnext line; '
    big = (chunk * (10_000_000 // len(chunk) + 1))[:10_000_000]
    path = tmp_path / "big.csv"
    with path.open("w", encoding="utf-8", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerows([["text", "label"], [big, "pos"], ["short", "neg"]])
    data = load_dataset(path)
    assert len(data.texts[0]) == 10_000_000
    assert data.texts[0] == big
    assert data.texts[1] == "short"
    assert data.labels.tolist() == [1, 0]


def test_read_table_line_numbers_follow_multiline_cells(tmp_path):
    path = tmp_path / "lines.csv"
    path.write_text('text,label\n"a\nb\nc",pos\nd,neg\n"e\nf",pos\n', encoding="utf-8")
    table = read_table(path)
    assert table.lines == [2, 5, 6]
    assert [row[0] for row in table.rows] == ["a\nb\nc", "d", "e\nf"]


def test_fingerprint_is_of_the_decompressed_bytes(tmp_path):
    raw = b"text,label\ngood,pos\nbad,neg\n"
    (tmp_path / "a.csv").write_bytes(raw)
    (tmp_path / "b.csv").write_bytes(gzip.compress(raw, mtime=0))
    assert read_table(tmp_path / "a.csv").fingerprint == read_table(tmp_path / "b.csv").fingerprint


def test_summary_counts_skipped_rows():
    data = load_dataset(DATA / "blank_lines.csv")
    assert data.summary() == "5 rows read, 2 used, 3 skipped (3 blank line)"
    data = load_dataset(DATA / "empty_labels.csv")
    assert data.summary() == "4 rows read, 2 used, 2 skipped (2 empty label)"


@pytest.mark.parametrize("name", ["missing.csv", ""])
def test_missing_path_or_directory(tmp_path, name):
    with pytest.raises(DataError, match=r"no such file|is a directory"):
        load_dataset(tmp_path / name)


# --------------------------------------------------------------------------- encodings
# The golden files hold one small file per encoding (gb18030, big5, shift_jis, euc_kr,
# cp1252, cp1252_french, ...); these cover what a golden file cannot.


@pytest.mark.parametrize(("good", "stray"), [
    ("房间很干净，服务也很好", "好".encode("gbk")),
    ("この映画はとても面白かった", "が".encode("cp932")),
    ("love it \U0001f60d\U0001f60d", "\u2019".encode("cp1252")),
])
def test_a_utf8_file_with_stray_bytes_names_the_first(tmp_path, good, stray):
    path = tmp_path / "stray.csv"
    path.write_bytes(f"text,label\n{good},pos\n".encode() + b"bad " + stray + b" one,neg\n")
    with pytest.raises(DataError, match=rf"line 3: byte 0x{stray[0]:02x} is not valid UTF-8, "
                                        "though the rest of the file is UTF-8"):
        load_dataset(path)


def test_detection_reads_a_file_bigger_than_its_sample_whole(tmp_path):
    texts = [f"{review}（{i}）" for i in range(12_000)
             for review in ("酒店离地铁站很近，交通方便", "房间隔音太差，一晚上没睡好")]
    path = tmp_path / "big.csv"
    rows = "".join(f"{t},{'pos' if i % 2 else 'neg'}\n" for i, t in enumerate(texts))
    path.write_bytes(("text,label\n" + rows).encode("gb18030"))
    assert path.stat().st_size > 600_000  # beyond what detection reads
    data = load_dataset(path)
    assert data.texts == texts
    assert "read as gb18030" in data.notes[0]


def test_a_byte_past_the_sample_picks_the_candidate_that_fits_it(tmp_path):
    """Big5 proper has no euro sign; its superset cp950 does, at the file's end."""
    rows = "這家飯店的服務非常好,pos\n早餐很難吃,neg\n" * 10_000 + "房價 €100,neg\n"
    path = tmp_path / "big5.csv"
    path.write_bytes(("text,label\n" + rows).encode("cp950"))
    table = read_table(path)
    assert table.rows[-1] == ["房價 €100", "neg"]
    assert "read as cp950" in table.notes[0]


def test_a_stray_byte_past_the_sample_is_named_not_read_in_a_lesser_codec(tmp_path):
    """The sample fits gb18030; the whole file does not, and cp1252 would read every byte."""
    rows = "".join(f"{review}（{i}）,{'pos' if i % 2 else 'neg'}\n" for i in range(20_000)
                   for review in ["酒店离地铁站很近，交通方便"])
    raw = ("text,label\n" + rows).encode("gb18030")
    assert len(raw) > 600_000  # beyond what detection reads
    path = tmp_path / "big.csv"
    path.write_bytes(raw[:-10] + b"\xff" + raw[-10:])
    with pytest.raises(DataError, match=r"big\.csv: line 20001: byte 0xff does not fit "
                                        "gb18030, which the rest of the file looks like"):
        load_dataset(path)


@pytest.mark.parametrize("stray", [b"\x8d", b"\x8f", b"\x90", b"\x9d", b"\x81\x9d"])
def test_a_byte_cp1252_lacks_amid_ascii_is_stray(tmp_path, stray):
    """ascii_stray_byte.csv has 0x81; each of these is a letter in some code page."""
    path = tmp_path / "ascii.csv"
    path.write_bytes(b"text,label\ngood film,pos\nhello " + stray + b" there,neg\n")
    with pytest.raises(DataError, match=rf"ascii\.csv: line 3: byte 0x{stray[0]:02x} is neither "
                                        "UTF-8 nor cp1252"):
        load_dataset(path)


def test_no_encoding_fits(tmp_path, monkeypatch):
    monkeypatch.setattr("charset_normalizer.from_bytes", lambda raw: [])  # it gave up
    path = tmp_path / "odd.csv"
    # not cp1252, nor CJK; more than a handful of bytes, which would be called stray
    path.write_bytes(b"text,label\ngood \x81\xff film \x81\xff,pos\nbad \x81\xff film,neg\n")
    with pytest.raises(DataError, match=r"odd\.csv: encoding not recognised: line 2: byte 0x81 "
                                        r"is not valid UTF-8.*; pass --encoding"):
        load_dataset(path)


def test_an_explicit_encoding_is_used_as_given():
    data = load_dataset(DATA / "shift_jis.csv", encoding="shift_jis")
    assert data.texts[0] == "この映画はとても面白かったです。"
    assert not any("UTF-8" in note for note in data.notes)


@pytest.mark.parametrize("name", ["punycode", "undefined"])
def test_an_encoding_that_fails_in_its_own_way_is_a_data_error(name):
    """Codecs that raise a bare UnicodeError (no byte to name) rather than a decode error."""
    with pytest.raises(DataError, match=rf"crlf\.csv: cannot be read as {name} \(.+\); "
                                        "pass another --encoding"):
        load_dataset(DATA / "crlf.csv", encoding=name)


@pytest.mark.parametrize("command", ["train", "evaluate"])
def test_the_encoding_help_says_what_decode_does(command):
    from click.testing import CliRunner

    from rnncli.cli.main import cli

    result = CliRunner().invoke(cli, [command, "--help"], terminal_width=200)
    helptext = " ".join(result.output.split())
    assert re.search(r"--encoding NAME .*\[default: UTF-8, else detected \(named on "
                     r"stderr\)\]", helptext), helptext


def test_charset_normalizer_is_imported_only_for_a_file_that_is_not_utf8():
    code = ("import sys; from rnncli.data.dataset import load_dataset; load_dataset(sys.argv[1]); "
            "print('charset_normalizer' in sys.modules)")
    for name, imported in [("crlf.csv", "False"), ("cp1252.csv", "True")]:
        out = subprocess.run([sys.executable, "-c", code, str(DATA / name)], check=True,
                             capture_output=True, text=True).stdout
        assert out.strip() == imported, name


# --------------------------------------------------------------------------- properties

# Any unicode text but surrogates (not encodable). NUL is left out of CSV cells on purpose:
# a NUL in the first 64 KiB is how read_table recognises a binary file.
CSV_TEXT = st.text(st.characters(exclude_categories=("Cs",), exclude_characters="\x00"),
                   max_size=40)
# JSON escapes NUL, so JSON lines may carry it.
JSON_TEXT = st.text(st.characters(exclude_categories=("Cs",)), max_size=40)
LABEL = st.sampled_from(["pos", "neg"])
# Two fixed rows make sure both classes are present, so map_labels never refuses.
ANCHORS = [("anchor positive", "pos"), ("anchor negative", "neg")]
PROPERTY = settings(max_examples=50, deadline=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture])


def _check_read_back(data: Dataset, rows: list[tuple[str, str]]) -> None:
    kept = [(t, y) for t, y in rows if t.strip()]
    assert data.texts == [t for t, _ in kept]
    assert [data.label_names[i] for i in data.labels] == [y for _, y in kept]
    assert data.skipped.get("empty text", 0) == len(rows) - len(kept)
    # "blank line" is left to test_jsonl_final_newline_is_not_a_blank_line (a known bug).
    assert "empty label" not in data.skipped


@pytest.mark.parametrize("suffix, delimiter", [(".csv", ","), (".tsv", "\t")])
@PROPERTY
@given(rows=st.lists(st.tuples(CSV_TEXT, LABEL), max_size=15))
def test_property_delimited_round_trip(tmp_path, suffix, delimiter, rows):
    rows = rows + ANCHORS
    path = tmp_path / f"prop{suffix}"
    with path.open("w", encoding="utf-8", newline="") as fh:
        writer = csv.writer(fh, delimiter=delimiter)
        writer.writerow(["text", "label"])
        writer.writerows(rows)
    _check_read_back(load_dataset(path), rows)


@pytest.mark.parametrize("ascii_only", [True, False])
@PROPERTY
@given(rows=st.lists(st.tuples(JSON_TEXT, LABEL), max_size=15))
def test_property_jsonl_round_trip(tmp_path, ascii_only, rows):
    rows = rows + ANCHORS
    path = tmp_path / "prop.jsonl"
    path.write_text("".join(json.dumps({"text": t, "label": y}, ensure_ascii=ascii_only) + "\n"
                            for t, y in rows), encoding="utf-8")
    _check_read_back(load_dataset(path), rows)


@PROPERTY
@given(value=st.text(max_size=12))
def test_property_normalize_label_is_idempotent_and_stripped(value):
    key = normalize_label(value)
    assert normalize_label(key) == key
    assert key == key.strip()


# --------------------------------------------------------------------------- classes


def test_three_or_more_values_are_classes_numbers_in_numeric_order():
    got, names = map_labels(P, ["10", "2", "1", "2", "10", "1.0"])
    assert names == ("1", "2", "10")
    assert got.tolist() == [2, 1, 0, 1, 2, 0]


def test_nan_and_inf_labels_are_names_not_numbers():
    """The class order does not depend on where such a label first appears."""
    rows = ["nan", "1", "2", "inf"] * 2
    assert map_labels(P, rows)[1] == map_labels(P, rows[::-1])[1] == ("1", "2", "inf", "nan")


def test_class_names_keep_the_spelling_most_rows_use():
    _, names = map_labels(P, ["Neutral", "neutral", "Neutral", "pos", "neg", "POS", "neg"])
    assert names == ("neg", "Neutral", "pos")


def test_positive_label_is_refused_for_three_classes():
    with pytest.raises(DataError, match=r"--positive-label applies to two label values; this "
                                         r"file has 3 .*drop --positive-label"):
        map_labels(P, ["a", "b", "c"] * 3, positive_label="a")


def test_known_classes_map_by_name():
    got, names = map_labels(P, ["Neutral", "neg"], known=("neg", "neutral", "pos"))
    assert names == ("neg", "neutral", "pos") and got.tolist() == [1, 0]
    with pytest.raises(DataError, match=r"1 row has a label that is not the model's \('neg', "
                                         r"'neutral', 'pos'\): 'meh' \(1 row\); check "
                                         r"--label-col, or relabel or drop those rows"):
        map_labels(P, ["meh", "neg"], known=("neg", "neutral", "pos"))


def _classes(counts: dict[str, int]) -> Dataset:
    labels = np.concatenate([[i] * n for i, n in enumerate(counts.values())]).astype(np.int8)
    return Dataset(texts=[f"t{i}" for i in range(len(labels))], labels=labels,
                   label_names=tuple(counts), text_col="text", label_col="label",
                   fingerprint="", rows_read=len(labels), skipped={}, skipped_lines={})


def test_a_class_too_rare_for_the_split_is_named_with_its_count():
    data = _classes({"neg": 40, "neutral": 4, "pos": 40, "mixed": 1})
    with pytest.raises(DataError, match=r"2 classes too rare for a stratified split with "
                                         r"--val-split 0.1 and --test-split 0.1: 'neutral' "
                                         r"\(4 rows\), 'mixed' \(1 row\); each class needs at "
                                         r"least 6 rows: add rows, merge or drop these classes"):
        split_dataset(data, val_split=0.1, test_split=0.1, seed=0)
    # a larger share held out makes room for them: 0.25 of 4 rows is one row
    data = _classes({"neg": 40, "neutral": 4, "pos": 40})
    train, val, test = split_dataset(data, val_split=0.25, test_split=0.25, seed=0)
    for part in (train, val, test):
        assert set(part.labels.tolist()) == {0, 1, 2}
    assert data.class_counts() == {"neg": 40, "neutral": 4, "pos": 40}
