"""rnncli: train a recurrent sentiment classifier from labelled texts and serve it from the shell.

This module stays light: importing it never imports TensorFlow or Keras.
"""

__version__ = "0.2.0"

from rnncli.core.config import TrainConfig  # noqa: E402  (light: a dataclass)
from rnncli.core.errors import (  # noqa: E402
    DataError,
    DeviceError,
    ModelError,
    RnnCliError,
    UsageError,
)

__all__ = [
    "__version__",
    "TrainConfig",
    "RnnCliError",
    "UsageError",
    "DataError",
    "ModelError",
    "DeviceError",
]
