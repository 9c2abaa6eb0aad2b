"""Scoring without TensorFlow: the recurrent network in ONNX Runtime, the tokenization and
the n-gram model in Python and NumPy.

Light: imports numpy and (when a model is loaded) onnxruntime, never TensorFlow, so a
cold ``rnncli predict "great movie"`` costs well under a second instead of the ~4 s
``import tensorflow`` alone takes.

Training writes two files beside ``model.keras`` (see ``export.write_onnx``):
    core.onnx     the recurrent network: token ids (batch, time) -> probability (batch, 1)
    serving.npz   what reproduces the Keras text model around it: both vocabularies, the
                  n-gram weights, the blend weight and the standardization tables
The tables record what TensorFlow's standardization (ICU lower-casing, RE2 character
classes) does to every character, taken from TensorFlow itself at training time, so this
module reproduces it exactly whatever Unicode version Python's own tables follow. The
Keras model stays the reference (``--engine tf``); training checks that both agree.
"""

from __future__ import annotations

import json
import os
import re
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from rnncli.errors import ModelError

ONNX_FILE = "core.onnx"
SERVING_FILE = "serving.npz"
SERVING_VERSION = 1
MAX_ONNX_BYTES = 2 * 2**30
MAX_WORKERS = 16  # threads running batches at once (one per core)
MIN_BATCH = 16  # texts; smaller inputs are not split across cores
_TAGS = re.compile(r"<[^<>]{0,200}>")
_QUOTES = re.compile("[\u2018\u2019\u02bc`]")
_MARKS = re.compile(r"([!?])")
_EDGE_QUOTES = re.compile(r"(^|\s)'+|'+(\s|$)")
_SIGMA = 0x03A3
_SPACES = re.compile(" {2,}")


def _char_class(ranges: np.ndarray) -> str:
    """A regex character class body for the (first, last) codepoint ranges."""
    def esc(cp: int) -> str:
        return f"\\U{cp:08x}"

    return "".join(esc(a) if a == b else f"{esc(a)}-{esc(b)}" for a, b in ranges.tolist())


class Standardizer:
    """``model.standardize`` in Python: same steps, same order, same character tables."""

    def __init__(self, *, keep: np.ndarray, lower_from: np.ndarray, lower_to: list[str],
                 max_chars: int, start_token: str):
        self.max_chars = max_chars
        self.start = start_token + " "
        self._drop = re.compile(f"[^{_char_class(keep)}]+")
        kept = {c for a, b in keep.tolist() if a < 128 for c in range(a, min(b, 127) + 1)}
        self._ascii = {c: (c if c in kept else ord(" ")) for c in range(128)}
        self._ascii[ord("`")] = ord("'")  # the one ASCII character the quote step changes
        # Every character TensorFlow's (ICU's) lower-casing changes, as it changes it;
        # capital sigma is left to the context rule (final or not), below.
        self._lower = {c: t for c, t in zip(lower_from.tolist(), lower_to) if c != _SIGMA}

    def lower(self, text: str) -> str:
        if text.isascii():
            return text.lower()
        low = text.translate(self._lower)
        if "\u03a3" in low:
            # Σ -> ς at the end of a word, else σ: Unicode's Final_Sigma rule, which ICU and
            # Python share; the letters around it are already lower-cased, which keeps the
            # rule's outcome (lower-case letters are still cased).
            python = low.lower()  # the same length: no multi-character mapping is left
            if len(python) != len(low):
                return low.replace("\u03a3", "\u03c3")
            chars = list(low)
            for i in (i for i, c in enumerate(low) if c == "\u03a3"):
                chars[i] = python[i]
            low = "".join(chars)
        return low

    def __call__(self, text: str) -> str:
        text = self.lower(text[: self.max_chars].replace("\x00", " "))
        if "<" in text:
            text = _TAGS.sub(" ", text)
        if text.isascii():
            # The quote and drop steps in one table: dropped characters become spaces
            # (spaces are dropped characters too), then each run becomes one space, as
            # the regular expression's "+" makes it.
            text = _SPACES.sub(" ", text.translate(self._ascii))
        else:
            text = self._drop.sub(" ", _QUOTES.sub("'", text))
        if "!" in text or "?" in text:
            text = _MARKS.sub(r" \1 ", text)
        # The edge-quote pattern needs a quote beside a space or at either end.
        if "' " in text or " '" in text or text.startswith("'") or text.endswith("'"):
            text = _EDGE_QUOTES.sub(" ", text)
        return self.start + text


class OnnxEngine:
    """Scores raw texts like the saved Keras text model, without TensorFlow."""

    name = "onnx"

    def __init__(self, session, serving: dict[str, Any]):
        self._session = session
        self._input = session.get_inputs()[0].name
        text = serving["text"]
        self.seq_len = int(text["seq_len"])
        self.rnn_weight = float(text["rnn_weight"])
        self.standardize = Standardizer(
            keep=serving["keep"], lower_from=serving["lower_from"],
            lower_to=text["lower_to"], max_chars=int(text["max_chars"]),
            start_token=text["start_token"])
        self._ids = {t: i for i, t in enumerate(serving["tokens"])}
        self._ngrams = ({t: i for i, t in enumerate(serving["ngrams"])}
                        if self.rnn_weight < 1 else {})
        self._idf = serving.get("ngram_idf")
        self._kernel = serving.get("ngram_kernel")
        self._bias = serving.get("ngram_bias")
        self._executor: ThreadPoolExecutor | None = None

    @classmethod
    def load(cls, model_dir: str | Path) -> OnnxEngine:
        """Read ``core.onnx`` and ``serving.npz`` (hash-checked by the caller)."""
        model_dir = Path(model_dir)
        serving = read_serving(model_dir / SERVING_FILE)
        path = model_dir / ONNX_FILE
        if path.stat().st_size > MAX_ONNX_BYTES:
            raise ModelError(f"{path}: implausibly large; refusing to load")
        try:
            import onnxruntime as ort
        except ImportError as exc:
            raise ModelError("onnxruntime is not installed (pip install onnxruntime); or "
                             "use --engine tf") from exc
        options = ort.SessionOptions()
        options.log_severity_level = 3  # errors only: stderr carries rnncli's messages
        options.intra_op_num_threads = 1  # parallel batches instead (see scores)
        try:
            # From bytes: any external-data reference in the graph has no directory to
            # resolve against, so a crafted file cannot make it read other files.
            session = ort.InferenceSession(path.read_bytes(), options,
                                           providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own types for a bad graph
            raise ModelError(f"{path}: ONNX Runtime cannot load it ({type(exc).__name__}: "
                             f"{str(exc).splitlines()[0][:200] if str(exc) else ''}); use "
                             "--engine tf or retrain the model") from exc
        return cls(session, serving)

    def tokens(self, text: str) -> list[str]:
        return self.standardize(text).split()

    def scores(self, texts: list[str], batch_size: int = 256) -> np.ndarray:
        """Positive-class probabilities in input order.

        Texts of similar length are scored together (each batch is padded to its longest
        text only), and the batches run in parallel, one per core: ONNX Runtime runs the
        recurrent loop one step at a time, which one core cannot speed up. The n-gram
        model is computed meanwhile.
        """
        out = np.zeros(len(texts), dtype=np.float32)
        if not texts:
            return out
        tokens = [self.tokens(t) for t in texts]
        ids = [[self._ids.get(t, 1) for t in toks[: self.seq_len]] for toks in tokens]
        order = np.argsort([len(i) for i in ids], kind="stable")
        # Enough batches to give every core one, of at least MIN_BATCH texts.
        count = max(-(-len(texts) // batch_size), min(_workers(), -(-len(texts) // MIN_BATCH)))
        size = -(-len(texts) // count)
        chunks = [order[i:i + size] for i in range(0, len(texts), size)]
        runs = [self._pool().submit(self._run, _padded([ids[j] for j in chunk]))
                for chunk in chunks] if self.rnn_weight > 0 else []
        try:
            ngram = self.ngram_scores(tokens) if self.rnn_weight < 1 else 0.0
            for chunk, run in zip(chunks, runs):
                out[chunk] = run.result()
        except BaseException:
            for run in runs:
                run.cancel()
            raise
        return (self.rnn_weight * out + (1.0 - self.rnn_weight) * ngram).astype(np.float32)

    def _run(self, batch: np.ndarray) -> np.ndarray:
        return self._session.run(None, {self._input: batch})[0].reshape(-1)

    def _pool(self) -> ThreadPoolExecutor:
        if self._executor is None:
            self._executor = ThreadPoolExecutor(_workers(), thread_name_prefix="rnncli-onnx")
        return self._executor

    def ngram_scores(self, tokens: list[list[str]]) -> np.ndarray:
        """The n-gram model (``layers.NgramLogistic``) on tokenized texts: sublinear TF-IDF
        of word 1-2-grams, rows scaled to unit length, logistic regression."""
        rows, cols = [], []
        lookup = self._ngrams.get
        for row, toks in enumerate(tokens):
            grams = toks + [f"{a} {b}" for a, b in zip(toks, toks[1:])]
            found = [i for i in map(lookup, grams) if i]  # unknown n-grams (and [UNK]) weigh 0
            cols.extend(found)
            rows.extend([row] * len(found))
        rows, cols = np.asarray(rows, np.int64), np.asarray(cols, np.int64)
        pairs, counts = np.unique(rows * len(self._idf) + cols, return_counts=True)
        rows, cols = pairs // len(self._idf), pairs % len(self._idf)
        values = (1.0 + np.log(counts.astype(np.float32))) * self._idf[cols]
        norms = np.bincount(rows, weights=values * values, minlength=len(tokens))
        values = values / np.sqrt(norms[rows] + 1e-12)
        logits = np.bincount(rows, weights=values * self._kernel[cols],
                             minlength=len(tokens)) + self._bias
        return (1.0 / (1.0 + np.exp(-logits))).astype(np.float32)


def _workers() -> int:
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    return max(1, min(cores, MAX_WORKERS))


def _padded(rows: list[list[int]]) -> np.ndarray:
    """Right-padded with 0 to the longest row, as TextVectorization pads a batch."""
    batch = np.zeros((len(rows), max(len(r) for r in rows)), dtype=np.int64)
    for i, row in enumerate(rows):
        batch[i, : len(row)] = row
    return batch


def write_serving(path: Path, *, tokens: list[str], seq_len: int, rnn_weight: float,
                  tables: dict[str, Any], ngrams: list[str] | None = None,
                  idf=None, kernel=None, bias=None) -> None:
    """Write ``serving.npz``: plain arrays only (read back with ``allow_pickle=False``)."""
    text = {"version": SERVING_VERSION, "seq_len": int(seq_len), "rnn_weight": float(rnn_weight),
            "max_chars": int(tables["max_chars"]), "start_token": tables["start_token"],
            "lower_to": list(tables["lower_to"])}
    arrays = {
        "text": _encode(json.dumps(text, ensure_ascii=False)),
        "tokens": _encode("\n".join(tokens)),
        "keep": np.asarray(tables["keep"], np.int32).reshape(-1, 2),
        "lower_from": np.asarray(tables["lower_from"], np.int32),
    }
    if ngrams is not None:
        arrays.update(ngrams=_encode("\n".join(ngrams)),
                      ngram_idf=np.asarray(idf, np.float32).reshape(-1),
                      ngram_kernel=np.asarray(kernel, np.float32).reshape(-1),
                      ngram_bias=np.asarray(bias, np.float32).reshape(-1))
    with open(path, "wb") as fh:
        np.savez(fh, **arrays)


def read_serving(path: Path) -> dict[str, Any]:
    """Read ``serving.npz`` back; anything odd is a ModelError naming the file."""
    try:
        with np.load(path, allow_pickle=False) as npz:
            data = {name: npz[name] for name in npz.files}
        text = json.loads(_decode(data["text"]))
        if text.get("version") != SERVING_VERSION:
            raise ValueError(f"serving format {text.get('version')!r}")
        serving: dict[str, Any] = {"text": text, "keep": data["keep"],
                                   "lower_from": data["lower_from"],
                                   "tokens": _decode(data["tokens"]).split("\n")}
        if len(text["lower_to"]) != len(serving["lower_from"]) or data["keep"].ndim != 2:
            raise ValueError("standardization tables do not match")
        if float(text["rnn_weight"]) < 1:
            serving["ngrams"] = _decode(data["ngrams"]).split("\n")
            for name in ("ngram_idf", "ngram_kernel", "ngram_bias"):
                serving[name] = data[name].astype(np.float32)
            size = len(serving["ngrams"])
            if not (len(serving["ngram_idf"]) == len(serving["ngram_kernel"]) == size
                    and len(serving["ngram_bias"]) == 1):
                raise ValueError("n-gram arrays do not match the n-gram list")
    except (OSError, ValueError, KeyError, TypeError, UnicodeDecodeError) as exc:
        raise ModelError(f"{path}: unreadable ({exc}); use --engine tf or retrain the "
                         "model") from exc
    return serving


def _encode(text: str) -> np.ndarray:
    return np.frombuffer(text.encode("utf-8"), dtype=np.uint8)


def _decode(array: np.ndarray) -> str:
    if array.dtype != np.uint8 or array.ndim != 1:
        raise ValueError("text array of the wrong type")
    return array.tobytes().decode("utf-8")
