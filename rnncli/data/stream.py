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

Memory: UTF-8 files (with or without a BOM) stream, and so do files in another encoding
(given by ``encoding``, or detected) larger than DECODE_WHOLE_BYTES: the encoding is
detected by encoding.decode on a window of DETECT_BYTES that starts at the line of the first
byte that is not UTF-8, then one more pass checks that all of the file fits it, naming
the line of a byte that does not. A smaller file in another encoding, and a UTF-16 file
(BOM) of any size, are decoded whole by encoding.decode, with its notes and errors; the
decoded text is kept and its rows streamed from it. JSON lines are parsed twice:
``open_labelled`` reads every object for the header (the union of the keys, which
choose_columns needs), and rows() again.

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
import re
import zlib
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

from rnncli.core.errors import DataError
from rnncli.data.columns import Table, choose_columns, no_usable_rows, skip_reason
from rnncli.data.encoding import decode
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
# A file that is not UTF-8 is decoded whole up to this size (detection then reads all of
# it, as load_dataset's does); above, detection reads a window of DETECT_BYTES, and the
# file streams.
DECODE_WHOLE_BYTES = 32 * 2**20
DETECT_BYTES = DECODE_WHOLE_BYTES


def open_labelled(path: str | Path, *, text_col: str | None = None,
                  label_col: str | None = None, encoding: str | None = None,
                  chunk_bytes: int = 1 << 20) -> LabelledStream:
    """Check a labelled file and read its header; rows come from ``rows()``."""
    path, chunk_bytes = Path(path), max(1, chunk_bytes)  # read(0) would end the file at once
    scan = _Scan(path, chunk_bytes)
    fmt, notes = detect_format(path, scan.sniff)
    text, codec = None, "utf-8-sig"
    if (encoding is not None and not _names_utf8(encoding)) or not scan.utf8:
        if scan.size <= DECODE_WHOLE_BYTES or scan.utf16 or not _ascii_based(encoding):
            text = decode_text(path, read_bytes(path), fmt, encoding, notes)
        else:
            codec = _stream_codec(path, scan, encoding, notes, chunk_bytes)
    if text is None and scan.nul_line:
        raise nul_error(path, scan.nul_line, fmt)
    return LabelledStream(path, fmt=fmt, text=text, scan=scan, text_col=text_col,
                          label_col=label_col, notes=notes, chunk_bytes=chunk_bytes,
                          codec=codec)


def _stream_codec(path: Path, scan: _Scan, encoding: str | None, notes: list[str],
                  chunk_bytes: int) -> str:
    """The codec of a large file that is not UTF-8: ``encoding``, or detected on a window
    from the line of its first byte that is not UTF-8; every byte checked to fit it."""
    if encoding is not None:
        _check_fits(path, encoding, chunk_bytes,
                    f"is not valid {encoding}; check --encoding, or fix the bytes in the file")
        return encoding
    if scan.utf8_bom:  # a BOM says UTF-8: a bad byte is an error, not a reason to guess
        _check_fits(path, "utf-8-sig", chunk_bytes,
                    "is not valid utf-8; pass --encoding with the file's encoding")
    # the window holds text before the first byte that is not UTF-8, as decode weighs it
    start, lines_before = _line_start(path, max(0, scan.first_bad - DETECT_BYTES // 2),
                                      chunk_bytes)
    window = _read_window(path, start, DETECT_BYTES, chunk_bytes)
    try:
        decoded = decode(path, window)
    except DataError as exc:  # its line numbers count from the window's first line
        raise DataError(_shift_lines(str(exc), str(path), lines_before)) from exc
    name = decoded.encoding
    _check_fits(path, name, chunk_bytes, f"does not fit {name}, which the rest of the file "
                "looks like; fix that byte, or pass --encoding")
    notes.append(f"{path.name}: not valid UTF-8 (first at line "
                 f"{decoded.first_bad_line + lines_before}); read as {name} (set --encoding "
                 "to choose)")
    return name


def _ascii_based(encoding: str | None) -> bool:
    """Whether ``encoding`` (None: detected, which keeps only these) writes ASCII as ASCII,
    so that a newline is one 0x0a byte, never inside a character (not UTF-16 or UTF-32;
    an unknown name is decoded whole, which reports it)."""
    if encoding is None:
        return True
    try:
        return _ASCII_SAMPLE.encode(encoding) == _ASCII_SAMPLE.encode("ascii")
    except (LookupError, UnicodeError):
        return False


_ASCII_SAMPLE = "text,label\t\"a b\"\r\n"


def _shift_lines(message: str, prefix: str, lines: int) -> str:
    """``message`` with its first "line N" after ``prefix`` moved on by ``lines``."""
    head, rest = (prefix, message[len(prefix):]) if message.startswith(prefix) else ("", message)
    return head + re.sub(r"\bline (\d+)", lambda m: f"line {int(m.group(1)) + lines}", rest,
                         count=1)


def _line_start(path: Path, offset: int, chunk_bytes: int) -> tuple[int, int]:
    """(byte offset of the line holding byte ``offset``, lines before it)."""
    start = lines = seen = 0
    with _read_chunks(path, chunk_bytes) as chunks:
        for chunk in chunks:
            end = min(len(chunk), offset - seen)
            found = chunk.rfind(b"\n", 0, end)
            if found >= 0:
                start = seen + found + 1
            lines += chunk.count(b"\n", 0, end)
            seen += len(chunk)
            if seen > offset:
                break
    return start, lines


def _read_window(path: Path, start: int, size: int, chunk_bytes: int) -> bytes:
    """``size`` bytes from ``start``, cut after their last newline if the file goes on."""
    parts, seen, kept = [], 0, 0
    with _read_chunks(path, chunk_bytes) as chunks:
        for chunk in chunks:
            if seen + len(chunk) > start:
                part = chunk[max(0, start - seen):]
                parts.append(part[:size - kept])
                kept += len(parts[-1])
            seen += len(chunk)
            if kept >= size:
                window = b"".join(parts)
                cut = window.rfind(b"\n")
                return window[:cut + 1] if cut >= 0 else window
    return b"".join(parts)


def _check_fits(path: Path, codec: str, chunk_bytes: int, misfit: str) -> None:
    """Decode every byte of the file with ``codec``, in chunks; a byte that does not fit
    is an error naming its line: "line N: byte 0x.. " + ``misfit``."""
    decoder = codecs.getincrementaldecoder(codec)()
    lines = 1  # the line the next chunk starts in
    with _read_chunks(path, chunk_bytes) as chunks:
        for chunk in chunks:
            _fits(path, decoder, chunk, lines, misfit)
            lines += chunk.count(b"\n")
    _fits(path, decoder, b"", lines, misfit, final=True)


def _fits(path: Path, decoder, chunk: bytes, lines: int, misfit: str, *,
          final: bool = False) -> None:
    try:
        decoder.decode(chunk, final)
    except UnicodeDecodeError as exc:
        data = exc.object
        held = len(data) - len(chunk)  # bytes the decoder kept from the chunk before
        line = lines + chunk.count(b"\n", 0, max(0, exc.start - held))
        if final:
            raise DataError(f"{path}: line {line}: the file ends inside a character of its "
                            "encoding (was it cut short?); fix its end, or pass --encoding") \
                from exc
        raise DataError(f"{path}: line {line}: byte 0x{data[exc.start]:02x} {misfit}") from exc


def _names_utf8(encoding: str) -> bool:
    """``--encoding utf-8`` (any spelling) streams as a file with no --encoding would."""
    try:
        return codecs.lookup(encoding).name == "utf-8"
    except LookupError:
        return False  # decode_text reports the unknown name


class _Scan:
    """One pass over the decompressed bytes: fingerprint, physical lines, sniffing, whether
    they are UTF-8 (if not, the offset of the first byte that is not: ``first_bad``), the
    byte-order marks, and the line of the first NUL byte (0: none)."""

    def __init__(self, path: Path, chunk_bytes: int):
        digest = hashlib.sha256()
        newlines, last, head = 0, b"", b""
        self.sniff = Sniff()
        self.nul_line = 0
        self.size = 0  # decompressed bytes
        self.first_bad = -1
        utf8 = codecs.getincrementaldecoder("utf-8")()
        with _read_chunks(path, chunk_bytes) as chunks:
            for chunk in chunks:
                digest.update(chunk)
                self.sniff.feed(chunk)
                head = head if len(head) >= 4 else (head + chunk)[:4]
                if not self.nul_line and b"\x00" in chunk:
                    self.nul_line = newlines + chunk.count(b"\n", 0, chunk.index(b"\x00")) + 1
                newlines += chunk.count(b"\n")
                if self.first_bad < 0:
                    self.first_bad = _first_bad(utf8, chunk, self.size)
                self.size += len(chunk)
                last = chunk[-1:]
        if self.first_bad < 0:
            self.first_bad = _first_bad(utf8, b"", self.size, final=True)
        self.utf8 = self.first_bad < 0
        self.utf16 = head.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE))
        self.utf8_bom = head.startswith(codecs.BOM_UTF8)
        if not self.sniff.first_char:
            raise empty_file(path)
        self.fingerprint = digest.hexdigest()
        self.physical_lines = newlines + (last != b"\n")


def _first_bad(decoder, chunk: bytes, before: int, *, final: bool = False) -> int:
    """The file offset of the first byte of ``chunk`` (which starts at ``before``) that is
    not UTF-8, counting bytes the decoder held from the chunk before; -1 if none."""
    try:
        decoder.decode(chunk, final)
    except UnicodeDecodeError as exc:
        return before - (len(exc.object) - len(chunk)) + exc.start
    return -1


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
                 chunk_bytes: int, codec: str = "utf-8-sig"):
        self.path = path
        self.fingerprint = scan.fingerprint
        self.size = scan.size  # decompressed bytes
        self.physical_lines = scan.physical_lines
        if text is not None:  # counted in the text: a UTF-16 character may hold a 0x0a byte
            self.physical_lines = text.count("\n") + (not text.endswith("\n"))
        self._fmt, self._text, self._chunk_bytes, self.codec = fmt, text, chunk_bytes, codec
        self.in_memory = text is not None  # decoded whole: see the module docstring
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
                io.TextIOWrapper(fh, encoding=self.codec, newline=newline) as text:
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
