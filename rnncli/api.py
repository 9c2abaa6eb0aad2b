"""rnncli from Python: ``rnncli.load(model_dir)`` gives a :class:`Model` whose
``predict(texts)`` returns the records ``rnncli predict`` prints (docs/python.md).

Light, like ``rnncli predict``: the ONNX engine, no TensorFlow (unless the model predates
the ONNX files, or ``engine="tf"`` is asked for). A Model may be shared by threads, and it
pickles as its directory and settings: unpickled on a worker (a Spark or Ray task, a
multiprocessing pool), it loads the model again from that directory, which must be
readable there, and checks its hashes as any load does.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from rnncli.inference.predict import Predictor


class Model:
    """A model directory loaded for scoring."""

    def __init__(self, model_dir: str | os.PathLike, *, engine: str = "auto",
                 threshold: float | None = None):
        """``engine``: auto (ONNX when the model has its files), onnx or tf (needs
        ``pip install 'rnncli[train]'``); ``threshold``: a two-class model's decision
        threshold instead of its own."""
        self._args = (str(Path(model_dir).resolve()), engine, threshold)
        # CPU only: a GPU is for training; scoring many texts spreads over processes
        self._predictor = Predictor.load(self._args[0], device="cpu", engine=engine,
                                         threshold=threshold)

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
        try:
            items = list(texts)
        except TypeError:
            items = [texts]  # not iterable: refused below with its type
        wrong = next((item for item in items if not isinstance(item, (str, bytes))), None)
        if wrong is not None:
            raise TypeError(f"predict takes texts (str or bytes), not {type(wrong).__name__}")
        return self._predictor.records(items, batch_size)

    def close(self) -> None:
        """Release the engine's threads (also done by ``with``)."""
        self._predictor.close()

    def __enter__(self) -> Model:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def __reduce__(self):
        # the directory travels, not the loaded engine (an ONNX Runtime session pickles
        # not at all); each process that unpickles a Model loads it once
        path, engine, threshold = self._args
        return (_load, (path, engine, threshold))

    def __repr__(self) -> str:
        return f"rnncli.Model({self._args[0]!r}, engine={self.engine!r})"


def _load(path: str, engine: str, threshold: float | None) -> Model:
    return Model(path, engine=engine, threshold=threshold)


def load(model_dir: str | os.PathLike, *, engine: str = "auto",
         threshold: float | None = None) -> Model:
    """Load a model directory for scoring from Python (see :class:`Model`)."""
    return Model(model_dir, engine=engine, threshold=threshold)
