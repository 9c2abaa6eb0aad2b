"""rnncli from Python: ``rnncli.load(model_dir)`` gives a :class:`Model` whose
``predict(texts)`` returns the records ``rnncli predict`` prints (docs/python.md).

Light, like ``rnncli predict``: the ONNX engine, no TensorFlow (unless the model predates
the ONNX files, or ``engine="tf"`` is asked for). A Model may be shared by threads, and it
pickles as its directory and settings: unpickled on a worker (a Spark or Ray task, a
multiprocessing pool), it loads the model again from that directory, which must be
readable there, and checks its hashes as any load does.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Mapping, Set
from pathlib import Path
from typing import Any

from rnncli.core.config import ENGINES
from rnncli.core.errors import UsageError
from rnncli.inference.predict import Predictor


class Model:
    """A model directory loaded for scoring."""

    def __init__(self, model_dir: str | os.PathLike, *, engine: str = "auto",
                 threshold: float | None = None, workers: int | None = None):
        """``engine``: auto (ONNX when the model has its files, else TensorFlow), onnx or
        tf (TensorFlow needs ``pip install 'rnncli[train]'``); ``threshold``: a two-class
        model's decision threshold, in [0, 1], instead of its own; ``workers``: threads
        the ONNX engine scores with at once (default: one per core)."""
        _check_arguments(engine, threshold, workers)
        # absolute, not resolved: a pickled Model names the path as given (a link the
        # workers have too), from wherever it was given
        self._args = (str(Path(model_dir).absolute()), engine, threshold, workers)
        # CPU only: a GPU is for training; scoring many texts spreads over processes
        self._predictor = Predictor.load(self._args[0], device="cpu", engine=engine,
                                         threshold=threshold)
        if workers is not None and hasattr(self._predictor.engine, "max_workers"):
            self._predictor.engine.max_workers = workers

    @property
    def model_dir(self) -> Path:
        return Path(self._args[0])

    @property
    def labels(self) -> tuple[str, ...]:
        """The class names, in the order of every record's ``scores``."""
        return self._predictor.label_names

    @property
    def engine(self) -> str:
        """'onnx' or 'tf': the engine that scores."""
        return self._predictor.engine.name

    @property
    def manifest(self) -> dict[str, Any]:
        """The model directory's manifest (settings, labels, figures), as ``rnncli info
        --format json`` shows it."""
        return self._predictor.manifest

    def predict(self, texts: str | bytes | Iterable[str | bytes], *,
                batch_size: int = 256) -> list[dict[str, Any]]:
        """One record per text, in order: ``text``, ``label``, ``score`` (the label's
        probability), ``scores`` (every class's probability) and ``status`` ("ok";
        "empty" for a blank text, which has no label; "invalid_utf8" for bytes that are
        not UTF-8, scored with U+FFFD for the bad bytes). One text (a str) gives a list of
        one record."""
        if isinstance(texts, (str, bytes)):
            texts = [texts]
        if isinstance(texts, (Mapping, Set, bytearray, memoryview)) or not isinstance(
                texts, Iterable):
            raise TypeError("predict takes a text (str or bytes) or a sequence of them, not "
                            f"{type(texts).__name__}")
        items = list(texts)
        wrong = next((item for item in items if not isinstance(item, (str, bytes))), None)
        if wrong is not None:
            raise TypeError(f"predict takes texts (str or bytes), not {type(wrong).__name__}")
        return self._predictor.records(items, batch_size)

    def close(self) -> None:
        """Release the engine's threads (also done by ``with``), once no thread is
        predicting with it."""
        self._predictor.close()

    def __enter__(self) -> Model:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def __reduce__(self):
        # the directory travels, not the loaded engine (an ONNX Runtime session pickles
        # not at all); each process that unpickles a Model loads it once
        return (_load, self._args)

    def __repr__(self) -> str:
        return f"rnncli.Model({self._args[0]!r}, engine={self.engine!r})"


def _load(path: str, engine: str, threshold: float | None, workers: int | None) -> Model:
    return Model(path, engine=engine, threshold=threshold, workers=workers)


def _check_arguments(engine: str, threshold: float | None, workers: int | None) -> None:
    """What the command line's option types check, for callers from Python."""
    if engine not in ENGINES:
        raise UsageError(f"engine={engine!r}: give one of {', '.join(ENGINES)}")
    if threshold is not None and (isinstance(threshold, bool)
                                  or not isinstance(threshold, (int, float))
                                  or math.isnan(threshold) or not 0 <= threshold <= 1):
        raise UsageError(f"threshold={threshold!r}: give a number in [0, 1], or None for "
                         "the model's own")
    if workers is not None and (isinstance(workers, bool) or not isinstance(workers, int)
                                or workers < 1):
        raise UsageError(f"workers={workers!r}: give a whole number >= 1, or None for one "
                         "per core")


def load(model_dir: str | os.PathLike, *, engine: str = "auto",
         threshold: float | None = None, workers: int | None = None) -> Model:
    """Load a model directory for scoring from Python (see :class:`Model`)."""
    return Model(model_dir, engine=engine, threshold=threshold, workers=workers)
