"""rnncli: train a recurrent sentiment classifier from labelled texts and serve it from the shell.

This module stays light: importing it never imports TensorFlow or Keras. From Python,
``rnncli.load(model_dir).predict(texts)`` scores texts (``rnncli/api.py``, docs/python.md).
"""

from rnncli.core.config import TrainConfig  # light: a dataclass
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
    # load and Model come from rnncli.api on first use, so that importing rnncli (as the
    # command line does for --help) stays as light as it was
    if name in ("load", "Model"):
        from rnncli import api

        return getattr(api, name)
    raise AttributeError(f"module 'rnncli' has no attribute {name!r}")
