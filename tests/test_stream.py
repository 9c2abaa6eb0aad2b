"""The streaming reader (rnncli.data.stream) against the whole-file one (load_dataset):
same rows, lines, counts, notes, fingerprint and errors, whatever the chunk size."""

from __future__ import annotations

import gzip
import json
import subprocess
import sys
from pathlib import Path

import pytest

from rnncli.core.errors import DataError
from rnncli.data.columns import map_labels
from rnncli.data.dataset import load_dataset, read_table
from rnncli.data.stream import SKIPPED_LINES_KEPT, open_labelled

DATA = Path(__file__).parent / "data"
SUFFIX = ".expected.json"
STREAM_OPTIONS = ("text_col", "label_col", "encoding")


def _golden():
    cases = []
    for expected_path in sorted(DATA.glob("*" + SUFFIX)):
        stem = expected_path.name[: -len(SUFFIX)]
        (path,) = [p for p in DATA.glob(stem + ".*") if p != expected_path]
        options = json.loads(expected_path.read_text(encoding="utf-8")).get("options", {})
        cases.append(pytest.param(path, options, id=stem))
    return cases


def _stream(path, chunk_bytes=1 << 20, **options):
    """Everything a stream tells, after a full pass."""
    stream = open_labelled(path, chunk_bytes=chunk_bytes, **options)
    rows = list(stream.rows())
    return {"rows": rows, "rows_read": stream.rows_read, "skipped": stream.skipped,
            "skipped_lines": stream.skipped_lines, "notes": stream.notes,
            "fingerprint": stream.fingerprint, "columns": (stream.text_col, stream.label_col),
            "physical_lines": stream.physical_lines}


def _stream_error(path, options) -> str | None:
    try:
        _stream(path, **{k: v for k, v in options.items() if k in STREAM_OPTIONS})
    except DataError as exc:
        return exc.message
    return None


@pytest.mark.parametrize(("path", "options"), _golden())
def test_stream_matches_load_dataset(path: Path, options: dict):
    try:
        data = load_dataset(path, **options)
    except DataError as exc:
        streamed_error = _stream_error(path, options)
        if streamed_error is None:  # refused for its labels, which the caller maps
            got = _stream(path, **{k: v for k, v in options.items() if k in STREAM_OPTIONS})
            with pytest.raises(DataError) as info:
                map_labels(path, [label for _, _, label in got["rows"]],
                           positive_label=options.get("positive_label"),
                           lines=[line for line, _, _ in got["rows"]])
            streamed_error = info.value.message
        assert streamed_error == exc.message
        return
    got = _stream(path, **{k: v for k, v in options.items() if k in STREAM_OPTIONS})
    table = read_table(path, encoding=options.get("encoding"))
    label_at = dict(zip(table.lines, (row[table.header.index(data.label_col)]
                                      for row in table.rows)))
    lines = [line for line, _, _ in got["rows"]]
    assert [text for _, text, _ in got["rows"]] == data.texts
    assert [label for _, _, label in got["rows"]] == [label_at[line] for line in lines]
    assert len(lines) == len(set(lines)) == len(data.texts)
    assert (got["rows_read"], got["skipped"], got["skipped_lines"]) == (
        data.rows_read, data.skipped, data.skipped_lines)
    assert got["notes"] == data.notes
    assert got["fingerprint"] == data.fingerprint
    assert got["columns"] == (data.text_col, data.label_col)
    labels, names = map_labels(path, [label for _, _, label in got["rows"]],
                               positive_label=options.get("positive_label"), lines=lines)
    assert names == data.label_names and labels.tolist() == data.labels.tolist()


@pytest.mark.parametrize(("path", "options"), [
    case for case in _golden() if not case.values[0].read_bytes().startswith(b"\xff\xfe")])
def test_a_large_file_in_another_encoding_streams_as_it_reads_whole(path, options, monkeypatch):
    """Every golden file read as one larger than DECODE_WHOLE_BYTES: a file that is not
    UTF-8 streams (its encoding detected on a window from its first byte that is not
    UTF-8, every byte checked) and gives load_dataset's rows, notes and errors."""
    from rnncli.data import stream as S

    monkeypatch.setattr(S, "DECODE_WHOLE_BYTES", 0)
    test_stream_matches_load_dataset(path, options)
    try:
        assert not open_labelled(path, **{k: v for k, v in options.items()
                                          if k in STREAM_OPTIONS}).in_memory
    except DataError:
        pass


def _large(monkeypatch, window: int = 4096) -> None:
    """Files read as larger than DECODE_WHOLE_BYTES, their encoding detected on a window
    of ``window`` bytes."""
    from rnncli.data import stream as S

    monkeypatch.setattr(S, "DECODE_WHOLE_BYTES", 0)
    monkeypatch.setattr(S, "DETECT_BYTES", window)


REVIEWS = ["房间很干净，服务也很好", "位置不错，就是早餐太差了", "性价比很高，推荐",
           "隔音效果差，晚上很吵"]


def _gbk_file(tmp_path: Path, rows: int, *, stray_at: int | None = None,
              ascii_first: int = 0) -> Path:
    """A GBK CSV of ``rows`` Chinese reviews (after ``ascii_first`` ASCII ones), with a
    byte GBK lacks in the review on line ``stray_at``."""
    lines = [b"review,label\n"]
    for i in range(rows):
        text = f"plain review {i}" if i < ascii_first else REVIEWS[i % 4] + str(i)
        line = f"{text},{i % 2}\n".encode("gbk")
        if len(lines) + 1 == stray_at:
            line = line.replace(b",", b"\xff,", 1)
        lines.append(line)
    path = tmp_path / "gbk.csv"
    path.write_bytes(b"".join(lines))
    return path


def test_a_large_gbk_file_streams_detected_on_a_window(tmp_path, monkeypatch):
    path = _gbk_file(tmp_path, 3000, ascii_first=1200)
    whole = load_dataset(path)
    _large(monkeypatch)
    stream = open_labelled(path, chunk_bytes=1000)
    assert not stream.in_memory and stream.codec == "gb18030"
    assert [text for _, text, _ in stream.rows()] == whole.texts
    assert stream.notes == whole.notes  # "first at line 1202", found past the window
    assert "(first at line 1202); read as gb18030" in stream.notes[0]
    given = open_labelled(path, encoding="gbk", chunk_bytes=999)
    assert not given.in_memory and [t for _, t, _ in given.rows()] == whole.texts


def test_a_byte_past_the_window_that_does_not_fit_names_its_line(tmp_path, monkeypatch):
    path = _gbk_file(tmp_path, 3000, stray_at=2500)
    with pytest.raises(DataError) as whole:
        load_dataset(path)
    _large(monkeypatch)
    with pytest.raises(DataError) as streamed:
        open_labelled(path, chunk_bytes=777)
    assert streamed.value.message == (
        f"{path}: line 2500: byte 0xff does not fit gb18030, which the rest of the file looks "
        "like; fix that byte, or pass --encoding")
    assert "line 2500: byte 0xff does not fit gb18030" in whole.value.message
    with pytest.raises(DataError) as given:
        open_labelled(path, encoding="gbk", chunk_bytes=777)
    assert given.value.message == (f"{path}: line 2500: byte 0xff is not valid gbk; check "
                                   "--encoding, or fix the bytes in the file")
    path = _gbk_file(tmp_path, 3000)
    path.write_bytes(path.read_bytes()[:-1] + "好".encode("gbk")[:1])  # cut inside a character
    with pytest.raises(DataError) as cut:
        open_labelled(path, encoding="gbk")
    assert cut.value.message.startswith(f"{path}: line 3001: the file ends inside a character")


def test_a_stray_byte_in_a_large_utf8_file_is_named_not_guessed(tmp_path, monkeypatch):
    """UTF-8 Chinese before and after one stray byte: the window around it holds both, so
    it is a stray byte (as read whole), with its line counted from the file's start."""
    path = tmp_path / "utf8.csv"
    rows = [f"{REVIEWS[i % 4]}{i},{i % 2}\n".encode() for i in range(3000)]
    rows[1999] = rows[1999].replace(b",", b"\xff,")
    path.write_bytes(b"review,label\n" + b"".join(rows))
    _large(monkeypatch)
    with pytest.raises(DataError) as streamed:
        open_labelled(path)
    assert streamed.value.message == (
        f"{path}: line 2001: byte 0xff is not valid UTF-8, though the rest of the file is "
        "UTF-8; fix that byte, or pass --encoding")


TRICKY = ("text,标签\r\n"
          "\"引号里的\r\n两行，还有逗号\",正面\r\n"
          "\r\n"
          "酒店离地铁站很近,正面\r\n"
          ",负面\r\n"
          "房间隔音太差 \u2028 一晚上没睡好,负面\r\n"
          "\"a \"\"quoted\"\" word\nand a newline\",\r\n"
          "最后一行没有换行,正面")


def _tricky_files(tmp_path: Path) -> list[Path]:
    csv_path = tmp_path / "tricky.csv"
    csv_path.write_bytes(TRICKY.encode("utf-8"))
    bom = tmp_path / "bom.csv"
    bom.write_bytes(b"\xef\xbb\xbf" + TRICKY.encode("utf-8"))
    zipped = tmp_path / "zipped.csv"  # gzip, whatever the name
    zipped.write_bytes(gzip.compress((TRICKY + "\n").encode("utf-8") * 3, mtime=0))
    records = [{"text": "好评\u2028第二行\x85", "label": "正面"}, {"text": None, "label": "负面"},
               {"label": "负面", "text": "差评", "extra": [1, "二"]}, {"text": "ok", "label": True}]
    jsonl = tmp_path / "tricky.jsonl.gz"
    jsonl.write_bytes(gzip.compress(("\n".join(json.dumps(r, ensure_ascii=False)
                                               for r in records) + "\n\n  ").encode()))
    return [csv_path, bom, zipped, jsonl, DATA / "chinese_columns.csv", DATA / "crlf.csv",
            DATA / "quoted_multiline.csv", DATA / "csv_gz.csv.gz", DATA / "utf16_bom.tsv",
            DATA / "cp1252_french.csv"]


@pytest.mark.parametrize("chunk_bytes", [1, 2, 3, 7, 64])
def test_small_chunks_give_the_same_rows(tmp_path, chunk_bytes):
    for path in _tricky_files(tmp_path):
        assert _stream(path, chunk_bytes) == _stream(path), (path.name, chunk_bytes)
        streamed = open_labelled(path, chunk_bytes=chunk_bytes)
        assert streamed.in_memory == (path.suffix == ".tsv" or "cp1252" in path.name)


def test_tricky_file_rows_lines_and_counts(tmp_path):
    got = _stream(_tricky_files(tmp_path)[0], chunk_bytes=7)
    assert got["rows"] == [(2, "引号里的\r\n两行，还有逗号", "正面"),
                           (5, "酒店离地铁站很近", "正面"),
                           (7, "房间隔音太差 \u2028 一晚上没睡好", "负面"),
                           (10, "最后一行没有换行", "正面")]
    assert got["skipped"] == {"blank line": 1, "empty text": 1, "empty label": 1}
    assert got["skipped_lines"] == {"empty text": [6], "empty label": [8]}
    assert got["rows_read"] == 7
    assert got["physical_lines"] == 10


def test_rows_twice_gives_the_same_rows(tmp_path):
    for path in _tricky_files(tmp_path):
        stream = open_labelled(path, chunk_bytes=5)
        first = (list(stream.rows()), stream.rows_read, stream.skipped, stream.skipped_lines)
        assert (list(stream.rows()), stream.rows_read, stream.skipped,
                stream.skipped_lines) == first


@pytest.mark.parametrize(("content", "lines"), [(b"text,label\na,pos\nb,neg\n", 3),
                                                (b"text,label\na,pos\nb,neg", 3),
                                                (b"text,label\r\na,pos\r\n\r\n", 3)])
def test_physical_lines_is_known_before_rows(tmp_path, content, lines):
    path = tmp_path / "lines.csv"
    path.write_bytes(content)
    assert open_labelled(path, chunk_bytes=4).physical_lines == lines


def test_physical_lines_of_a_utf16_file_count_its_newlines_not_its_0x0a_bytes(tmp_path):
    path = tmp_path / "utf16.tsv"
    path.write_bytes("text\tlabel\n\u010a good\tpos\nbad\tneg\n".encode("utf-16"))
    stream = open_labelled(path)
    assert stream.in_memory and stream.physical_lines == 3


@pytest.mark.parametrize("encoding", ["utf-8", "UTF8", "utf_8"])
def test_encoding_utf8_given_still_streams(tmp_path, encoding):
    path = tmp_path / "bom.csv"
    path.write_bytes(b"\xef\xbb\xbftext,label\n\xe5\xa5\xbd good,pos\nbad,neg\n")
    stream = open_labelled(path, encoding=encoding)
    assert not stream.in_memory
    data = load_dataset(path, encoding=encoding)
    assert [text for _, text, _ in stream.rows()] == data.texts
    path.write_bytes(b"text,label\ngood,pos\nbad,neg\n")
    assert open_labelled(path, encoding="cp1252").in_memory


def test_skipped_lines_are_bounded(tmp_path):
    path = tmp_path / "many_empty.csv"
    empty = SKIPPED_LINES_KEPT + 500
    path.write_text("text,label\n" + ",pos\n" * empty + "good,pos\nbad,neg\n")
    got = _stream(path)
    assert got["skipped"] == {"empty text": empty}
    assert got["skipped_lines"] == {"empty text": list(range(2, 2 + SKIPPED_LINES_KEPT))}
    assert got["rows_read"] == empty + 2


@pytest.mark.parametrize("case", ["truncated", "trailing garbage", "bad crc"])
def test_broken_gzip_gives_load_datasets_error(tmp_path, case):
    packed = gzip.compress(b"text,label\n" + b"good film,pos\nbad film,neg\n" * 2000, mtime=0)
    broken = {"truncated": packed[:len(packed) // 2], "trailing garbage": packed + b"junk",
              "bad crc": packed[:-8] + b"\0\0\0\0" + packed[-4:]}[case]
    path = tmp_path / "broken.csv.gz"
    path.write_bytes(broken)
    with pytest.raises(DataError) as expected:
        load_dataset(path)
    assert _stream_error(path, {}) == expected.value.message


def test_no_usable_rows_lists_reasons_as_load_dataset_does(tmp_path):
    path = tmp_path / "unusable.csv"
    path.write_text("text,label\n,pos\ngood,\n\n,neg\n")  # empty text before a blank line
    with pytest.raises(DataError) as expected:
        load_dataset(path)
    assert _stream_error(path, {}) == expected.value.message


@pytest.mark.parametrize("name", ["label.csv", "label.jsonl"])
def test_a_label_with_a_control_character_is_refused_as_load_dataset_does(tmp_path, name):
    path = tmp_path / name
    rows = [("good", "pos"), ("bad", "neg"), ("fine", "pos\x07"), ("awful", "neg")]
    if name.endswith(".csv"):
        path.write_text("text,label\n" + "".join(f"{t},{lab}\n" for t, lab in rows))
    else:
        path.write_text("".join(json.dumps({"text": t, "label": lab}) + "\n" for t, lab in rows))
    with pytest.raises(DataError) as expected:
        load_dataset(path)
    assert "control character" in expected.value.message
    assert _stream_error(path, {}) == expected.value.message


def test_error_deep_in_the_file_comes_from_rows_with_its_line(tmp_path):
    path = tmp_path / "late.csv"
    path.write_text("text,label\n" + "good,pos\n" * 5000 + "one,two,three\n")
    stream = open_labelled(path, chunk_bytes=1000)
    with pytest.raises(DataError, match="line 5002: 3 fields where the header has 2"):
        list(stream.rows())


MEMORY_PROBE = r"""
import resource, sys
from rnncli.data.stream import open_labelled
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
stream = open_labelled(sys.argv[1])
rows = sum(1 for _ in stream.rows())
print(rows, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before)
"""


def test_memory_does_not_grow_with_the_file(tmp_path):
    path = tmp_path / "big.csv"
    row = "a short review of a film that was fine,pos\n"
    with path.open("w") as fh:
        fh.write("text,label\n")
        for _ in range(20):
            fh.write(row * 25_000)  # 500,000 rows, about 22 MB
    out = subprocess.run([sys.executable, "-c", MEMORY_PROBE, str(path)], check=True,
                         capture_output=True, text=True).stdout.split()
    rows, grown_kib = int(out[0]), int(out[1])
    assert rows == 500_000
    assert grown_kib * 1024 < path.stat().st_size / 4, f"maxrss grew {grown_kib} KiB"
