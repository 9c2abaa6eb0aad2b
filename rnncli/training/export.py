"""HEAVY: export a trained model as a TensorFlow SavedModel for TF Serving, and write the
files of the TensorFlow-free predict engine (``inference/onnx_engine.py``) at training time."""

from __future__ import annotations

import contextlib
import gc
import logging
import warnings
from pathlib import Path

import numpy as np

from rnncli.core import fsio
from rnncli.core.errors import ModelError, UsageError, first_line
from rnncli.modeldir import artifacts

# Texts the exported graph is checked on before it is published.
_PROBES = ["a wonderful, moving film", "dull and far too long", "", "not bad at all!",
           "Ça n'était pas terrible<br />", "1/10"]


def export_saved_model(model_dir: str | Path, dest: str | Path, *, force: bool = False) -> Path:
    """Write a SavedModel whose ``serve`` / ``serving_default`` take a flat batch of raw
    strings and return the positive-class probability, shape (n, 1), or for a model of k
    > 2 classes every class's probability, shape (n, k), in the manifest's class order
    (and, in ``serving_default``, the class names beside them: :func:`_write`).

    Under the lock beside ``dest``, checked again just before the swap; a failed write
    (a full disk) leaves an existing ``dest`` as it was."""
    from rnncli.inference.predict import Predictor

    dest = fsio.resolve_output(dest)

    def check(target: Path) -> None:
        check_export_target(target, force=force)

    with fsio.writable(dest):
        check(dest)
    predictor = Predictor.load(model_dir, device="cpu", engine="tf")
    import tensorflow as tf

    expected = predictor.scores(_PROBES)
    failure = None
    with fsio.lock(dest):
        try:
            with fsio.staging(dest) as staged:
                target = staged / "saved_model"
                _write(predictor.engine.keras_model, target, predictor.label_names)
                loaded = tf.saved_model.load(str(target))  # owns the variables: keep it
                _check_classes(loaded, predictor.label_names)
                got = np.asarray(loaded.serve(tf.constant(_PROBES)))
                got = got.reshape(-1) if expected.ndim == 1 else got  # (n, 1) vs (n,)
                if got.shape != expected.shape:
                    raise ModelError(f"the exported SavedModel gives shape {got.shape} where "
                                     f"the model gives {expected.shape}")
                if not np.allclose(got, expected, atol=1e-4):
                    raise ModelError("the exported SavedModel does not reproduce the model's "
                                     f"scores (max difference "
                                     f"{np.max(np.abs(got - expected)):.2e})")
                fsio.publish(target, dest, check)
        except (OSError, tf.errors.OpError) as exc:  # a full disk, a vanished directory
            failure = getattr(exc, "strerror", None) or first_line(exc)
    if failure is not None:
        raise UsageError(f"{dest}: cannot write the SavedModel ({failure}); free some space "
                         "or choose another -o (an existing one there was left as it was)")
    return dest


def _write(keras_model, target: Path, class_names: tuple[str, ...]) -> None:
    """``Model.export``'s SavedModel: the ``serve`` endpoint and the ``serving_default``
    signature give the probabilities (``output_0``). For more than two classes,
    ``serving_default`` also gives ``classes``, the class names in the order of the
    probabilities, one row per text (as TF Serving's classify API pairs classes with
    scores), so that a TF Serving client can name the k numbers it gets. A two-class
    model keeps its one output, the positive class's probability, that clients read."""
    import keras
    import tensorflow as tf

    if len(class_names) == 2:
        keras_model.export(str(target), format="tf_saved_model", verbose=False)
        return
    spec = [tf.TensorSpec([None], tf.string, name=artifacts.SAVED_MODEL_INPUT)]
    names = tf.constant(list(class_names))

    @tf.function(input_signature=spec)
    def serve(text):
        return keras_model(text, training=False)

    @tf.function(input_signature=spec)
    def serving_default(text):
        probabilities = keras_model(text, training=False)
        rows = tf.tile(names[None, :], [tf.shape(probabilities)[0], 1])
        return {artifacts.SAVED_MODEL_OUTPUT: probabilities,
                artifacts.SAVED_MODEL_CLASSES: rows}

    archive = keras.export.ExportArchive()
    archive.track(keras_model)
    archive.add_endpoint("serve", serve)
    archive.add_endpoint("serving_default", serving_default)
    archive.write_out(str(target), verbose=False)


def _check_classes(loaded, class_names: tuple[str, ...]) -> None:
    """The names ``serving_default`` gives are the model's classes, in order."""
    import tensorflow as tf

    if len(class_names) == 2:
        return
    default = loaded.signatures["serving_default"]
    got = default(**{artifacts.SAVED_MODEL_INPUT: tf.constant(_PROBES[:2])})
    rows = [[name.decode("utf-8") for name in row]
            for row in got[artifacts.SAVED_MODEL_CLASSES].numpy()]
    if rows != [list(class_names)] * 2:
        raise ModelError(f"the exported SavedModel names the classes {rows[0]}, not "
                         f"{list(class_names)}")


def check_export_target(dest: Path, *, force: bool) -> None:
    """What ``rnncli export`` may write to: a new path, or with ``force`` a SavedModel
    directory (or an empty one). Run before the export and again just before the swap."""
    if dest.exists() and not dest.is_dir():
        raise UsageError(f"{dest}: exists and is a file; choose another -o")
    if dest.exists() and not force:
        raise UsageError(f"{dest}: already exists; choose another -o or pass --force")
    if dest.exists() and not (dest / "saved_model.pb").is_file() and any(dest.iterdir()):
        raise UsageError(f"{dest}: exists and is not a SavedModel directory; "
                         "choose another -o")
    fsio.check_parent(dest)


def write_onnx(model_dir: Path, text_model, *, tokenizer: str) -> None:
    """Write ``core.onnx`` (the recurrent network, via ``Model.export(format="onnx")``)
    and ``serving.npz`` (vocabularies, n-gram weights, blend weight and standardization
    tables) into ``model_dir``, for :class:`rnncli.inference.onnx_engine.OnnxEngine`."""
    from rnncli.modeldir.serving import write_serving
    from rnncli.network import model as M

    with _quiet_converter():
        text_model.get_layer("core").export(str(model_dir / artifacts.ONNX_FILE),
                                            format="onnx", verbose=False)
    # The converter leaves its graphs in reference cycles: about 0.9 GB for a default model,
    # which would otherwise stay until Python's collector ran on its own, under the
    # standardization tables and the checks that follow (the peak of a whole training run).
    gc.collect()
    names = {layer.name for layer in text_model.layers}
    ngrams = {}
    weight = 1.0
    if "blend" in names:
        weight = text_model.get_layer("blend").weight
        logistic = text_model.get_layer("ngram").get_layer("ngram_logistic")
        vectorizer = text_model.get_layer("ngram_vectorizer")
        order = vectorizer.get_config()["ngrams"]  # 1 to 3 (rnncli never passes a tuple)
        ngrams = {"ngrams": vectorizer.get_vocabulary(), "ngram_order": int(order),
                  "idf": logistic.idf.numpy(), "kernel": logistic.kernel.numpy(),
                  "bias": logistic.bias.numpy()}
    write_serving(model_dir / artifacts.SERVING_FILE,
                  tokens=text_model.get_layer("vectorizer").get_vocabulary(),
                  seq_len=text_model.get_layer("truncate").length, rnn_weight=weight,
                  tokenizer=tokenizer, tables=M.standardize_tables(),
                  outputs=int(text_model.output.shape[-1]), **ngrams)


@contextlib.contextmanager
def _quiet_converter():
    """tf2onnx prints and logs its progress (and NumPy deprecation warnings) on stderr,
    which carries only rnncli's own messages."""
    from rnncli.network.runtime import stderr_to_file

    loggers = [logging.getLogger(name) for name in ("tf2onnx", "onnx", "absl")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), stderr_to_file(), \
                contextlib.redirect_stdout(_Discard()):
            warnings.simplefilter("ignore")
            yield
    finally:
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)


class _Discard:
    def write(self, text: str) -> int:
        return len(text)

    def flush(self) -> None:
        pass
