"""Which columns of a table hold the texts and the labels, and which label is positive:
the names rnncli recognises (English, Chinese, Japanese) and the mistakes it refuses.
Light: NumPy and the standard library."""

from __future__ import annotations

import functools
import math
import unicodedata
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from rnncli.core.errors import DataError, ModelError

TEXT_COLUMNS = ("text", "review", "sentence", "content", "body", "comment", "document",
                "tweet", "message", "review_text", "phrase",
                "评论", "内容", "文本", "评价", "評論", "內容", "評價",  # Chinese
                "テキスト", "本文", "レビュー")  # Japanese
LABEL_COLUMNS = ("label", "sentiment", "polarity", "class", "target", "labels", "y",
                 "标签", "情感", "类别", "极性", "標籤", "類別", "極性",  # Chinese
                 "ラベル", "感情")  # Japanese
# English, Chinese (simplified and traditional) and Japanese spellings.
POSITIVE_NAMES = frozenset({"positive", "pos", "1", "true", "yes", "y", "+1", "+",
                            "正面", "积极", "積極", "好评", "好評", "正向", "ポジティブ"})
NEGATIVE_NAMES = frozenset({"negative", "neg", "0", "false", "no", "n", "-1", "-",
                            "负面", "負面", "消极", "消極", "差评", "差評", "负向", "負向",
                            "ネガティブ"})
# More distinct label values than this is a text or id column picked by mistake.
MAX_CLASSES = 100


# --------------------------------------------------------------------------- columns



@dataclass
class Table:
    """A parsed file: header, rows (all strings, or None for a JSON null/missing key)."""

    path: Path
    header: list[str]
    rows: list[list[str | None]]
    lines: list[int]  # the line each row starts on, for messages
    fingerprint: str  # sha256 of the decompressed bytes
    notes: list[str] = field(default_factory=list)
    skipped: Counter = field(default_factory=Counter)

def choose_columns(table: Table, text_col: str | None, label_col: str | None,
                   *, need_label: bool = True) -> tuple[str, str | None, list[str]]:
    """Return (text column, label column, notes). Raises DataError listing the columns."""
    notes = []
    found = ", ".join(repr(c) for c in table.header)
    chosen = {}
    for role, given, candidates, option in (
        ("text", text_col, TEXT_COLUMNS, "--text-col"),
        ("label", label_col, LABEL_COLUMNS, "--label-col"),
    ):
        if role == "label" and not need_label and given is None:
            chosen[role] = None
            continue
        if given is not None:
            if given not in table.header:
                raise DataError(f"{table.path}: no column named {given!r}; columns found: {found}")
            chosen[role] = given
            continue
        matches = [c for c in table.header if c.lower() in candidates]
        if len(matches) != 1:
            what = "no" if not matches else "more than one"
            raise DataError(f"{table.path}: {what} {role} column found among {found}; "
                            f"name it with {option}")
        chosen[role] = matches[0]
        notes.append(f"{role} column: {matches[0]!r} (detected; set {option} to override)")
    if chosen["label"] is not None and chosen["text"] == chosen["label"]:
        raise DataError(f"{table.path}: text and label cannot both be column {chosen['text']!r}")
    return chosen["text"], chosen["label"], notes


# --------------------------------------------------------------------------- labels


def normalize_label(value: str) -> str:
    """Spelling-insensitive key: ' Pos' -> 'pos', '1.0' -> '1', 'ｐｏｓ' (full width) -> 'pos';
    invisible format characters (a zero-width space, say) are dropped."""
    value = "".join(c for c in unicodedata.normalize("NFKC", value)
                    if unicodedata.category(c) != "Cf").strip()
    try:
        number = float(value)
    except ValueError:
        return value.lower()
    if math.isfinite(number) and number == int(number):
        return str(int(number))
    return value.lower()


def _visible(value: str) -> str:
    """A label as shown: without surrounding spaces or invisible format characters."""
    return "".join(c for c in value if unicodedata.category(c) != "Cf").strip()


def check_label(path: Path, line: int, label: str) -> None:
    """A label is one line of text: one holding a line break or another control character
    would break the one-line-per-text outputs (``predict --format label``)."""
    bad = next((c for c in label.strip() if unicodedata.category(c) in ("Cc", "Zl", "Zp")),
               None)
    if bad is not None:
        raise DataError(f"{path}: line {line}: the label {label.strip()!r} holds a control "
                        f"character ({bad!r}); a label must be one line of text: fix that "
                        "row")


def skip_reason(path: Path, line: int, text: str | None, label: str | None) -> str | None:
    """Why a row of a labelled file is skipped ("empty text", "empty label"), or None when
    it is used; a used row's label must be one line of text (check_label)."""
    if text is None or not text.strip():
        return "empty text"
    if label is None or _label_state(label) == "empty":
        return "empty label"
    if _label_state(label) == "bad":
        check_label(path, line, label)  # raises, naming the line
    return None


@functools.lru_cache(maxsize=4096)
def _label_state(label: str) -> str:
    """"empty", "bad" (check_label refuses it) or "ok": cached, because a file has few
    label values and a million rows (2 µs a row uncached, 0.2 µs cached)."""
    if not normalize_label(label):
        return "empty"
    try:
        check_label(Path(), 0, label)
    except DataError:
        return "bad"
    return "ok"


def no_usable_rows(path: Path, skipped: Counter) -> DataError:
    """The error for a labelled file without a usable row; ``skipped``: rows by reason."""
    return DataError(f"{path}: no usable rows (" + (f"{sum(skipped.values())} "
        "skipped: " + ", ".join(f"{n} {r}" for r, n in skipped.items()) if skipped
        else "a header and no rows") + "); add rows with a text and a label")


def map_labels(path: Path, raw: list[str], *, positive_label: str | None = None,
               known: tuple[str, ...] | None = None,
               lines: list[int] | None = None,
               rows: list[int] | None = None) -> tuple[np.ndarray, tuple[str, ...]]:
    """Map raw label strings to class indexes; returns (indexes, class names).

    Two values: a binary classifier, (negative, positive) as 0/1. Three or more: one class
    per value, numbers in numeric order (1 < 2 < 10), other names in alphabetical order,
    each spelled as most rows spell it. ``known``: a trained model's class names;
    ``lines``: the line of each label, for messages. ``rows``: how many rows hold each
    entry of ``raw`` (a streamed file's distinct values), else one each.
    """
    normal = {v: normalize_label(v) for v in set(raw)}  # few values, a million rows
    keys = [normal[v] for v in raw]
    tally = Counter(raw) if rows is None else Counter(dict(zip(raw, rows)))
    counts = Counter()
    for value, n in tally.items():
        counts[normal[value]] += n
    if known is not None:
        return _to_known(path, raw, keys, known, lines)
    if len(counts) < 2:
        listed = ", ".join(f"{k!r} ({n} rows)" for k, n in counts.most_common(10))
        raise DataError(f"{path}: only one label value ({listed}); a classifier needs rows of "
                        "two or more classes")
    spelled: dict[str, Counter] = {}
    for value, n in tally.items():  # in order of first sight, as ties are broken
        spelled.setdefault(normal[value], Counter())[_visible(value)] += n
    names = {key: spellings.most_common(1)[0][0] for key, spellings in spelled.items()}
    if len(counts) > 2:
        if positive_label is not None:
            raise DataError(f"{path}: --positive-label applies to two label values; this file "
                            f"has {len(counts)} ({_examples(counts)}), so every class is "
                            "learnt: drop --positive-label")
        _check_class_count(path, counts, sum(counts.values()))
        order = sorted(counts, key=_class_order)
        lookup = {key: i for i, key in enumerate(order)}
        return (np.array([lookup[k] for k in keys], dtype=_label_dtype(len(order))),
                tuple(names[k] for k in order))
    positive = _positive_key(path, list(counts), positive_label)
    negative = next(k for k in counts if k != positive)
    labels = np.array([1 if k == positive else 0 for k in keys], dtype=np.int8)
    return labels, (names[negative], names[positive])


def _to_known(path: Path, raw: list[str], keys: list[str], known: tuple[str, ...],
              lines: list[int] | None) -> tuple[np.ndarray, tuple[str, ...]]:
    """map_labels onto a trained model's classes ``known``."""
    lookup = {normalize_label(name): i for i, name in enumerate(known)}
    if len(lookup) < len(known):  # names an older rnncli kept apart
        raise ModelError(f"{path}: the model's classes ({_quote(known)}) differ only in "
                         "case, width or invisible characters, so labels cannot be "
                         "matched to them; retrain the model")
    unknown = Counter(_visible(v) for v, k in zip(raw, keys) if k not in lookup)
    if unknown:  # counted by spelling, as the file has them
        first = next(i for i, k in enumerate(keys) if k not in lookup)
        where = f" (first at line {lines[first]})" if lines else ""
        rows = sum(unknown.values())
        raise DataError(f"{path}: {rows} row{'s have labels' if rows > 1 else ' has a label'}"
                        f" that {'are' if rows > 1 else 'is'} not the model's "
                        f"({_quote(known)}): {_examples(unknown)}{where}; check "
                        "--label-col, or relabel or drop those rows")
    return np.array([lookup[k] for k in keys], dtype=_label_dtype(len(known))), known


def _label_dtype(classes: int):
    return np.int8 if classes <= 127 else np.int16


def _class_order(key: str):
    """Numbers first, in numeric order; then names, alphabetically (case-insensitively)."""
    if _is_numeric_label(key):
        return (0, float(key), key)
    return (1, key.casefold(), key)


def _check_class_count(path: Path, counts: Counter, rows: int) -> None:
    """Refuse a column that cannot hold labels: more than MAX_CLASSES values, or (from
    three) fewer than two rows per value on average, as an id or text column has."""
    found = f"the label column has {len(counts)} distinct values in {rows} rows"
    if len(counts) > MAX_CLASSES:
        raise DataError(f"{path}: {found} ({_examples(counts)}); rnncli learns at most "
                        f"{MAX_CLASSES} classes, so this looks like a text or id column: "
                        "check which column holds the labels (--label-col), or merge classes")
    if 2 * len(counts) > rows:
        raise DataError(f"{path}: {found} ({_examples(counts)}); so many values for so few "
                        "rows look like a text or id column, not labels: check which column "
                        "holds the labels (--label-col); each class needs several rows")


def _examples(counts: Counter, shown: int = 5) -> str:
    listed = ", ".join(f"{k!r} ({n} row{'s' if n != 1 else ''})"
                       for k, n in counts.most_common(shown))
    return listed + (", ..." if len(counts) > shown else "")


def _positive_key(path: Path, keys: list[str], positive_label: str | None) -> str:
    if positive_label is not None:
        key = normalize_label(positive_label)
        if key not in keys:
            raise DataError(f"{path}: --positive-label {positive_label!r} is not one of the "
                            f"labels {_quote(keys)}")
        return key
    positives = [k for k in keys if k in POSITIVE_NAMES]
    if len(positives) == 1:
        other = next(k for k in keys if k != positives[0])
        # With two numbers, '1' is positive only against 0 or -1: with 1 and 2 (star
        # ratings) it is the negative one, and a wrong guess would invert the model.
        numeric = _is_numeric_label(positives[0]) and _is_numeric_label(other)
        if not numeric or other in NEGATIVE_NAMES:
            return positives[0]
    raise DataError(f"{path}: cannot tell which of the labels {_quote(keys)} is positive; "
                    "name it with --positive-label")


def _is_numeric_label(key: str) -> bool:
    """A finite number ("nan" and "inf" are names: they have no place in numeric order)."""
    try:
        return math.isfinite(float(key))
    except ValueError:
        return False


def _quote(values) -> str:
    return ", ".join(repr(v) for v in values)
