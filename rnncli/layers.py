"""Where saved models find rnncli's Keras layers. Every model.keras names this module,
``rnncli.layers``, for the layers Keras lacks (the archive check allows exactly these
names); the layers themselves live in ``rnncli/network/layers.py``, and this path stays so
that every model saved since the first release loads. HEAVY: imports TensorFlow."""

from rnncli.network.layers import (  # noqa: F401
    AttentionPooling,
    Blend,
    MaskedMaxPooling,
    NgramLogistic,
    Temperature,
    TokenPairs,
    Truncate,
)
