"""rnncli: train a recurrent sentiment classifier from labelled texts and serve it from the shell.

This module stays light: importing it never imports TensorFlow or Keras. From Python,
``rnncli.load(model_dir).predict(texts)`` scores texts (``rnncli/api.py``, docs/python.md).
"""

from rnncli.core.errors import (
    DataError,
    DeviceError,
    ModelError,
    RnnCliError,
    UsageError,
)
from rnncli.core.version import __version__

__all__ = [
    "__version__",
    "load",
    "Model",
    "TrainConfig",
    "RnnCliError",
    "UsageError",
    "DataError",
    "ModelError",
    "DeviceError",
]


def __getattr__(name: str):
    # load, Model and TrainConfig are imported on first use, so that importing rnncli (as
    # the command line does for --help) imports neither the API nor the settings
    if name in ("load", "Model"):
        from rnncli import api

        return getattr(api, name)
    if name == "TrainConfig":
        from rnncli.core.config import TrainConfig

        return TrainConfig
    raise AttributeError(f"module 'rnncli' has no attribute {name!r}")
