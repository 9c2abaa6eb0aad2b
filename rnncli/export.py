"""HEAVY: export a trained model as a TensorFlow SavedModel for TF Serving."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from rnncli import artifacts
from rnncli.errors import ModelError, UsageError

# Texts the exported graph is checked on before it is published.
_PROBES = ["a wonderful, moving film", "dull and far too long", "", "not bad at all!",
           "Ça n'était pas terrible<br />", "1/10"]


def export_saved_model(model_dir: str | Path, dest: str | Path, *, force: bool = False) -> Path:
    """Write a SavedModel whose ``serve`` / ``serving_default`` take a flat batch of raw
    strings and return the positive-class probability, shape (n, 1)."""
    from rnncli.predict import Predictor

    dest = artifacts.resolve_output(dest)
    if dest.exists() and not dest.is_dir():
        raise UsageError(f"{dest}: exists and is a file; choose another -o")
    if dest.exists() and not force:
        raise UsageError(f"{dest}: already exists; choose another -o or pass --force")
    if dest.exists() and not (dest / "saved_model.pb").is_file() and any(dest.iterdir()):
        raise UsageError(f"{dest}: exists and is not a SavedModel directory; "
                         "choose another -o")
    artifacts.check_parent(dest)
    predictor = Predictor.load(model_dir, device="cpu")
    import tensorflow as tf

    expected = predictor.scores(_PROBES)
    with artifacts.staging(dest) as staged:
        target = staged / "saved_model"
        predictor.keras_model.export(str(target), format="tf_saved_model", verbose=False)
        loaded = tf.saved_model.load(str(target))  # keep a reference: it owns the variables
        served = loaded.serve(tf.constant(_PROBES))
        got = np.asarray(served).reshape(-1)
        if not np.allclose(got, expected, atol=1e-4):
            raise ModelError("the exported SavedModel does not reproduce the model's scores "
                             f"(max difference {np.max(np.abs(got - expected)):.2e})")
        artifacts.publish(target, dest)
    return dest
