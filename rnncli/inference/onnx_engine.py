"""Scoring without TensorFlow: the recurrent network in ONNX Runtime, the tokenization and
the n-gram model in Python and NumPy.

Light: imports numpy and (when a model is loaded) onnxruntime, never TensorFlow nor the
``onnx`` package (``modeldir/onnxwire.py`` reads what the graph check needs), so a cold
``rnncli predict "great movie"`` costs a fraction of the ~4 s ``import tensorflow`` takes.

Training writes two files beside ``model.keras`` (see ``export.write_onnx``):
    core.onnx     the recurrent network: token ids (batch, time) -> probability (batch, 1),
                  or class probabilities (batch, k) for k > 2 classes
    serving.npz   what reproduces the Keras text model around it (``modeldir/serving.py``)
The standardization tables record what TensorFlow's standardization (ICU lower-casing
and its context rule for capital sigma, RE2 character classes) does to every
character, taken from TensorFlow itself at training time: nothing here depends on the
Unicode version of Python's own tables. The Keras model stays the reference
(``--engine tf``); training checks that both agree before it publishes the model.
"""

from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from rnncli.core.config import output_width
from rnncli.core.errors import ModelError, first_line
from rnncli.core.scoring import length_chunks, with_temperature
from rnncli.inference.standardize import Standardizer
from rnncli.modeldir.artifacts import ONNX_FILE, SERVING_FILE
from rnncli.modeldir.onnxwire import MalformedGraph, scan_model
from rnncli.modeldir.serving import read_serving

MAX_ONNX_BYTES = 2 * 2**30
MAX_WORKERS = 16  # threads running batches at once (one per core)
MIN_BATCH = 16  # texts; smaller inputs are not split across cores
_POOL_LOCK = threading.Lock()


class OnnxEngine:
    """Scores raw texts like the saved Keras text model, without TensorFlow."""

    name = "onnx"

    def __init__(self, session, serving: dict[str, Any]):
        self._session = session
        self._input = session.get_inputs()[0].name
        self.seq_len = serving["seq_len"]
        self.rnn_weight = serving["rnn_weight"]
        self.outputs = serving["outputs"]  # 1: the positive class's probability
        self.standardize = Standardizer(
            keep=serving["keep"], lower_from=serving["lower_from"],
            lower_to=serving["lower_to"], cased=serving["cased"],
            ignorable=serving["ignorable"], max_chars=serving["max_chars"],
            start_token=serving["start_token"], split=serving["split"])
        self._ids = {t: i for i, t in enumerate(serving["tokens"])}
        self._ngrams = ({t: i for i, t in enumerate(serving["ngrams"])}
                        if self.rnn_weight < 1 else {})
        self._order = serving["ngram_order"]
        self.idf = serving.get("ngram_idf")  # the n-gram model: IDF, kernel and bias
        self.kernel = serving.get("ngram_kernel")
        self.bias = serving.get("ngram_bias")
        self._executor: ThreadPoolExecutor | None = None
        self.max_workers: int | None = None  # threads scoring at once; None: one per core
        self.path = ""
        self.temperature = 1.0  # the calibration (scoring.with_temperature)

    @classmethod
    def load(cls, model_dir: str | Path, *, tokenizer: str | None = None,
             ngram_order: int | None = None, classes: int | None = None,
             temperature: float = 1.0) -> OnnxEngine:
        """Read ``core.onnx`` and ``serving.npz`` (hash-checked by the caller);
        ``tokenizer``, ``ngram_order`` and ``classes``: the manifest's, which
        ``serving.npz`` must share; ``temperature``: the manifest's calibration."""
        model_dir = Path(model_dir)
        serving = read_serving(model_dir / SERVING_FILE)
        if tokenizer is not None and serving["tokenizer"] != tokenizer:
            raise ModelError(f"{model_dir / SERVING_FILE}: tokenizes as {serving['tokenizer']!r}"
                             f" where the manifest says {tokenizer!r}; use --engine tf or "
                             "retrain the model")
        if classes is not None and serving["outputs"] != output_width(classes):
            raise ModelError(f"{model_dir / SERVING_FILE}: gives {serving['outputs']} "
                             f"output(s) where the manifest has {classes} classes; restore "
                             "the directory or retrain the model")
        if (ngram_order is not None and serving["rnn_weight"] < 1
                and serving["ngram_order"] != ngram_order):
            raise ModelError(f"{model_dir / SERVING_FILE}: holds 1-{serving['ngram_order']}-"
                             f"grams where the manifest says 1-{ngram_order}; use --engine tf "
                             "or retrain the model")
        path = model_dir / ONNX_FILE
        if path.stat().st_size > MAX_ONNX_BYTES:
            raise ModelError(f"{path}: implausibly large; refusing to load")
        graph = path.read_bytes()
        _check_graph(path, graph)
        session = _session(path, graph)
        _check_signature(path, session, serving["outputs"])
        engine = cls(session, serving)
        engine.path = str(path)
        engine.temperature = temperature
        return engine

    def tokens(self, text: str) -> list[str]:
        return self.standardize(text).split()

    def scores(self, texts: list[str], batch_size: int = 256) -> np.ndarray:
        """Positive-class probabilities (n,), or class probabilities (n, k), in input
        order: the network runs in worker threads (:meth:`start_network`) while the
        n-gram model is computed."""
        if not texts:
            return np.zeros((0,) if self.outputs == 1 else (0, self.outputs), np.float32)
        tokens = [self.tokens(t) for t in texts]
        ids = [self.ids(toks) for toks in tokens]
        if self.rnn_weight <= 0:
            return self.combine(None, self.ngram_scores(tokens))
        runs = self.start_network(ids, batch_size)
        try:
            ngram = self.ngram_scores(tokens) if self.rnn_weight < 1 else None
            network = self.collect(runs, len(texts))
        except BaseException:
            for _, run in runs:
                run.cancel()
            raise
        return self.combine(network, ngram)

    def ids(self, tokens: list[str]) -> list[int]:
        """The network's input for a tokenized text: token ids, cut to seq_len."""
        return [self._ids.get(t, 1) for t in tokens[: self.seq_len]]

    def network_scores(self, ids: list[list[int]], batch_size: int = 256) -> np.ndarray:
        """The recurrent network alone on rows of token ids (:meth:`ids`)."""
        return self.collect(self.start_network(ids, batch_size), len(ids))

    def start_network(self, ids: list[list[int]], batch_size: int) -> list:
        """Start the network on rows of ids in the worker threads: (row indexes, future)
        pairs for :meth:`collect`.

        Rows of similar length run together (each batch padded to its longest row only),
        in parallel, one batch per core: ONNX Runtime runs the recurrent loop one step at
        a time, which one core cannot speed up.
        """
        if not ids:
            return []
        # Enough batches to give every core one, of at least MIN_BATCH rows.
        count = max(-(-len(ids) // batch_size), min(_workers(), -(-len(ids) // MIN_BATCH)))
        chunks = length_chunks([len(i) for i in ids], -(-len(ids) // count))
        return [(chunk, self._pool().submit(self._run, _padded([ids[j] for j in chunk])))
                for chunk in chunks]

    def collect(self, runs: list, count: int) -> np.ndarray:
        out = np.zeros((count,) if self.outputs == 1 else (count, self.outputs),
                       dtype=np.float32)
        for chunk, run in runs:
            out[chunk] = run.result()
        return out

    def combine(self, network, ngram) -> np.ndarray:
        """The model's probabilities from its parts' (None for a part it lacks): the
        blend, calibrated."""
        if network is None or ngram is None:
            scores = ngram if network is None else network
        else:
            scores = self.rnn_weight * network + (1.0 - self.rnn_weight) * ngram
        return with_temperature(np.asarray(scores, dtype=np.float32), self.temperature)

    def _run(self, batch: np.ndarray) -> np.ndarray:
        try:
            out = self._session.run(None, {self._input: batch})[0]
        except Exception as exc:  # onnxruntime's own types
            raise ModelError(f"{self.path}: ONNX Runtime failed to run it "
                             f"({first_line(exc, with_type=True)});"
                             " use --engine tf or retrain the model") from exc
        out = np.asarray(out, dtype=np.float32)
        if out.shape != (len(batch), self.outputs) or not np.all((out >= 0) & (out <= 1)):
            what = ("one probability" if self.outputs == 1
                    else f"{self.outputs} class probabilities")
            raise ModelError(f"{self.path}: gave something other than {what} per text; use "
                             "--engine tf or retrain the model")
        return out.reshape(-1) if self.outputs == 1 else out

    def close(self) -> None:
        """Stop the worker threads (started on first use). The engine may be used again
        afterwards; it starts new ones."""
        executor, self._executor = self._executor, None
        if executor is not None:
            executor.shutdown(wait=True, cancel_futures=True)

    def __enter__(self) -> OnnxEngine:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def _pool(self) -> ThreadPoolExecutor:
        with _POOL_LOCK:  # two threads scoring at once (rnncli serve) start one pool
            if self._executor is None:
                self._executor = ThreadPoolExecutor(self.max_workers or _workers(),
                                                    thread_name_prefix="rnncli-onnx")
            return self._executor

    def grams(self, tokens: list[str]) -> list[tuple[int, int, int]]:
        """The n-gram model's known n-grams in a tokenized text: (feature, first token,
        length) for each; unknown n-grams (and [UNK]) weigh 0 and are left out."""
        lookup, found = self._ngrams.get, []
        for n in range(1, self._order + 1):  # TextVectorization joins them with a space
            for i in range(len(tokens) - n + 1):
                feature = lookup(tokens[i] if n == 1 else " ".join(tokens[i:i + n]))
                if feature:
                    found.append((feature, i, n))
        return found

    def ngram_scores(self, tokens: list[list[str]]) -> np.ndarray:
        """The n-gram model (``layers.NgramLogistic``) on tokenized texts: sublinear TF-IDF
        of token 1- to ngram_order-grams, rows scaled to unit length, logistic regression."""
        return probabilities(self.ngram_logits(tokens))

    def ngram_logits(self, tokens: list[list[str]]) -> np.ndarray:
        """The n-gram model's logits (n, outputs)."""
        rows, cols = [], []
        for row, toks in enumerate(tokens):
            found = [feature for feature, _, _ in self.grams(toks)]
            cols.extend(found)
            rows.extend([row] * len(found))
        rows, cols = np.asarray(rows, np.int64), np.asarray(cols, np.int64)
        pairs, counts = np.unique(rows * len(self.idf) + cols, return_counts=True)
        rows, cols = pairs // len(self.idf), pairs % len(self.idf)
        values = (1.0 + np.log(counts.astype(np.float32))) * self.idf[cols]
        norms = np.bincount(rows, weights=values * values, minlength=len(tokens))
        values = values / np.sqrt(norms[rows] + 1e-12)
        return np.stack([np.bincount(rows, weights=values * self.kernel[cols, j],
                                     minlength=len(tokens))
                         for j in range(self.outputs)], axis=1) + self.bias


def probabilities(logits: np.ndarray) -> np.ndarray:
    """Logits (n, 1) -> positive-class probabilities (n,); (n, k) -> softmax rows."""
    if logits.shape[1] == 1:
        return (1.0 / (1.0 + np.exp(-logits[:, 0]))).astype(np.float32)
    logits = logits - logits.max(axis=1, keepdims=True)
    exp = np.exp(logits)
    return (exp / exp.sum(axis=1, keepdims=True)).astype(np.float32)


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


def _session(path: Path, graph: bytes):
    """An ONNX Runtime session for graph bytes that _check_graph has passed."""
    import onnxruntime as ort

    ort.set_default_logger_severity(4)  # stderr carries rnncli's messages only
    options = ort.SessionOptions()
    options.log_severity_level = 4
    options.intra_op_num_threads = 1  # parallel batches instead (see scores)
    # Protobuf only: ONNX Runtime would otherwise take bytes that look like its own
    # flatbuffer format ("ORTM") as that, which _check_graph has not read.
    options.add_session_config_entry("session.load_model_format", "ONNX")
    try:
        return ort.InferenceSession(graph, options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own types for a bad graph
        raise ModelError(f"{path}: ONNX Runtime cannot load it "
                         f"({first_line(exc, with_type=True)}); use "
                         "--engine tf or retrain the model") from exc


def _check_graph(path: Path, graph: bytes) -> None:
    """Refuse a graph that refers to data outside its file: ONNX Runtime would read such
    "external data" from the current directory, whatever the model directory is."""
    try:
        found = scan_model(graph)
    except MalformedGraph as exc:
        raise ModelError(f"{path}: not an ONNX graph ({exc}); use --engine tf or retrain "
                         "the model") from exc
    if not found.graphs:
        raise ModelError(f"{path}: not an ONNX graph (it holds no graph); use --engine tf "
                         "or retrain the model")
    if found.external:
        raise ModelError(f"{path}: refers to data outside the file; refusing to load it")


def _check_signature(path: Path, session, width: int = 1) -> None:
    """One input of token ids (batch, time); ``width`` probabilities per text out (one, or
    one per class)."""
    inputs, outputs = session.get_inputs(), session.get_outputs()
    fits = (len(inputs) == 1 and inputs[0].type == "tensor(int64)"
            and len(inputs[0].shape) == 2 and outputs
            and outputs[0].type == "tensor(float)" and len(outputs[0].shape) == 2)
    if fits and isinstance(outputs[0].shape[1], int):  # a fixed width must be ``width``
        fits = outputs[0].shape[1] == width
    if not fits:
        what = "one probability" if width == 1 else f"{width} class probabilities"
        raise ModelError(f"{path}: not the network rnncli exports (token ids in, {what} "
                         "per text out); use --engine tf or retrain the model")
