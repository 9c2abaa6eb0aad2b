"""A labelled file, read as a stream of rows: memory that does not grow with the rows.

``open_labelled`` makes one pass over the (decompressed) bytes in chunks: the sha256
fingerprint, the physical line count, format sniffing and a strict incremental UTF-8
check; then it reads the header and chooses the columns, so every error that load_dataset
raises for the file as a whole (no such file, corrupt gzip, empty file, unknown extension,
NUL byte, duplicate header, missing column) comes from ``open_labelled`` with the same
message. ``LabelledStream.rows()`` then streams (line, text, raw label) for each usable row,
decoding the file chunk by chunk through a TextIOWrapper, with the parsers and row checks
that read_table and load_dataset use (parse.py, columns.skip_reason): same rules, same
messages; an error in a row comes from ``rows()`` when it is met. rows() may be called
again: each call reads the file from the start.

Memory: UTF-8 files (with or without a BOM) stream. A UTF-16 file (BOM), a file read with a
given ``encoding`` other than UTF-8, or bytes that are not UTF-8 go through the whole-file
decode (encoding.decode: detection needs the whole file, and its notes and errors stay the same);
the decoded text is kept and its rows streamed from it, so memory grows with those files
only. JSON lines are parsed twice: ``open_labelled`` reads every object for the header
(the union of the keys, which choose_columns needs), and rows() again.

Why the standard csv module rather than pandas' chunked reader: pandas pads short rows,
turns NA/null into NaN and cannot say which line broke (see dataset.py), and csv (C) over
a TextIOWrapper streams well over 100,000 short rows a second.
"""

from __future__ import annotations

import codecs
import contextlib
import gzip
import hashlib
import io
import zlib
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

from rnncli.core.errors import DataError
from rnncli.data.columns import Table, choose_columns, no_usable_rows, skip_reason
from rnncli.data.parse import (
    GZIP_MAGIC,
    NEWLINE,
    Sniff,
    check_file,
    decode_text,
    delimited_rows,
    detect_format,
    empty_file,
    json_cell,
    jsonl_header,
    jsonl_records,
    nul_error,
    read_bytes,
)

SKIPPED_LINES_KEPT = 1000  # lines kept per skip reason: bounded memory on a big file


def open_labelled(path: str | Path, *, text_col: str | None = None,
                  label_col: str | None = None, encoding: str | None = None,
                  chunk_bytes: int = 1 << 20) -> LabelledStream:
    """Check a labelled file and read its header; rows come from ``rows()``."""
    path, chunk_bytes = Path(path), max(1, chunk_bytes)  # read(0) would end the file at once
    scan = _Scan(path, chunk_bytes)
    fmt, notes = detect_format(path, scan.sniff)
    text = None
    if (encoding is not None and not _names_utf8(encoding)) or not scan.utf8:
        text = decode_text(path, read_bytes(path), fmt, encoding, notes)
    elif scan.nul_line:
        raise nul_error(path, scan.nul_line, fmt)
    return LabelledStream(path, fmt=fmt, text=text, scan=scan, text_col=text_col,
                          label_col=label_col, notes=notes, chunk_bytes=chunk_bytes)


def _names_utf8(encoding: str) -> bool:
    """``--encoding utf-8`` (any spelling) streams as a file with no --encoding would."""
    try:
        return codecs.lookup(encoding).name == "utf-8"
    except LookupError:
        return False  # decode_text reports the unknown name


class _Scan:
    """One pass over the decompressed bytes: fingerprint, physical lines, sniffing, whether
    they are UTF-8, and the line of the first NUL byte (0: none)."""

    def __init__(self, path: Path, chunk_bytes: int):
        digest = hashlib.sha256()
        newlines, last = 0, b""
        self.sniff = Sniff()
        self.nul_line = 0
        self.size = 0  # decompressed bytes
        self.utf8 = True
        utf8 = codecs.getincrementaldecoder("utf-8")()
        with _read_chunks(path, chunk_bytes) as chunks:
            for chunk in chunks:
                digest.update(chunk)
                self.sniff.feed(chunk)
                if not self.nul_line and b"\x00" in chunk:
                    self.nul_line = newlines + chunk.count(b"\n", 0, chunk.index(b"\x00")) + 1
                newlines += chunk.count(b"\n")
                self.size += len(chunk)
                last = chunk[-1:]
                if self.utf8:
                    self.utf8 = _still_utf8(utf8, chunk)
        if self.utf8:
            self.utf8 = _still_utf8(utf8, b"", final=True)
        if not self.sniff.first_char:
            raise empty_file(path)
        self.fingerprint = digest.hexdigest()
        self.physical_lines = newlines + (last != b"\n")


def _still_utf8(decoder, chunk: bytes, *, final: bool = False) -> bool:
    try:
        decoder.decode(chunk, final)
    except UnicodeDecodeError:
        return False
    return True


@contextlib.contextmanager
def _read_chunks(path: Path, chunk_bytes: int):
    """The decompressed bytes in chunks; errors as read_bytes words them."""
    with _open_binary(path) as fh:
        def chunks():
            while True:
                try:
                    chunk = fh.read(chunk_bytes)
                except (OSError, EOFError, zlib.error) as exc:
                    read_bytes(path)  # raises the whole-file reader's error for these bytes
                    raise DataError(f"{path}: cannot be read ({exc})") from exc
                if not chunk:
                    return
                yield chunk
        yield chunks()


@contextlib.contextmanager
def _open_binary(path: Path):
    """The file for reading bytes, through gzip when it starts with the gzip magic."""
    check_file(path)
    try:
        fh = path.open("rb")
    except OSError as exc:
        raise DataError(f"{path}: cannot be read ({exc.strerror})") from exc
    with fh:
        if fh.read(2) != GZIP_MAGIC:
            fh.seek(0)
            yield fh
            return
        fh.seek(0)
        with gzip.GzipFile(fileobj=fh, mode="rb") as unzipped:
            yield unzipped


class LabelledStream:
    """A checked labelled file whose rows are read on demand (see the module docstring)."""

    def __init__(self, path: Path, *, fmt: str, text: str | None, scan: _Scan,
                 text_col: str | None, label_col: str | None, notes: list[str],
                 chunk_bytes: int):
        self.path = path
        self.fingerprint = scan.fingerprint
        self.size = scan.size  # decompressed bytes
        self.physical_lines = scan.physical_lines
        if text is not None:  # counted in the text: a UTF-16 character may hold a 0x0a byte
            self.physical_lines = text.count("\n") + (not text.endswith("\n"))
        self._fmt, self._text, self._chunk_bytes = fmt, text, chunk_bytes
        self.in_memory = text is not None  # decoded whole: not UTF-8, or encoding given
        self.rows_read = 0
        self.skipped: dict[str, int] = {}
        self.skipped_lines: dict[str, list[int]] = {}
        self.header = self._read_header()
        table = Table(path, self.header, [], [], self.fingerprint, notes=notes)
        self.text_col, self.label_col, chosen = choose_columns(table, text_col, label_col)
        self.notes = notes + chosen

    def _read_header(self) -> list[str]:
        if self._fmt == "lines":
            return ["text"]
        with self._lines() as lines:
            if self._fmt == "jsonl":
                return jsonl_header(record for _, record in
                                    jsonl_records(self.path, lines, Counter()))
            return next(delimited_rows(self.path, lines, self._fmt, Counter()))

    @contextlib.contextmanager
    def _lines(self):
        """The file's text, read line by line with the format's newline rule."""
        newline = NEWLINE[self._fmt]
        if self._text is not None:
            yield io.StringIO(self._text, newline=newline)
            return
        with _open_binary(self.path) as fh, \
                io.TextIOWrapper(fh, encoding="utf-8-sig", newline=newline) as text:
            text._CHUNK_SIZE = self._chunk_bytes  # how much it decodes at a time
            yield text

    def _numbered_cells(self, lines, parsed: Counter) -> Iterator[tuple[int, str | None,
                                                                        str | None]]:
        """(line, text cell, label cell) for each row the parser gives."""
        if self._fmt == "jsonl":
            for number, record in jsonl_records(self.path, lines, parsed):
                yield (number, json_cell(record.get(self.text_col)),
                       json_cell(record.get(self.label_col)))
            return
        rows = delimited_rows(self.path, lines, self._fmt, parsed)
        ti, li = self.header.index(self.text_col), self.header.index(self.label_col)
        next(rows)  # the header
        for number, row in rows:
            yield number, row[ti], row[li]

    def rows(self) -> Iterator[tuple[int, str, str]]:
        """(line, text, raw label) for each usable row, in file order; rows_read, skipped
        and skipped_lines are set once the rows are exhausted."""
        parsed: Counter = Counter()  # blank lines, counted by the parser
        checked: Counter = Counter()  # empty texts and labels
        lines_kept: dict[str, list[int]] = {}
        rows = used = 0
        with self._lines() as lines:
            for number, text, label in self._numbered_cells(lines, parsed):
                rows += 1
                reason = skip_reason(self.path, number, text, label)
                if reason:
                    checked[reason] += 1
                    kept = lines_kept.setdefault(reason, [])
                    if len(kept) < SKIPPED_LINES_KEPT:
                        kept.append(number)
                    continue
                used += 1
                yield number, text, label
        skipped = parsed + checked  # in load_dataset's order: blank lines first
        self.rows_read = rows + skipped.get("blank line", 0)
        self.skipped, self.skipped_lines = dict(skipped), lines_kept
        if not used:
            raise no_usable_rows(self.path, skipped)
