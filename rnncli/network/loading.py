"""HEAVY: loading a saved ``model.keras`` safely, after the checks that need no TensorFlow
(``rnncli.modeldir.artifacts.check_model_dir``: the manifest's hashes, the archive's members
and config)."""

from __future__ import annotations

from pathlib import Path

import keras

from rnncli.core.errors import ModelError, first_line
from rnncli.modeldir.artifacts import MODEL_FILE, check_model_dir
from rnncli.network import model as _model  # noqa: F401  (registers rnncli>standardize*)


def load_keras_model(model_dir: str | Path):
    """Load ``model.keras`` with ``safe_mode=True``; call ``check_model_dir`` first."""
    path = Path(model_dir) / MODEL_FILE
    try:
        return keras.saving.load_model(path, compile=False, safe_mode=True)
    except Exception as exc:  # Keras raises many types for a bad archive
        raise ModelError(f"{path}: Keras cannot load it ({first_line(exc, with_type=True)}); "
                         "retrain the model") from exc


def load_model(model_dir: str | Path):
    """(manifest, Keras text model): checks hashes and archive first, then loads safely."""
    manifest = check_model_dir(model_dir)
    return manifest, load_keras_model(model_dir)
