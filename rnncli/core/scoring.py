"""What both engines and training share when they turn a network's output into the
scores a record shows: texts scored in chunks of similar length, a network's outputs as
scores, probabilities clipped for logs, and the calibration's temperature (whose range the
manifest's check uses too). Light: NumPy only."""

from __future__ import annotations

import numpy as np

CLIP = 1e-7  # probabilities are clipped to [CLIP, 1 - CLIP] for logs (Keras's epsilon)
TEMPERATURES = (0.05, 20.0)  # the range a calibration's temperature is searched in


def length_chunks(lengths: list[int], size: int) -> list[np.ndarray]:
    """Indexes of the texts in chunks of at most ``size``, shortest texts first: what both
    engines score together (each chunk padded only to its longest text)."""
    order = np.argsort(np.asarray(lengths, dtype=np.int64), kind="stable")
    return [order[i:i + size] for i in range(0, len(order), size)]


def with_temperature(scores: np.ndarray, temperature: float) -> np.ndarray:
    """Probabilities after temperature scaling: the positive class's logit divided by
    ``temperature`` (a vector of two-class scores), softmax(log p / ``temperature``) for
    rows of class probabilities; as the saved model's Temperature layer computes it."""
    scores = np.asarray(scores)
    if temperature == 1.0:
        return scores
    # clipped in float32, as the layer is (1 - 1e-7 is 0.99999988 there): a score of 1.0
    # gets the same logit in both
    p = np.clip(scores.astype(np.float32), np.float32(CLIP),
                np.float32(1 - CLIP)).astype(np.float64)
    if p.ndim == 1:
        out = 1.0 / (1.0 + np.exp(-(np.log(p) - np.log1p(-p)) / temperature))
    else:
        logits = np.log(p) / temperature
        exp = np.exp(logits - logits.max(axis=1, keepdims=True))
        out = exp / exp.sum(axis=1, keepdims=True)
    return out.astype(np.float32)


def as_scores(outputs: np.ndarray) -> np.ndarray:
    """A model's outputs (n, 1) -> a vector of positive-class probabilities; (n, k) rows of
    class probabilities as they are."""
    outputs = np.asarray(outputs)
    return outputs.reshape(-1) if outputs.ndim < 2 or outputs.shape[1] == 1 else outputs
