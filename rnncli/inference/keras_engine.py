"""HEAVY: the TensorFlow engine, the reference the ONNX engine (``onnx_engine.py``) is
checked against: the saved Keras text model, raw strings in. Imported only when it is
chosen (``--engine tf``, a GPU, or a model older than the ONNX files); it needs the train
extra."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from rnncli.core.config import output_width
from rnncli.core.errors import ModelError
from rnncli.core.scoring import as_scores, length_chunks
from rnncli.modeldir import artifacts
from rnncli.network.runtime import import_tensorflow, select_device


def serving_function(keras_model):
    """One traced graph for any batch size (calling the model directly retraces)."""
    tf = import_tensorflow()
    return tf.function(lambda x: keras_model(x, training=False),
                       input_signature=[tf.TensorSpec([None], tf.string)])


def score_texts(serve, texts: list[str], batch_size: int = 256) -> np.ndarray:
    """Positive-class probabilities (n,) for raw texts, or class probabilities (n, k) for
    a model of more than two classes, through a :func:`serving_function`, in the order
    given.

    Texts are scored in batches of similar length (each batch is padded only to its
    longest text, and the masks make a score independent of its neighbours), so short
    texts do not pay for a long one that happens to sit beside them.
    """
    tf = import_tensorflow()
    out = None
    for chosen in length_chunks([len(t) for t in texts], batch_size):
        got = serve(tf.constant([texts[j] for j in chosen])).numpy()
        if out is None:
            out = np.zeros((len(texts), got.shape[1]), dtype=np.float32)
        out[chosen] = got
    return np.zeros(0, np.float32) if out is None else as_scores(out)


class KerasEngine:
    """The reference engine: the saved Keras text model, in TensorFlow."""

    name = "tf"

    def __init__(self, keras_model):
        self.keras_model = keras_model
        self.serve = serving_function(keras_model)

    @classmethod
    def load(cls, model_dir: Path, manifest: dict[str, Any], device: str) -> KerasEngine:
        """The engine of a checked model directory (``predict.check_files``), on
        ``device``; refuses a model.keras that disagrees with its manifest."""
        select_device(device)  # before the model is loaded, so its weights land there
        from rnncli.network.loading import load_keras_model

        keras_model = load_keras_model(model_dir)
        classes = len(artifacts.label_names(manifest))
        if keras_model.output.shape[-1] != output_width(classes):
            raise ModelError(f"{Path(model_dir) / artifacts.MODEL_FILE}: gives "
                             f"{keras_model.output.shape[-1]} output(s) where the manifest "
                             f"has {classes} classes; restore the directory or retrain the "
                             "model")
        layer = next((layer.temperature for layer in keras_model.layers
                      if layer.name == "temperature"), 1.0)
        if layer != artifacts.temperature(manifest):
            raise ModelError(f"{model_dir}: model.keras is calibrated with temperature {layer} "
                             f"where the manifest says {artifacts.temperature(manifest)}; "
                             "restore the directory or retrain the model")
        return cls(keras_model)

    def scores(self, texts: list[str], batch_size: int = 256) -> np.ndarray:
        return score_texts(self.serve, texts, batch_size)
