"""Scoring texts: batching, streaming stdin in order, one record per input line.

Importing this module is light; TensorFlow is imported when a model is loaded with the
TensorFlow engine (``onnx_engine.py`` scores without it).
Blank lines are never sent to the model, and lines that are not UTF-8 are scored as
decoded with U+FFFD: each gets its record, with a ``status`` saying what happened, so
output lines match input lines one to one.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from rnncli.core.config import MAX_TEXT_CHARS
from rnncli.core.errors import ModelError, UsageError
from rnncli.inference.metrics import decide
from rnncli.modeldir import artifacts

SCORE_DIGITS = 6  # a record's score is rounded to this many decimals
STATUS_OK = "ok"
STATUS_TRUNCATED = "truncated"  # scored on its first MAX_LINE_BYTES bytes
STATUS_EMPTY = "empty"
STATUS_INVALID = "invalid_utf8"  # scored with U+FFFD for the bad bytes (decode_input)
FAILED = (STATUS_INVALID,)  # predict and explain still exit 3 for them
# Batches read from stdin at a time, to form batches of texts of similar length; a window
# also closes once it holds STREAM_WINDOW_BYTES, so memory stays bounded for huge lines.
STREAM_WINDOW = 8
STREAM_WINDOW_BYTES = 32 * 2**20
# Bytes of one stdin line that are kept: every character the model reads (at most
# 4 bytes each), and no more, so a stream of huge lines cannot exhaust memory.
MAX_LINE_BYTES = 4 * MAX_TEXT_CHARS


def choose_engine(manifest: dict[str, Any], engine: str = "auto", device: str = "auto") -> str:
    """'onnx' or 'tf' for ``--engine`` (auto|onnx|tf) and ``--device``.

    auto: ONNX Runtime (no TensorFlow import: a fraction of a second to start) when the
    model has its files and the CPU may be used; TensorFlow when a GPU is asked for or the
    model predates the ONNX files.
    """
    has_onnx = all(name in manifest["files"]
                   for name in (artifacts.ONNX_FILE, artifacts.SERVING_FILE))
    on_cpu = device.split(":")[0] in ("auto", "cpu")
    if engine == "tf" or (engine == "auto" and not (has_onnx and on_cpu)):
        return "tf"
    if not on_cpu:
        raise UsageError(f"--engine onnx runs on the CPU, not --device {device}; drop one "
                         "of the two")
    if not has_onnx:
        raise ModelError("this model has no ONNX files (it was trained by an older rnncli, "
                         "or the ONNX export failed when it was trained); use --engine tf")
    return "onnx"


def check_files(model_dir: Path, manifest: dict[str, Any], engine: str = "auto",
                device: str = "auto") -> None:
    """Check the model against the manifest (no TensorFlow): model.keras always (a
    directory with a broken one is broken, whichever engine runs), and the ONNX engine's
    files when it is chosen."""
    onnx = choose_engine(manifest, engine, device) == "onnx"
    artifacts.check_model_dir(model_dir, manifest, extra=(
        (artifacts.SERVING_FILE, artifacts.ONNX_FILE) if onnx else ()))


@dataclass
class Predictor:
    """A loaded model directory, ready to score texts."""

    model_dir: Path
    manifest: dict[str, Any]
    engine: Any  # keras_engine.KerasEngine or onnx_engine.OnnxEngine: .scores(texts, batch_size)
    threshold: float | None  # None for a model of more than two classes

    @classmethod
    def load(cls, model_dir: str | Path, *, device: str = "auto", engine: str = "auto",
             threshold: float | None = None, manifest: dict | None = None) -> Predictor:
        """``manifest``: from an earlier :func:`check_files` of the same dir and engine.

        Files are checked against the manifest's hashes before anything reads them; the
        ONNX engine never imports TensorFlow.
        """
        model_dir = Path(model_dir)
        if manifest is None:
            manifest = artifacts.read_manifest(model_dir)
            check_files(model_dir, manifest, engine, device)
        check_threshold(manifest, threshold)
        threshold = manifest["threshold"] if threshold is None else threshold
        if choose_engine(manifest, engine, device) == "onnx":
            from rnncli.inference.onnx_engine import OnnxEngine

            config = artifacts.model_config(manifest)
            engine = OnnxEngine.load(model_dir, tokenizer=config.tokenizer,
                                     ngram_order=config.ngram_order, classes=config.classes,
                                     temperature=artifacts.temperature(manifest))
            return cls(model_dir, manifest, engine, threshold)
        from rnncli.inference.keras_engine import KerasEngine  # imports TensorFlow

        return cls(model_dir, manifest, KerasEngine.load(model_dir, manifest, device), threshold)

    def close(self) -> None:
        """Release the engine's worker threads (the ONNX engine has some)."""
        close = getattr(self.engine, "close", None)
        if close is not None:
            close()

    def __enter__(self) -> Predictor:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    @property
    def label_names(self) -> tuple[str, ...]:
        return artifacts.label_names(self.manifest)

    def scores(self, texts: list[str], batch_size: int = 256) -> np.ndarray:
        return self.engine.scores(texts, batch_size)

    def records(self, texts: list[str | bytes], batch_size: int = 256) -> list[dict[str, Any]]:
        """One record per input, in order; only non-blank texts reach the model."""
        decoded = [decode_input(t) for t in texts]
        todo = to_score(decoded)
        scores = self.scores([decoded[i][0] for i in todo], batch_size) if todo else []
        return self.assemble(decoded, dict(zip(todo, scores)))

    def assemble(self, decoded: list[tuple[str, str]], by_index: dict) -> list[dict[str, Any]]:
        """The records of decoded inputs (:func:`decode_input`), given the scores of those
        :func:`to_score` chose, by input index."""
        out = []
        for i, (text, status) in enumerate(decoded):
            record = {"text": text, "label": None, "score": None, "status": status,
                      "scores": None}
            if i in by_index:
                record.update(self.labelled(by_index[i]))
            out.append(record)
        return out

    def labelled(self, scores) -> dict[str, Any]:
        """label, score and scores of one text, for every model alike: ``label`` is
        decided on the raw scores by ``metrics.decide`` (as evaluate and report decide),
        ``score`` is the probability of that label, and ``scores`` every class's
        probability, in class order (a two-class model's positive-class probability is
        ``scores[<positive label>]``). Shown rounded to SCORE_DIGITS decimals.
        """
        names = self.label_names
        row = np.asarray(scores, np.float64).reshape(-1)
        if len(names) == 2:
            best = int(decide(row, self.threshold)[0])
            positive = round(float(row[0]), SCORE_DIGITS)
            rounded = [round(1.0 - positive, SCORE_DIGITS), positive]
        else:
            best = int(decide(row[None, :])[0])
            rounded = [round(float(p), SCORE_DIGITS) for p in row]
        return {"label": names[best], "score": rounded[best],
                "scores": dict(zip(names, rounded))}

    def stream(self, lines: Iterable[str | bytes], *, batch_size: int = 256,
               on_batch: Callable[[int], None] | None = None) -> Iterator[list[dict[str, Any]]]:
        """Score a (possibly endless) stream lazily, in input order.

        Lines are read in windows of STREAM_WINDOW batches; inside a window, batches are
        formed from texts of similar length (see :func:`score_texts`), and the window's
        records are yielded together, in input order. Memory stays bounded by the window.
        With ``batch_size`` 1 (a person typing) every line is answered at once.
        """
        done = 0
        window = batch_size * STREAM_WINDOW if batch_size > 1 else 1
        for lines_read in _batched(_capped(lines), window, max_bytes=STREAM_WINDOW_BYTES):
            yield self.records(lines_read, batch_size)
            done += len(lines_read)
            if on_batch:
                on_batch(done)


def to_score(decoded: list[tuple[str, str]]) -> list[int]:
    """Which decoded inputs reach the model: the non-blank ones."""
    return [i for i, (_, status) in enumerate(decoded) if status != STATUS_EMPTY]


def check_threshold(manifest: dict[str, Any], threshold: float | None) -> None:
    """``--threshold`` is for two-class models; a model of more classes labels a text
    with its most probable class."""
    if threshold is not None and not artifacts.is_binary(manifest):
        names = artifacts.label_names(manifest)
        raise UsageError(f"--threshold applies to two-class models; this one has "
                         f"{len(names)} classes ({', '.join(names)}) and labels each text "
                         "with its most probable class: drop --threshold")


def read_lines(stream, size: int = 1) -> Iterator[list[str | bytes]]:
    """A binary stream's lines (each capped at MAX_LINE_BYTES) in lists of ``size``."""
    return _batched(_capped(stream), size)


class _Truncated(bytes):
    """A stdin line cut at MAX_LINE_BYTES (the rest of the line was read and dropped)."""


def capped_text(text: str) -> str | bytes:
    """A text as a stdin line of it would be read: a text over MAX_LINE_BYTES bytes is cut
    there (its record's status says "truncated")."""
    if len(text) * 4 <= MAX_LINE_BYTES:
        return text
    try:
        encoded = text.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate: decode_input reports it
        return text
    return _Truncated(encoded[:MAX_LINE_BYTES]) if len(encoded) > MAX_LINE_BYTES else text


def _capped(lines: Iterable[str | bytes]) -> Iterator[str | bytes]:
    """Lines of a binary stream, each at most MAX_LINE_BYTES long; other iterables as is."""
    readline = getattr(lines, "readline", None)
    if readline is None:
        yield from lines
        return
    while True:
        line = readline(MAX_LINE_BYTES)
        if not line:
            return
        if len(line) == MAX_LINE_BYTES and not line.endswith(b"\n"):
            dropped = 0
            while True:  # read and drop the remainder of the line
                rest = readline(1 << 20)
                dropped += len(rest.rstrip(b"\r\n"))
                if not rest or rest.endswith(b"\n"):
                    break
            line = _Truncated(line) if dropped else line
        yield line


def decode_input(item: str | bytes) -> tuple[str, str]:
    """(text, status) for one input line: without its line break, decoded by
    :func:`utf8_text` (status "invalid_utf8" when it was not UTF-8)."""
    status = STATUS_TRUNCATED if isinstance(item, _Truncated) else STATUS_OK
    if isinstance(item, bytes):
        item = item[:-1] if item.endswith(b"\n") else item
        item = item[:-1] if item.endswith(b"\r") else item
        if status == STATUS_TRUNCATED:
            try:
                item.decode("utf-8")
            except UnicodeDecodeError as exc:
                if exc.start >= len(item) - 3:
                    item = item[:exc.start]  # the cut split a character
    else:
        item = item.rstrip("\r\n")
    text, valid = utf8_text(item)
    if not valid:
        return text, STATUS_INVALID
    return text, (status if text.strip() else STATUS_EMPTY)


def utf8_text(item: str | bytes) -> tuple[str, bool]:
    """(text, valid?): the one rule for input that is not valid UTF-8, wherever bytes
    reach rnncli (a stdin line, an argument, a text or TF Serving b64 sent to ``serve``):
    decoded with U+FFFD for each bad byte (or lone surrogate), as TensorFlow's string ops
    in the exported SavedModel read it, and scored."""
    if isinstance(item, bytes):
        try:
            return item.decode("utf-8"), True
        except UnicodeDecodeError:
            return item.decode("utf-8", "replace"), False
    try:
        item.encode("utf-8")
        return item, True
    except UnicodeEncodeError:  # a non-UTF-8 argument, kept by surrogateescape
        try:
            return item.encode("utf-8", "surrogateescape").decode("utf-8", "replace"), False
        except UnicodeEncodeError:  # a lone surrogate (a JSON escape such as \\ud800)
            return "".join("\ufffd" if "\ud800" <= c <= "\udfff" else c for c in item), False


def _batched(items: Iterable, size: int, max_bytes: int | None = None) -> Iterator[list]:
    """Lists of at most ``size`` items (and, with ``max_bytes``, about that many bytes)."""
    batch, held = [], 0
    for item in items:
        batch.append(item)
        held += len(item)
        if len(batch) >= size or (max_bytes is not None and held >= max_bytes):
            yield batch
            batch, held = [], 0
    if batch:
        yield batch
