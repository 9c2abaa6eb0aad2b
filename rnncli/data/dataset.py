"""Files -> texts and labels: format sniffing, decoding, columns, label mapping, splits.

Light core: no TensorFlow here. CSV/TSV go through the standard ``csv`` module in strict
mode rather than pandas, because pandas silently pads short rows, turns ``NA``/``null``
into NaN and cannot say which line broke; here every row is checked against the header
and every problem names its line.
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import io
import json
import sys
import zlib
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from rnncli.core import jsontext
from rnncli.core.errors import DataError
from rnncli.data.columns import Table, check_label, choose_columns, map_labels, normalize_label
from rnncli.data.encoding import decode

FORMATS = {".csv": "csv", ".tsv": "tsv", ".tab": "tsv", ".jsonl": "jsonl", ".ndjson": "jsonl",
           ".txt": "lines"}  # .txt: one text per line, no header, no labels
_GZIP_MAGIC = b"\x1f\x8b"

csv.field_size_limit(min(sys.maxsize, 2**31 - 1))  # a 10 MB review is a valid cell


@dataclass
class Dataset:
    """Texts with class labels, and how they were obtained."""

    texts: list[str]
    labels: np.ndarray  # class indexes (int8): with two classes 0 negative, 1 positive
    label_names: tuple[str, ...]  # class names by index: (negative, positive) for two
    text_col: str
    label_col: str
    fingerprint: str
    rows_read: int
    skipped: dict[str, int]
    skipped_lines: dict[str, list[int]]
    notes: list[str] = field(default_factory=list)

    @property
    def positive_label(self) -> str:
        return self.label_names[1]

    @property
    def binary(self) -> bool:
        return len(self.label_names) == 2

    def class_counts(self) -> dict[str, int]:
        """Rows of each class, in class order."""
        counts = np.bincount(self.labels, minlength=len(self.label_names))
        return {name: int(n) for name, n in zip(self.label_names, counts)}

    def subset(self, index: np.ndarray) -> Dataset:
        return Dataset(
            texts=[self.texts[i] for i in index],
            labels=self.labels[index],
            label_names=self.label_names,
            text_col=self.text_col,
            label_col=self.label_col,
            fingerprint=self.fingerprint,
            rows_read=len(index),
            skipped={},
            skipped_lines={},
        )

    def write_split(self, path: Path) -> None:
        """Save the rows as the model directory's held-out split (:func:`write_split`)."""
        write_split(path, self)

    def summary(self) -> str:
        used = len(self.texts)
        text = f"{self.rows_read} rows read, {used} used"
        if self.skipped:
            reasons = ", ".join(f"{n} {reason}" for reason, n in sorted(self.skipped.items()))
            text += f", {sum(self.skipped.values())} skipped ({reasons})"
        return text

    def skipped_report(self) -> list[str]:
        """One line per reason, with the line numbers of the rows skipped for it."""
        if not self.skipped_lines:
            return ["no rows skipped"]
        return [f"skipped ({reason}): line{'s' if len(lines) > 1 else ''} "
                f"{', '.join(map(str, lines))}"
                for reason, lines in sorted(self.skipped_lines.items())]


# --------------------------------------------------------------------------- reading


def read_table(path: str | Path, *, encoding: str | None = None) -> Table:
    """Read a .csv/.tsv/.jsonl file (optionally gzip-compressed, whatever its name)."""
    path = Path(path)
    raw = _read_bytes(path)
    fingerprint = hashlib.sha256(raw).hexdigest()
    fmt, notes = _detect_format(path, raw)
    decoded = decode(path, raw, encoding)
    text = decoded.text
    if "\x00" in text:
        raise DataError(f"{path}: line {text[:text.index(chr(0))].count(chr(10)) + 1}: a NUL "
                        f"character; this looks like a binary file, not {fmt.upper()} text; "
                        "give a .csv, .tsv or .jsonl file")
    if encoding is None and decoded.encoding == "utf-16":
        notes.append(f"{path.name}: read as UTF-16 (byte-order mark)")
    elif encoding is None and decoded.encoding != "utf-8":
        notes.append(f"{path.name}: not valid UTF-8 (first at line {decoded.first_bad_line}); "
                     f"read as {decoded.encoding} (set --encoding to choose)")
    if fmt == "lines":
        table = _parse_lines(path, text, fingerprint)
    elif fmt == "jsonl":
        table = _parse_jsonl(path, text, fingerprint)
    else:
        table = _parse_delimited(path, text, fmt, fingerprint, notes)
    table.notes[:0] = notes
    return table


def _read_bytes(path: Path) -> bytes:
    try:  # Path.exists itself fails on a name too long or a folder we may not enter
        exists, is_dir = path.exists(), path.is_dir()
    except OSError as exc:
        raise DataError(f"{path}: cannot be read ({exc.strerror or exc})") from exc
    if not exists:
        raise DataError(f"{path}: no such file; check the path")
    if is_dir:
        raise DataError(f"{path}: is a directory; give a .csv, .tsv or .jsonl file")
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise DataError(f"{path}: cannot be read ({exc.strerror})") from exc
    if raw[:2] == _GZIP_MAGIC:
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as exc:
            raise DataError(f"{path}: gzip data is corrupt or truncated ({exc})") from exc
    if not raw.strip():
        raise DataError(f"{path}: is empty; it needs a header line and at least one row")
    return raw


def _detect_format(path: Path, raw: bytes) -> tuple[str, list[str]]:
    suffixes = [s.lower() for s in path.suffixes]
    if suffixes and suffixes[-1] == ".gz":
        suffixes = suffixes[:-1]
    fmt = FORMATS.get(suffixes[-1] if suffixes else "")
    first_line = raw.split(b"\n", 1)[0]
    if fmt is None:
        if raw.lstrip()[:1] == b"{":
            return "jsonl", []
        raise DataError(f"{path}: unknown file type {''.join(path.suffixes) or '(no extension)'}; "
                        "use .csv, .tsv or .jsonl (optionally .gz), or .txt for unlabelled "
                        "texts")
    notes = []
    if fmt == "csv" and b"\t" in first_line and b"," not in first_line:
        notes.append(f"{path.name}: header is tab-separated; reading it as TSV")
        fmt = "tsv"
    elif fmt == "tsv" and b"," in first_line and b"\t" not in first_line:
        notes.append(f"{path.name}: header is comma-separated; reading it as CSV")
        fmt = "csv"
    return fmt, notes


def _parse_delimited(path: Path, text: str, fmt: str, fingerprint: str,
                     notes: list[str]) -> Table:
    delimiter = "\t" if fmt == "tsv" else ","
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter, strict=True)
    rows: list[list[str | None]] = []
    lines: list[int] = []
    skipped: Counter = Counter()
    header = None
    start = 1
    try:
        for row in reader:
            if header is None and not any(cell.strip() for cell in row):
                pass  # blank lines before the header
            elif header is None:
                header = [h.strip() for h in row]
                _check_header(path, header)
            elif not row or (len(row) == 1 and not row[0].strip() and len(header) > 1):
                skipped["blank line"] += 1
            elif len(row) != len(header):
                raise DataError(
                    f"{path}: line {start}: {len(row)} fields where the header has "
                    f"{len(header)}; quote fields that contain {_name(delimiter)} or newlines")
            else:
                rows.append(row)
                lines.append(start)
            start = reader.line_num + 1
    except csv.Error as exc:
        raise DataError(f"{path}: line {start}: malformed {fmt.upper()} ({exc}); "
                        "check for an unclosed quote") from exc
    if header is None:
        raise DataError(f"{path}: is empty; it needs a header line and at least one row")
    return Table(path, header, rows, lines, fingerprint, notes=[], skipped=skipped)


def _parse_lines(path: Path, text: str, fingerprint: str) -> Table:
    rows, lines, skipped = [], [], Counter()
    all_lines = text.split("\n")
    if all_lines and not all_lines[-1]:
        all_lines.pop()  # the final newline ends the last line
    for number, line in enumerate(all_lines, start=1):
        line = line.rstrip("\r")
        if line.strip():
            rows.append([line])
            lines.append(number)
        else:
            skipped["blank line"] += 1
    return Table(path, ["text"], rows, lines, fingerprint, skipped=skipped)


def _parse_jsonl(path: Path, text: str, fingerprint: str) -> Table:
    records = []
    lines = []
    skipped: Counter = Counter()
    # Split on "\n" only: str.splitlines() would also break inside texts at NEL (\x85)
    # and U+2028, which JSON allows unescaped.
    lines_of_text = text.split("\n")
    if lines_of_text and not lines_of_text[-1].strip():
        lines_of_text.pop()  # the final newline ends the last line; it is no blank line
    for number, line in enumerate(lines_of_text, start=1):
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
        records.append(record)
        lines.append(number)
    header: list[str] = []
    for record in records:
        header.extend(k for k in record if k not in header)
    rows = [[_json_cell(r.get(k)) for k in header] for r in records]
    return Table(path, header, rows, lines, fingerprint, skipped=skipped)


def _json_cell(value) -> str | None:
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


# --------------------------------------------------------------------------- datasets


def load_dataset(path: str | Path, *, text_col: str | None = None, label_col: str | None = None,
                 positive_label: str | None = None, encoding: str | None = None,
                 known_labels: tuple[str, ...] | None = None) -> Dataset:
    """Read a labelled file. Rows with an empty text or label are skipped and counted."""
    table = read_table(path, encoding=encoding)
    text_col, label_col, notes = choose_columns(table, text_col, label_col)
    ti, li = table.header.index(text_col), table.header.index(label_col)
    texts, raw_labels, label_lines = [], [], []
    skipped = Counter(table.skipped)
    skipped_lines: dict[str, list[int]] = {}
    for row, line in zip(table.rows, table.lines):
        text, label = row[ti], row[li]
        reason = None
        if text is None or not text.strip():
            reason = "empty text"
        elif label is None or not normalize_label(label):
            reason = "empty label"
        if reason:
            skipped[reason] += 1
            skipped_lines.setdefault(reason, []).append(line)
            continue
        check_label(table.path, line, label)
        texts.append(text)
        raw_labels.append(label)
        label_lines.append(line)
    if not texts:
        raise DataError(f"{table.path}: no usable rows (" + (f"{sum(skipped.values())} "
            "skipped: " + ", ".join(f"{n} {r}" for r, n in skipped.items()) if skipped
            else "a header and no rows") + "); add rows with a text and a label")
    labels, names = map_labels(table.path, raw_labels, positive_label=positive_label,
                               known=known_labels, lines=label_lines)
    rows_read = len(table.rows) + skipped.get("blank line", 0)
    return Dataset(texts=texts, labels=labels, label_names=names, text_col=text_col,
                   label_col=label_col, fingerprint=table.fingerprint, rows_read=rows_read,
                   skipped=dict(skipped), skipped_lines=skipped_lines,
                   notes=table.notes + notes)


def read_texts(path: str | Path, *, text_col: str | None = None,
               encoding: str | None = None) -> tuple[list[str], list[str]]:
    """Unlabelled texts (non-blank) from a file, and notes for the user."""
    table = read_table(path, encoding=encoding)
    text_col, _, notes = choose_columns(table, text_col, None, need_label=False)
    i = table.header.index(text_col)
    texts = [row[i] for row in table.rows if row[i] is not None and row[i].strip()]
    if not texts:
        raise DataError(f"{table.path}: no non-blank texts in column {text_col!r}")
    return texts, table.notes + [f"{table.path.name}: {n}" for n in notes]


def split_dataset(data: Dataset, *, val_split: float, test_split: float,
                  seed: int) -> tuple[Dataset, Dataset, Dataset]:
    """Stratified train/validation/test split, reproducible from ``seed``."""
    rng = np.random.default_rng(seed)
    parts: list[list[int]] = [[], [], []]
    classes = len(data.label_names)
    if classes > 2:
        _check_rare_classes(data, val_split, test_split)
    for cls in range(classes):
        index = np.flatnonzero(data.labels == cls)
        rng.shuffle(index)
        n_test, n_val = _held_out(len(index), val_split, test_split)
        parts[2].extend(index[:n_test])
        parts[1].extend(index[n_test:n_test + n_val])
        parts[0].extend(index[n_test + n_val:])
    sizes = [len(p) for p in parts]
    counts = np.bincount(data.labels, minlength=classes)
    if min(sizes[1:]) < 2 or sizes[0] < 4 or counts.min() < 3:
        kinds = (f"{counts[1]} positive, {counts[0]} negative" if classes == 2 else
                 ", ".join(f"{n} {name!r}" for name, n in zip(data.label_names, counts)))
        raise DataError(
            f"too few rows to split: {len(data.texts)} rows ({kinds}) give "
            f"train/validation/test = {sizes[0]}/{sizes[1]}/{sizes[2]}; add rows or raise "
            "--val-split/--test-split" + (f" ({data.summary()})" if data.skipped else ""))
    out = []
    for part in parts:
        index = np.array(part, dtype=np.int64)
        rng.shuffle(index)
        out.append(data.subset(index))
    return out[0], out[1], out[2]


def _held_out(rows: int, val_split: float, test_split: float) -> tuple[int, int]:
    """(test rows, validation rows) of a class with ``rows`` rows."""
    return int(round(rows * test_split)), int(round(rows * val_split))


def _check_rare_classes(data: Dataset, val_split: float, test_split: float) -> None:
    """With three or more classes, every class needs a row in each of the three parts."""
    def enough(rows: int) -> bool:
        n_test, n_val = _held_out(rows, val_split, test_split)
        return n_test >= 1 and n_val >= 1 and rows - n_test - n_val >= 1

    rare = {name: n for name, n in data.class_counts().items() if not enough(n)}
    if not rare:
        return
    need = next(n for n in range(3, 10**6) if enough(n) and enough(n + 1))
    listed = ", ".join(f"{name!r} ({n} row{'s' if n != 1 else ''})" for name, n in rare.items())
    raise DataError(
        f"{len(rare)} class{'es' if len(rare) > 1 else ''} too rare for a stratified split "
        f"with --val-split {val_split:g} and --test-split {test_split:g}: {listed}; each "
        f"class needs at least {need} rows: add rows, merge or drop "
        f"{'these classes' if len(rare) > 1 else 'this class'}"
        + (", or raise --val-split/--test-split" if min(rare.values()) >= 3 else ""))


def write_split(path: Path, data: Dataset) -> None:
    """Save rows as gzip JSON lines with ``text`` and ``label`` (the label's name)."""
    with gzip.open(path, "wt", encoding="utf-8", newline="\n") as fh:
        for text, label in zip(data.texts, data.labels):
            fh.write(json.dumps({"text": text, "label": data.label_names[int(label)]}) + "\n")
