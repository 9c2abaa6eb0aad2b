"""Bytes and text -> rows: the reading rules that the whole-file reader (dataset.read_table)
and the streaming one (stream.open_labelled) share, so the two cannot drift apart.

The row parsers are generators over an iterable of text lines (a StringIO over a decoded
file, or a TextIOWrapper over the file itself): they check every row as they meet it and
name its line, and keep nothing but the blank-line count. Light: the standard library.
"""

from __future__ import annotations

import csv
import gzip
import json
import sys
import zlib
from collections import Counter
from collections.abc import Iterable, Iterator
from pathlib import Path

from rnncli.core import jsontext
from rnncli.core.errors import DataError
from rnncli.data.encoding import decode

FORMATS = {".csv": "csv", ".tsv": "tsv", ".tab": "tsv", ".jsonl": "jsonl", ".ndjson": "jsonl",
           ".txt": "lines"}  # .txt: one text per line, no header, no labels
GZIP_MAGIC = b"\x1f\x8b"
# What each format's text is read with: csv needs newline="" (it handles \r itself); JSON
# lines and .txt lines end at "\n" only (str.splitlines() would also break inside texts at
# NEL (\x85) and U+2028, which JSON allows unescaped; newline="\n" does not).
NEWLINE = {"csv": "", "tsv": "", "jsonl": "\n", "lines": "\n"}

csv.field_size_limit(min(sys.maxsize, 2**31 - 1))  # a 10 MB review is a valid cell


# --------------------------------------------------------------------------- bytes


def check_file(path: Path) -> None:
    """A readable path to a file, or a DataError saying what it is instead."""
    try:  # Path.exists itself fails on a name too long or a folder we may not enter
        exists, is_dir = path.exists(), path.is_dir()
    except OSError as exc:
        raise DataError(f"{path}: cannot be read ({exc.strerror or exc})") from exc
    if not exists:
        raise DataError(f"{path}: no such file; check the path")
    if is_dir:
        raise DataError(f"{path}: is a directory; give a .csv, .tsv or .jsonl file")


def read_bytes(path: Path) -> bytes:
    """The whole file, decompressed when it starts with the gzip magic (whatever its name)."""
    check_file(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise DataError(f"{path}: cannot be read ({exc.strerror})") from exc
    if raw[:2] == GZIP_MAGIC:
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as exc:
            raise DataError(f"{path}: gzip data is corrupt or truncated ({exc})") from exc
    if not raw.strip():
        raise empty_file(path)
    return raw


def empty_file(path: Path) -> DataError:
    return DataError(f"{path}: is empty; it needs a header line and at least one row")


class Sniff:
    """What format detection reads from the bytes, fed chunk by chunk: whether the first
    line holds tabs or commas, and the first byte that is not ASCII whitespace (none: the
    file is blank)."""

    def __init__(self) -> None:
        self.first_line_done = False
        self.tab = self.comma = False
        self.first_char = b""

    def feed(self, chunk: bytes) -> None:
        if not self.first_line_done:
            head = chunk.split(b"\n", 1)
            self.tab = self.tab or b"\t" in head[0]
            self.comma = self.comma or b"," in head[0]
            self.first_line_done = len(head) > 1
        if not self.first_char:
            self.first_char = chunk.lstrip()[:1]


def detect_format(path: Path, sniff: Sniff) -> tuple[str, list[str]]:
    """The format ("csv", "tsv", "jsonl", "lines") by extension, and notes when the header
    says otherwise; a file without a known extension is JSON lines if it starts with {."""
    suffixes = [s.lower() for s in path.suffixes]
    if suffixes and suffixes[-1] == ".gz":
        suffixes = suffixes[:-1]
    fmt = FORMATS.get(suffixes[-1] if suffixes else "")
    if fmt is None:
        if sniff.first_char == b"{":
            return "jsonl", []
        raise DataError(f"{path}: unknown file type {''.join(path.suffixes) or '(no extension)'}; "
                        "use .csv, .tsv or .jsonl (optionally .gz), or .txt for unlabelled "
                        "texts")
    notes = []
    if fmt == "csv" and sniff.tab and not sniff.comma:
        notes.append(f"{path.name}: header is tab-separated; reading it as TSV")
        fmt = "tsv"
    elif fmt == "tsv" and sniff.comma and not sniff.tab:
        notes.append(f"{path.name}: header is comma-separated; reading it as CSV")
        fmt = "csv"
    return fmt, notes


def decode_text(path: Path, raw: bytes, fmt: str, encoding: str | None,
                notes: list[str]) -> str:
    """The file's text (see encoding.decode), refusing NUL characters; appends a note when
    the encoding was not UTF-8 and not given."""
    decoded = decode(path, raw, encoding)
    text = decoded.text
    if "\x00" in text:
        raise nul_error(path, text[:text.index("\x00")].count("\n") + 1, fmt)
    if encoding is None and decoded.encoding == "utf-16":
        notes.append(f"{path.name}: read as UTF-16 (byte-order mark)")
    elif encoding is None and decoded.encoding != "utf-8":
        notes.append(f"{path.name}: not valid UTF-8 (first at line {decoded.first_bad_line}); "
                     f"read as {decoded.encoding} (set --encoding to choose)")
    return text


def nul_error(path: Path, line: int, fmt: str) -> DataError:
    return DataError(f"{path}: line {line}: a NUL character; this looks like a binary file, "
                     f"not {fmt.upper()} text; give a .csv, .tsv or .jsonl file")


# --------------------------------------------------------------------------- rows


def delimited_rows(path: Path, lines: Iterable[str], fmt: str,
                   skipped: Counter) -> Iterator:
    """The header (a list of names) first, then (line, row) for each row, checked against
    the header: a row with another field count or malformed quoting is a DataError naming
    its line; blank lines are counted in ``skipped``. ``lines``: text read with
    newline=""."""
    delimiter = "\t" if fmt == "tsv" else ","
    reader = csv.reader(lines, delimiter=delimiter, strict=True)
    header = None
    start = 1
    try:
        for row in reader:
            if header is None and not any(cell.strip() for cell in row):
                pass  # blank lines before the header
            elif header is None:
                header = [h.strip() for h in row]
                _check_header(path, header)
                yield header
            elif not row or (len(row) == 1 and not row[0].strip() and len(header) > 1):
                skipped["blank line"] += 1
            elif len(row) != len(header):
                raise DataError(
                    f"{path}: line {start}: {len(row)} fields where the header has "
                    f"{len(header)}; quote fields that contain {_name(delimiter)} or newlines")
            else:
                yield start, row
            start = reader.line_num + 1
    except csv.Error as exc:
        raise DataError(f"{path}: line {start}: malformed {fmt.upper()} ({exc}); "
                        "check for an unclosed quote") from exc
    if header is None:
        raise empty_file(path)


def line_rows(lines: Iterable[str], skipped: Counter) -> Iterator[tuple[int, list[str]]]:
    """(line, [text]) for each non-blank line of a .txt file; blank lines are counted."""
    for number, line in enumerate(lines, start=1):
        line = (line[:-1] if line.endswith("\n") else line).rstrip("\r")
        if line.strip():
            yield number, [line]
        else:
            skipped["blank line"] += 1


def jsonl_records(path: Path, lines: Iterable[str],
                  skipped: Counter) -> Iterator[tuple[int, dict]]:
    """(line, object) for each line of a JSON lines file; blank lines are counted, and a
    line that is not a JSON object of text is a DataError naming it."""
    for number, line in enumerate(lines, start=1):
        if line.endswith("\n"):
            line = line[:-1]
        elif not line.strip():
            return  # blanks after the final newline end the file: no blank line
        if not line.strip():
            skipped["blank line"] += 1
            continue
        try:
            record = jsontext.loads(line)
        except jsontext.BadJSON as exc:
            raise DataError(f"{path}: line {number}: not valid JSON ({exc.reason})") from exc
        if not isinstance(record, dict):
            raise DataError(f"{path}: line {number}: expected a JSON object per line, "
                            f"found {type(record).__name__}")
        try:
            json.dumps(record, ensure_ascii=False).encode("utf-8")
        except UnicodeEncodeError as exc:
            raise DataError(f"{path}: line {number}: holds an unpaired surrogate escape "
                            f"({exc.object[exc.start:exc.end].encode('unicode_escape').decode()}),"
                            " which is not text; fix that line") from exc
        yield number, record


def jsonl_header(records: Iterable[dict]) -> list[str]:
    """The keys of all records, in the order they first appear."""
    seen: dict[str, None] = {}
    for record in records:
        for key in record:
            seen.setdefault(key)
    return list(seen)


def json_cell(value) -> str | None:
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (dict, list)):
        return json.dumps(value, ensure_ascii=False)
    return str(value)


def _check_header(path: Path, header: list[str]) -> None:
    seen: dict[str, int] = {}
    for i, name in enumerate(header, start=1):
        if name in seen:
            raise DataError(f"{path}: duplicate column name {name!r} in the header "
                            f"(columns {seen[name]} and {i}); rename one of them")
        seen[name] = i


def _name(delimiter: str) -> str:
    return "tabs" if delimiter == "\t" else "commas"
