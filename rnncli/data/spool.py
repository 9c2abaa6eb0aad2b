"""Large files: split the rows as they stream past and keep them on disk, not in memory.

``rnncli train`` on a file of more than ``STREAM_LINES`` lines (or with ``--stream``)
reads it once with :func:`stream.open_labelled` and writes each row to one of three
parts beside the model directory, so memory does not grow with the rows:

- the part is decided per row, from a uniform draw that depends only on the row's
  position among the usable rows and ``--seed`` (stable, and stratified in expectation);
- the training rows go to ``buckets`` files at random, so that reading a few buckets at
  a time, each in full and shuffled, mixes rows from the whole file even when the file
  is sorted by label; validation and test rows keep the file's order;
- each spooled line is ``<label code>\\t<text>``, the text with its line breaks (CR,
  LF) as spaces: tokenization treats them as spaces anyway (the network's standardize
  replaces every character it does not keep by a space), so scores are unchanged;
- the test rows are also written exactly as the file has them, for the model
  directory's held-out split (what ``rnncli evaluate`` reads).

What stays in memory is two bytes a row: each row's label code (class weights and the
validation and test labels come from them).
Light: the standard library and NumPy.
"""

from __future__ import annotations

import array
import gzip
import json
import math
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from rnncli.core.errors import DataError
from rnncli.data.columns import map_labels
from rnncli.data.stream import LabelledStream, open_labelled

STREAM_LINES = 100_000  # "auto" streams a file of more lines than this
BUCKET_ROWS = 16_384  # training rows per bucket file, about, up to MAX_BUCKETS files
MAX_BUCKETS = 256  # files open at once while spooling stay well under the usual 1024
VERIFY_ROWS = 256  # validation texts kept exactly, for the check of the saved model
MAX_RAW_LABELS = 1000  # distinct label spellings kept (columns.MAX_CLASSES classes at most)
_DRAWS = 65_536  # uniform draws made at a time
_PARTS = ("train", "validation", "test")


@dataclass
class Part:
    """One split on disk: its files of ``<code>\\t<text>`` lines, and its rows' label
    codes (two bytes a row), in the order they were read."""

    files: list[Path]
    rows: int = 0
    codes: array.array = field(default_factory=lambda: array.array("h"))


@dataclass
class Spooled:
    """A labelled file split into parts on disk, and what was learnt while reading it."""

    stream: LabelledStream
    parts: dict[str, Part]
    label_names: tuple[str, ...]
    class_of_code: np.ndarray  # raw label code -> class index
    class_counts: dict[str, dict[str, int]]  # part -> class name -> rows
    test_file: Path  # the test rows exactly, as JSON lines {"text", "label": code}
    verify_texts: list[str] = field(default_factory=list)  # first validation texts, exact

    @property
    def binary(self) -> bool:
        return len(self.label_names) == 2

    def labels(self, part: str) -> np.ndarray:
        """The class indexes of a part's rows (validation and test: in file order, the
        order their scores come in; training: in the order they were read)."""
        codes = np.frombuffer(self.parts[part].codes, np.int16).astype(np.int64)
        return self.class_of_code[codes].astype(np.int8 if len(self.label_names) < 128
                                                else np.int16)

    def rows(self, part: str) -> int:
        return self.parts[part].rows

    def write_test_split(self, path: Path) -> None:
        """The test rows as the model directory keeps them (dataset.write_split's form)."""
        with open(self.test_file, encoding="utf-8") as src, \
                gzip.open(path, "wt", encoding="utf-8", newline="\n") as fh:
            for line in src:
                record = json.loads(line)
                name = self.label_names[int(self.class_of_code[record["label"]])]
                fh.write(json.dumps({"text": record["text"], "label": name}) + "\n")


def should_stream(path: str | Path, choice: bool | None, *, encoding: str | None = None,
                  text_col: str | None = None, label_col: str | None = None
                  ) -> LabelledStream | None:
    """The opened stream when training should stream the file (``choice`` True, or None
    and more than STREAM_LINES lines), else None (the file is read whole, as before)."""
    if choice is False:
        return None
    stream = open_labelled(path, text_col=text_col, label_col=label_col, encoding=encoding)
    if choice is None and stream.physical_lines <= STREAM_LINES:
        return None
    return stream


def spool(stream: LabelledStream, workdir: Path, *, val_split: float, test_split: float,
          seed: int, positive_label: str | None = None) -> Spooled:
    """Read every row of ``stream`` once and write it to its part under ``workdir``."""
    expected = stream.physical_lines * (1 - val_split - test_split)
    buckets = min(MAX_BUCKETS, max(1, math.ceil(expected / BUCKET_ROWS)))
    parts = {"train": Part([workdir / f"train-{i:04d}.txt" for i in range(buckets)]),
             "validation": Part([workdir / "validation.txt"]),
             "test": Part([workdir / "test.txt"])}
    writer = _Writer(parts, workdir / "test-exact.jsonl", seed, val_split, test_split)
    try:
        writer.write_all(stream)
    finally:
        writer.close()
    class_of_code, names = _classes(stream, writer, positive_label)
    counts = {part: _class_counts(writer.part_codes[part], class_of_code, names)
              for part in _PARTS}
    _check_parts(stream, counts, names)
    return Spooled(stream, parts, names, class_of_code, counts, writer.test_file,
                   writer.verify_texts)


class _Writer:
    """Writes rows to their parts; keeps the raw labels' codes and counts."""

    def __init__(self, parts: dict[str, Part], test_file: Path, seed: int,
                 val_split: float, test_split: float):
        self.parts, self.test_file = parts, test_file
        self.cuts = (test_split, test_split + val_split)
        self.rng = np.random.default_rng([seed, 0x5350])  # per-row draws: split, bucket
        self.raw: dict[str, int] = {}  # raw label -> code, in order of first sight
        self.raw_counts: Counter = Counter()  # code -> rows
        self.first_lines: dict[int, int] = {}  # code -> its first line, for messages
        self.part_codes: dict[str, Counter] = {p: Counter() for p in _PARTS}
        self.verify_texts: list[str] = []
        self.handles = {p: [open(f, "w", encoding="utf-8", newline="\n") for f in part.files]
                        for p, part in parts.items()}
        self.exact = open(test_file, "w", encoding="utf-8", newline="\n")

    def write_all(self, stream: LabelledStream) -> None:
        draws = buckets = None
        for i, (line, text, label) in enumerate(stream.rows()):
            if i % _DRAWS == 0:
                draws, buckets = self.rng.random(_DRAWS), self.rng.integers(0, 2**31, _DRAWS)
            code = self.raw.setdefault(label, len(self.raw))
            if len(self.raw) > MAX_RAW_LABELS:
                raise DataError(f"{stream.path}: more than {MAX_RAW_LABELS} different values "
                                f"in the label column {stream.label_col!r} (line {line}); "
                                "that is not a column of class labels: check --label-col")
            if code not in self.first_lines:
                self.first_lines[code] = line
            self.raw_counts[code] += 1
            u = draws[i % _DRAWS]
            part = "test" if u < self.cuts[0] else "validation" if u < self.cuts[1] else "train"
            self._write(part, code, text, int(buckets[i % _DRAWS]))

    def _write(self, part: str, code: int, text: str, bucket: int) -> None:
        handles = self.handles[part]
        flat = text.replace("\r", " ").replace("\n", " ")
        handles[bucket % len(handles)].write(f"{code}\t{flat}\n")
        self.parts[part].rows += 1
        self.part_codes[part][code] += 1
        self.parts[part].codes.append(code)
        if part == "test":
            self.exact.write(json.dumps({"text": text, "label": code}) + "\n")
        elif part == "validation" and len(self.verify_texts) < VERIFY_ROWS:
            self.verify_texts.append(text)

    def close(self) -> None:
        for handles in self.handles.values():
            for fh in handles:
                fh.close()
        self.exact.close()


def _classes(stream: LabelledStream, writer: _Writer,
             positive_label: str | None) -> tuple[np.ndarray, tuple[str, ...]]:
    """(class index of each raw label code, class names), by columns.map_labels's rules,
    given each distinct value once with the rows that hold it."""
    raw = list(writer.raw)  # in code order
    labels, names = map_labels(stream.path, raw, positive_label=positive_label,
                               lines=[writer.first_lines[c] for c in range(len(raw))],
                               rows=[writer.raw_counts[c] for c in range(len(raw))])
    return np.asarray(labels, np.int64), names


def _class_counts(codes: Counter, class_of_code: np.ndarray,
                  names: tuple[str, ...]) -> dict[str, int]:
    counts = dict.fromkeys(names, 0)
    for code, n in codes.items():
        counts[names[int(class_of_code[code])]] += n
    return counts


def _check_parts(stream: LabelledStream, counts: dict[str, dict[str, int]],
                 names: tuple[str, ...]) -> None:
    """dataset.split_dataset's rules: validation and test need 2 rows, training 4, every
    class 3; with three or more classes, every class needs a row in each part (the split
    is drawn per row here, so a class of a few rows can miss one: another --seed, or
    --no-stream, which splits each class exactly)."""
    sizes = {part: sum(c.values()) for part, c in counts.items()}
    totals = {name: sum(c[name] for c in counts.values()) for name in names}
    missing = [(part, name) for part, c in counts.items() for name, n in c.items()
               if n == 0] if len(names) > 2 else []
    if (sizes["validation"] < 2 or sizes["test"] < 2 or sizes["train"] < 4
            or min(totals.values()) < 3 or missing):
        where = "".join(f", {name!r} has no {part} rows" for part, name in missing[:5])
        raise DataError(f"{stream.path}: too few rows to split: train/validation/test = "
                        f"{sizes['train']}/{sizes['validation']}/{sizes['test']}{where}; "
                        "add rows, raise --val-split/--test-split"
                        + (", try another --seed or --no-stream" if missing else ""))
