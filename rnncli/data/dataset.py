"""Files -> texts and labels: format sniffing, decoding, columns, label mapping, splits.

Light core: no TensorFlow here. CSV/TSV go through the standard ``csv`` module in strict
mode rather than pandas, because pandas silently pads short rows, turns ``NA``/``null``
into NaN and cannot say which line broke; here every row is checked against the header
and every problem names its line. The parsing rules live in parse.py, shared with the
streaming reader (stream.py), which reads big files without holding them.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from rnncli.core.errors import DataError
from rnncli.data.columns import Table, choose_columns, map_labels, no_usable_rows, skip_reason
from rnncli.data.parse import (
    NEWLINE,
    Sniff,
    decode_text,
    delimited_rows,
    detect_format,
    json_cell,
    jsonl_header,
    jsonl_records,
    line_rows,
    read_bytes,
)


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
        return read_summary(self.rows_read, len(self.texts), self.skipped)

    def skipped_report(self) -> list[str]:
        return skipped_report(self.skipped_lines, self.skipped)


def read_summary(rows_read: int, used: int, skipped: dict[str, int]) -> str:
    """"N rows read, M used, K skipped (reasons)"."""
    text = f"{rows_read} rows read, {used} used"
    if skipped:
        reasons = ", ".join(f"{n} {reason}" for reason, n in sorted(skipped.items()))
        text += f", {sum(skipped.values())} skipped ({reasons})"
    return text


def skipped_report(skipped_lines: dict[str, list[int]], skipped: dict[str, int]) -> list[str]:
    """One line per reason, with the line numbers of the rows skipped for it (a streamed
    file keeps the first of them only, and says so)."""
    if not skipped_lines:
        return ["no rows skipped"]
    return [f"skipped ({reason}): line{'s' if len(lines) > 1 else ''} "
            f"{', '.join(map(str, lines))}"
            + (f" (the first {len(lines)} of {skipped[reason]})"
               if skipped.get(reason, 0) > len(lines) else "")
            for reason, lines in sorted(skipped_lines.items())]


# --------------------------------------------------------------------------- reading


def read_table(path: str | Path, *, encoding: str | None = None) -> Table:
    """Read a .csv/.tsv/.jsonl file (optionally gzip-compressed, whatever its name)."""
    path = Path(path)
    raw = read_bytes(path)
    fingerprint = hashlib.sha256(raw).hexdigest()
    sniff = Sniff()
    sniff.feed(raw)
    fmt, notes = detect_format(path, sniff)
    text = decode_text(path, raw, fmt, encoding, notes)
    lines = io.StringIO(text, newline=NEWLINE[fmt])
    skipped: Counter = Counter()
    if fmt == "jsonl":
        records = list(jsonl_records(path, lines, skipped))
        header = jsonl_header(record for _, record in records)
        numbered = [(n, [json_cell(r.get(k)) for k in header]) for n, r in records]
    elif fmt == "lines":
        header, numbered = ["text"], list(line_rows(lines, skipped))
    else:
        rows = delimited_rows(path, lines, fmt, skipped)
        header = next(rows)
        numbered = list(rows)
    return Table(path, header, [row for _, row in numbered], [n for n, _ in numbered],
                 fingerprint, notes=notes, skipped=skipped)


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
        reason = skip_reason(table.path, line, text, label)
        if reason:
            skipped[reason] += 1
            skipped_lines.setdefault(reason, []).append(line)
            continue
        texts.append(text)
        raw_labels.append(label)
        label_lines.append(line)
    if not texts:
        raise no_usable_rows(table.path, skipped)
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
